"""Layer 1 on the real Intel SGX sample: dcap-qvl plus the measurement/debug/SVN/TCB policy.

Spec vau-and-tee.md §3.2 "Verification" steps 1-5. The sample's report data binds no healthid
claims, so a document carrying it must fail at the binding (step 6), after every quote check.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import struct
from datetime import UTC, datetime, timedelta

import pytest
from tee_vectors import NONCE, SAMPLE_MRENCLAVE, SAMPLE_MRSIGNER, SAMPLE_NOW, identity_jwk

from healthid.protocol.tee import (
    AdvisoryNotAllowedError,
    Collateral,
    CollateralMissingError,
    DebugEnclaveError,
    MalformedCollateralError,
    MalformedQuoteError,
    MrEnclaveNotAllowedError,
    MrSignerNotAllowedError,
    ProductIdMismatchError,
    QuoteVerificationError,
    ReportDataMismatchError,
    SvnTooLowError,
    TcbStatusNotAllowedError,
    TeeAttestationError,
    TeeKind,
    TeePolicy,
    UnsupportedQuoteError,
    build_claims,
    check_enclave_identity,
    parse_sgx_quote,
    verify_attestation_document,
    verify_quote_signature,
    verify_sgx_quote,
)
from healthid.protocol.tee.quote import INTEL_QE_VENDOR_ID

OTHER = bytes(32)


def flip(raw: bytes, offset: int) -> bytes:
    out = bytearray(raw)
    out[offset] ^= 0x01
    return bytes(out)


def test_sample_passes_a_policy_that_allows_it(
    sgx_quote: bytes, sgx_collateral: Collateral, sample_policy: TeePolicy
) -> None:
    verified = verify_sgx_quote(
        sgx_quote, policy=sample_policy, collateral=sgx_collateral, now=SAMPLE_NOW
    )
    assert verified.tcb_status == "ConfigurationAndSWHardeningNeeded"
    assert verified.advisory_ids == ("INTEL-SA-00289", "INTEL-SA-00615")
    assert verified.body.mr_enclave == SAMPLE_MRENCLAVE
    assert verified.body.mr_signer == SAMPLE_MRSIGNER


def test_mrenclave_alone_is_enough(sgx_quote: bytes, sgx_collateral: Collateral) -> None:
    policy = TeePolicy(mrenclaves=frozenset({SAMPLE_MRENCLAVE}))
    verify_sgx_quote(sgx_quote, policy=policy, collateral=sgx_collateral, now=SAMPLE_NOW)


def test_mrsigner_with_product_is_enough(sgx_quote: bytes, sgx_collateral: Collateral) -> None:
    policy = TeePolicy(mrsigners=frozenset({SAMPLE_MRSIGNER}), isv_prod_id=0)
    verify_sgx_quote(sgx_quote, policy=policy, collateral=sgx_collateral, now=SAMPLE_NOW)


def test_rejects_an_mrenclave_not_in_the_allow_list(
    sgx_quote: bytes, sgx_collateral: Collateral, sample_policy: TeePolicy
) -> None:
    policy = dataclasses.replace(sample_policy, mrenclaves=frozenset({OTHER}))
    with pytest.raises(MrEnclaveNotAllowedError, match=SAMPLE_MRENCLAVE.hex()):
        verify_sgx_quote(sgx_quote, policy=policy, collateral=sgx_collateral, now=SAMPLE_NOW)


def test_rejects_an_mrsigner_not_in_the_allow_list(
    sgx_quote: bytes, sgx_collateral: Collateral, sample_policy: TeePolicy
) -> None:
    policy = dataclasses.replace(sample_policy, mrsigners=frozenset({OTHER}))
    with pytest.raises(MrSignerNotAllowedError):
        verify_sgx_quote(sgx_quote, policy=policy, collateral=sgx_collateral, now=SAMPLE_NOW)


def test_rejects_another_product(
    sgx_quote: bytes, sgx_collateral: Collateral, sample_policy: TeePolicy
) -> None:
    policy = dataclasses.replace(sample_policy, isv_prod_id=7)
    with pytest.raises(ProductIdMismatchError):
        verify_sgx_quote(sgx_quote, policy=policy, collateral=sgx_collateral, now=SAMPLE_NOW)


def test_rejects_an_svn_below_the_minimum(
    sgx_quote: bytes, sgx_collateral: Collateral, sample_policy: TeePolicy
) -> None:
    policy = dataclasses.replace(sample_policy, min_isv_svn=1)
    with pytest.raises(SvnTooLowError):
        verify_sgx_quote(sgx_quote, policy=policy, collateral=sgx_collateral, now=SAMPLE_NOW)


def test_rejects_a_tcb_status_outside_the_allow_list(
    sgx_quote: bytes, sgx_collateral: Collateral, sample_policy: TeePolicy
) -> None:
    policy = dataclasses.replace(sample_policy, tcb_statuses=frozenset({"UpToDate"}))
    with pytest.raises(TcbStatusNotAllowedError, match="ConfigurationAndSWHardeningNeeded"):
        verify_sgx_quote(sgx_quote, policy=policy, collateral=sgx_collateral, now=SAMPLE_NOW)


def test_rejects_an_advisory_outside_the_allow_list(
    sgx_quote: bytes, sgx_collateral: Collateral, sample_policy: TeePolicy
) -> None:
    policy = dataclasses.replace(sample_policy, advisories=frozenset({"INTEL-SA-00289"}))
    with pytest.raises(AdvisoryNotAllowedError, match="INTEL-SA-00615"):
        verify_sgx_quote(sgx_quote, policy=policy, collateral=sgx_collateral, now=SAMPLE_NOW)
    accepting = dataclasses.replace(
        sample_policy, advisories=frozenset({"INTEL-SA-00289", "INTEL-SA-00615"})
    )
    verify_sgx_quote(sgx_quote, policy=accepting, collateral=sgx_collateral, now=SAMPLE_NOW)


@pytest.mark.parametrize(
    ("what", "offset"),
    [
        ("report body: CPUSVN", 48),
        ("report body: MRENCLAVE", 112),
        ("report body: MRSIGNER", 176),
        ("report body: ISVSVN", 306),
        ("report body: REPORTDATA", 400),
        ("header: QE SVN", 8),
        ("enclave report signature", 436 + 10),
        ("attestation key", 436 + 64 + 10),
        ("QE report", 436 + 128 + 100),
        ("QE report signature", 436 + 128 + 384 + 10),
    ],
)
def test_rejects_a_flipped_byte(
    sgx_quote: bytes,
    sgx_collateral: Collateral,
    sample_policy: TeePolicy,
    what: str,
    offset: int,
) -> None:
    with pytest.raises(QuoteVerificationError, match="dcap-qvl refused the quote"):
        verify_sgx_quote(
            flip(sgx_quote, offset), policy=sample_policy, collateral=sgx_collateral, now=SAMPLE_NOW
        )


def _pck_leaf_offset(quote: bytes) -> int:
    """Where the PCK leaf certificate's PEM starts inside the quote's cert data."""
    auth_len = struct.unpack_from("<H", quote, 1012)[0]
    return 1012 + 2 + auth_len + 2 + 4


@pytest.mark.parametrize("into_leaf", [100, 500, 800])
def test_rejects_a_modified_pck_certificate(
    sgx_quote: bytes, sgx_collateral: Collateral, sample_policy: TeePolicy, into_leaf: int
) -> None:
    offset = _pck_leaf_offset(sgx_quote) + into_leaf
    tampered = bytearray(sgx_quote)
    tampered[offset] = ord("A") if tampered[offset] != ord("A") else ord("B")
    with pytest.raises(QuoteVerificationError, match="certificate chain"):
        verify_sgx_quote(
            bytes(tampered), policy=sample_policy, collateral=sgx_collateral, now=SAMPLE_NOW
        )


def test_rejects_a_debug_enclave(
    sgx_quote: bytes, sgx_collateral: Collateral, sample_policy: TeePolicy
) -> None:
    """Setting the DEBUG bit breaks the signature too: rejected either way."""
    debug = bytearray(sgx_quote)
    debug[96] |= 0x02
    assert parse_sgx_quote(bytes(debug)).body.debug
    with pytest.raises(TeeAttestationError):
        verify_sgx_quote(
            bytes(debug), policy=sample_policy, collateral=sgx_collateral, now=SAMPLE_NOW
        )


def test_debug_check_rejects_debug_unless_the_policy_allows_it(
    sgx_quote: bytes, sample_policy: TeePolicy
) -> None:
    """The policy check alone, on the (authenticated) body of a debug enclave."""
    body = parse_sgx_quote(sgx_quote).body
    debug_body = dataclasses.replace(body, attributes_flags=body.attributes_flags | 0x02)
    with pytest.raises(DebugEnclaveError):
        check_enclave_identity(debug_body, sample_policy)
    check_enclave_identity(debug_body, dataclasses.replace(sample_policy, allow_debug=True))
    check_enclave_identity(body, sample_policy)


@pytest.mark.parametrize(
    "when",
    [
        datetime(2025, 7, 20, tzinfo=UTC),  # TCB info expired (nextUpdate 2025-07-19)
        datetime(2026, 6, 1, tzinfo=UTC),  # CRLs expired
        datetime(2025, 6, 19, 10, 0, tzinfo=UTC),  # before the TCB info was issued
    ],
)
def test_rejects_outside_the_collaterals_validity(
    sgx_quote: bytes, sgx_collateral: Collateral, sample_policy: TeePolicy, when: datetime
) -> None:
    with pytest.raises(QuoteVerificationError):
        verify_sgx_quote(sgx_quote, policy=sample_policy, collateral=sgx_collateral, now=when)


def test_rejects_trailing_bytes_that_dcap_qvl_would_accept(
    sgx_quote: bytes, sgx_collateral: Collateral, sample_policy: TeePolicy
) -> None:
    verify_quote_signature(sgx_quote + b"\x00", sgx_collateral, SAMPLE_NOW)  # dcap-qvl: fine
    with pytest.raises(MalformedQuoteError):
        verify_sgx_quote(
            sgx_quote + b"\x00", policy=sample_policy, collateral=sgx_collateral, now=SAMPLE_NOW
        )


def test_rejects_another_quotes_collateral(
    sgx_quote: bytes, tdx_collateral: Collateral, sample_policy: TeePolicy
) -> None:
    with pytest.raises(QuoteVerificationError):
        verify_sgx_quote(sgx_quote, policy=sample_policy, collateral=tdx_collateral, now=SAMPLE_NOW)


def test_tdx_sample_is_genuine_but_not_accepted_as_sgx(
    tdx_quote: bytes, tdx_collateral: Collateral, sample_policy: TeePolicy
) -> None:
    assert verify_quote_signature(tdx_quote, tdx_collateral, SAMPLE_NOW).tcb_status == "UpToDate"
    with pytest.raises(UnsupportedQuoteError):
        verify_sgx_quote(tdx_quote, policy=sample_policy, collateral=tdx_collateral, now=SAMPLE_NOW)


def test_collateral_must_be_dcap_qvl_json() -> None:
    with pytest.raises(MalformedCollateralError):
        Collateral.from_json("{}")
    with pytest.raises(MalformedCollateralError):
        Collateral.from_json("not json")


def test_naive_time_is_a_programming_error(
    sgx_quote: bytes, sgx_collateral: Collateral, sample_policy: TeePolicy
) -> None:
    with pytest.raises(ValueError, match="timezone"):
        verify_sgx_quote(
            sgx_quote,
            policy=sample_policy,
            collateral=sgx_collateral,
            now=SAMPLE_NOW.replace(tzinfo=None),
        )


# -- the whole document around the real quote ------------------------------------------------
def sample_document(quote: bytes, collateral: Collateral | None = None) -> dict[str, object]:
    claims = build_claims(
        tee=TeeKind.SGX,
        nonce=NONCE,
        issued_at=SAMPLE_NOW - timedelta(seconds=5),
        keys={"identity": identity_jwk()},
    )
    doc: dict[str, object] = {
        "claims": json.loads(claims.canonical),
        "evidence_type": "sgx-dcap",
        "evidence": base64.urlsafe_b64encode(quote).rstrip(b"=").decode(),
    }
    if collateral is not None:
        doc["collateral"] = collateral.to_object()
    return doc


def test_document_with_the_sample_quote_fails_only_at_the_binding(
    sgx_quote: bytes, sgx_collateral: Collateral, sample_policy: TeePolicy
) -> None:
    """Every quote check passes; "Hello, world!" is not SHA-256 of our claims."""
    doc = json.dumps(sample_document(sgx_quote))
    with pytest.raises(ReportDataMismatchError):
        verify_attestation_document(
            doc, nonce=NONCE, policy=sample_policy, collateral=sgx_collateral, now=SAMPLE_NOW
        )


def test_document_uses_stapled_collateral(
    sgx_quote: bytes, sgx_collateral: Collateral, sample_policy: TeePolicy
) -> None:
    doc = json.dumps(sample_document(sgx_quote, sgx_collateral))
    with pytest.raises(ReportDataMismatchError):
        verify_attestation_document(
            doc, nonce=NONCE, policy=sample_policy, collateral=None, now=SAMPLE_NOW
        )


def test_document_without_collateral_is_refused(sgx_quote: bytes, sample_policy: TeePolicy) -> None:
    doc = json.dumps(sample_document(sgx_quote))
    with pytest.raises(CollateralMissingError):
        verify_attestation_document(
            doc, nonce=NONCE, policy=sample_policy, collateral=None, now=SAMPLE_NOW
        )


def test_document_quote_checks_come_before_the_binding(
    sgx_quote: bytes, sgx_collateral: Collateral, sample_policy: TeePolicy
) -> None:
    policy = dataclasses.replace(sample_policy, mrenclaves=frozenset({OTHER}))
    doc = json.dumps(sample_document(sgx_quote))
    with pytest.raises(MrEnclaveNotAllowedError):
        verify_attestation_document(
            doc, nonce=NONCE, policy=policy, collateral=sgx_collateral, now=SAMPLE_NOW
        )


def test_intel_qe_vendor_constant_matches_the_spec() -> None:
    assert str(INTEL_QE_VENDOR_ID.hex()) == "939a7233f79c4ca9940a0db3957f0607"
