"""The enclave policy: frozen, loaded once from JSON, refusing what cannot be safe."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from tee_vectors import SAMPLE_MRENCLAVE, SAMPLE_MRSIGNER

from healthid.protocol.tee import DEFAULT_TCB_STATUSES, TeePolicy, TeePolicyError

SAMPLE_JSON = {
    "mrenclave": [SAMPLE_MRENCLAVE.hex()],
    "mrsigner": [SAMPLE_MRSIGNER.hex()],
    "isv_prod_id": 0,
    "min_isv_svn": 2,
    "tcb_statuses": ["UpToDate"],
    "advisories": ["INTEL-SA-00615"],
    "allow_debug": False,
    "max_age_seconds": 120,
}


def test_policy_loads_from_json() -> None:
    policy = TeePolicy.from_json(json.dumps(SAMPLE_JSON))
    assert policy.mrenclaves == frozenset({SAMPLE_MRENCLAVE})
    assert policy.mrsigners == frozenset({SAMPLE_MRSIGNER})
    assert policy.isv_prod_id == 0
    assert policy.min_isv_svn == 2
    assert policy.tcb_statuses == frozenset({"UpToDate"})
    assert policy.advisories == frozenset({"INTEL-SA-00615"})
    assert policy.max_age_seconds == 120
    assert TeePolicy.from_dict(policy.to_dict()) == policy


def test_policy_defaults() -> None:
    policy = TeePolicy.from_json(json.dumps({"mrenclave": [SAMPLE_MRENCLAVE.hex()]}))
    assert (
        policy.tcb_statuses
        == DEFAULT_TCB_STATUSES
        == frozenset({"UpToDate", "SWHardeningNeeded", "ConfigurationAndSWHardeningNeeded"})
    )
    assert policy.advisories is None
    assert policy.allow_debug is False
    assert policy.min_isv_svn == 0
    assert policy.isv_prod_id is None


def test_policy_is_frozen() -> None:
    policy = TeePolicy(mrenclaves=frozenset({SAMPLE_MRENCLAVE}))
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.allow_debug = True  # type: ignore[misc]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mrenclave": [], "mrsigner": []}, "neither"),
        ({"mrenclave": ["00" * 31]}, "hex digits"),
        ({"mrenclave": ["zz" * 32]}, "hex"),
        ({"mrenclave": "00" * 32}, "list"),
        ({"isv_prod_id": None}, "isv_prod_id"),
        ({"isv_prod_id": 70000}, "16-bit"),
        ({"min_isv_svn": -1}, "16-bit"),
        ({"min_isv_svn": True}, "integer"),
        ({"tcb_statuses": []}, "no TCB status"),
        ({"tcb_statuses": ["Revoked"]}, "cannot be allowed"),
        ({"tcb_statuses": ["UptoDate"]}, "cannot be allowed"),
        ({"allow_debug": "no"}, "boolean"),
        ({"max_age_seconds": 0}, "max_age_seconds"),
        ({"max_age_seconds": 10**9}, "max_age_seconds"),
        ({"mrenclaves": []}, "unknown"),
    ],
)
def test_invalid_policy_is_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(TeePolicyError, match=message):
        TeePolicy.from_json(json.dumps({**SAMPLE_JSON, **change}))


def test_policy_must_be_a_json_object() -> None:
    with pytest.raises(TeePolicyError):
        TeePolicy.from_json("[]")
    with pytest.raises(TeePolicyError):
        TeePolicy.from_json("{")
