"""Fixtures: the dcap-qvl sample quotes, their collateral, and a policy trusting the SGX one."""

from __future__ import annotations

import pytest
from tee_vectors import SAMPLE_MRENCLAVE, SAMPLE_MRSIGNER, VECTORS

from healthid.protocol.tee import Collateral, TeePolicy


@pytest.fixture(scope="session")
def sgx_quote() -> bytes:
    return (VECTORS / "sgx_quote").read_bytes()


@pytest.fixture(scope="session")
def tdx_quote() -> bytes:
    return (VECTORS / "tdx_quote").read_bytes()


@pytest.fixture(scope="session")
def sgx_collateral() -> Collateral:
    return Collateral.from_json((VECTORS / "sgx_quote_collateral.json").read_text())


@pytest.fixture(scope="session")
def tdx_collateral() -> Collateral:
    return Collateral.from_json((VECTORS / "tdx_quote_collateral.json").read_text())


@pytest.fixture
def sample_policy() -> TeePolicy:
    """Trusts exactly the SGX sample enclave, with the default TCB statuses."""
    return TeePolicy(
        mrenclaves=frozenset({SAMPLE_MRENCLAVE}),
        mrsigners=frozenset({SAMPLE_MRSIGNER}),
        isv_prod_id=0,
        min_isv_svn=0,
    )
