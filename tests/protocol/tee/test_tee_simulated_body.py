"""The SIMULATED report body: development evidence that states a measurement, signer, product,
security version and debug flag, so the policy's enclave rules can be exercised without SGX
(spec vau-and-tee.md §3.2 steps 4-5, §4 honesty rule). It proves nothing: see the last test."""

from __future__ import annotations

import base64
import dataclasses
import json
from datetime import timedelta
from typing import Any

import pytest
from tee_vectors import NONCE, SAMPLE_NOW, identity_jwk

from healthid.protocol.tee import (
    AttestationDocument,
    DebugEnclaveError,
    EvidenceType,
    MalformedSimulatedEvidenceError,
    MrEnclaveNotAllowedError,
    MrSignerNotAllowedError,
    ProductIdMismatchError,
    SimulatedEvidenceRejectedError,
    SimulatedMeasurementMissingError,
    SimulatedReportBody,
    SvnTooLowError,
    TeeAttestationError,
    TeeKind,
    TeePolicy,
    build_claims,
    make_simulated_evidence,
    parse_simulated,
    parse_simulated_evidence,
    verify_attestation_document,
)
from healthid.protocol.tee.simulated import MAX_SIMULATED_EVIDENCE_BYTES

MRENCLAVE = bytes.fromhex("11" * 32)
MRSIGNER = bytes.fromhex("22" * 32)
BODY = SimulatedReportBody(
    mr_enclave=MRENCLAVE, mr_signer=MRSIGNER, isv_prod_id=1, isv_svn=3, debug=False
)
POLICY = TeePolicy(
    mrenclaves=frozenset({MRENCLAVE}),
    mrsigners=frozenset({MRSIGNER}),
    isv_prod_id=1,
    min_isv_svn=2,
)


def document(body: SimulatedReportBody | None) -> AttestationDocument:
    claims = build_claims(
        tee=TeeKind.SIMULATED,
        nonce=NONCE,
        issued_at=SAMPLE_NOW - timedelta(seconds=5),
        keys={"identity": identity_jwk()},
    )
    return AttestationDocument(
        claims=claims,
        evidence_type=EvidenceType.SIMULATED,
        evidence=make_simulated_evidence(claims.report_data, body),
    )


def verify(doc: AttestationDocument | bytes, **kwargs: Any) -> Any:
    params: dict[str, Any] = {
        "nonce": NONCE,
        "policy": POLICY,
        "collateral": None,
        "now": SAMPLE_NOW,
        "allow_simulated": True,
        "apply_policy_to_simulated": True,
    }
    return verify_attestation_document(doc, **(params | kwargs))


# -- the evidence format ------------------------------------------------------------------------
def test_evidence_carries_the_simulated_body_beside_its_marker() -> None:
    evidence = make_simulated_evidence(bytes(64), BODY)
    obj = json.loads(evidence)
    assert obj["tee"] == "simulated" and "no hardware protection" in obj["WARNING"]
    assert obj["report_body"] == {
        "mrenclave": "11" * 32,
        "mrsigner": "22" * 32,
        "isv_prod_id": 1,
        "isv_svn": 3,
        "debug": False,
    }
    parsed = parse_simulated(evidence)
    assert parsed.body == BODY and parsed.report_data == bytes(64)
    assert len(evidence) < MAX_SIMULATED_EVIDENCE_BYTES


def test_evidence_without_a_body_still_parses() -> None:
    evidence = make_simulated_evidence(bytes(64))
    assert "report_body" not in json.loads(evidence)
    assert parse_simulated(evidence).body is None
    assert parse_simulated_evidence(evidence) == bytes(64)


@pytest.mark.parametrize(
    "change",
    [
        {"mrenclave": "AB" * 32},  # one spelling: lowercase hex
        {"mrenclave": "ab" * 31},
        {"mrsigner": 5},
        {"isv_prod_id": 0x10000},
        {"isv_svn": -1},
        {"isv_svn": True},
        {"debug": 0},
        {"extra": 1},
    ],
)
def test_a_malformed_body_is_refused(change: dict[str, object]) -> None:
    evidence = json.loads(make_simulated_evidence(bytes(64), BODY))
    evidence["report_body"] |= change
    with pytest.raises(MalformedSimulatedEvidenceError, match="report_body"):
        parse_simulated(json.dumps(evidence).encode())


def test_a_body_that_is_not_an_object_is_refused() -> None:
    evidence = json.loads(make_simulated_evidence(bytes(64)))
    evidence["report_body"] = ["11" * 32]
    with pytest.raises(MalformedSimulatedEvidenceError):
        parse_simulated(json.dumps(evidence).encode())


def test_the_body_dataclass_refuses_impossible_values() -> None:
    with pytest.raises(ValueError, match="mr_enclave"):
        dataclasses.replace(BODY, mr_enclave=b"short")
    with pytest.raises(ValueError, match="isv_svn"):
        dataclasses.replace(BODY, isv_svn=70_000)
    assert SimulatedReportBody.from_dict(BODY.to_dict()) == BODY


# -- the verifier applies the policy to the simulated body --------------------------------------
def test_a_body_the_policy_accepts_verifies_and_is_reported() -> None:
    result = verify(document(BODY).to_json())
    assert result.simulated and result.simulated_body == BODY


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"debug": True}, DebugEnclaveError),
        ({"mr_enclave": bytes(32)}, MrEnclaveNotAllowedError),
        ({"mr_signer": bytes(32)}, MrSignerNotAllowedError),
        ({"isv_prod_id": 2}, ProductIdMismatchError),
        ({"isv_svn": 1}, SvnTooLowError),
    ],
    ids=["debug", "mrenclave", "mrsigner", "isv_prod_id", "isv_svn"],
)
def test_the_policy_refuses_a_simulated_body_rule_by_rule(
    change: dict[str, Any], error: type[TeeAttestationError]
) -> None:
    with pytest.raises(error) as info:
        verify(document(dataclasses.replace(BODY, **change)))
    assert info.value.reason == error.reason


def test_a_debug_body_passes_only_a_policy_that_allows_debug() -> None:
    debug = document(dataclasses.replace(BODY, debug=True))
    assert verify(debug, policy=dataclasses.replace(POLICY, allow_debug=True)).simulated


def test_simulated_evidence_without_a_body_is_refused_when_the_policy_applies() -> None:
    """Every policy names a measurement; evidence that names none cannot match it."""
    with pytest.raises(SimulatedMeasurementMissingError):
        verify(document(None))


def test_applying_the_policy_does_not_admit_simulated_evidence() -> None:
    with pytest.raises(SimulatedEvidenceRejectedError):
        verify(document(BODY), allow_simulated=False)


def test_without_the_flag_the_body_is_ignored_as_before() -> None:
    """The development wallet and `attest verify --dev` check only binding, nonce, freshness."""
    foreign = dataclasses.replace(BODY, mr_enclave=bytes(32), debug=True)
    result = verify(document(foreign), apply_policy_to_simulated=False)
    assert result.simulated and result.simulated_body is None
    assert verify(document(None), apply_policy_to_simulated=False).simulated


def test_the_simulated_body_is_not_authenticated() -> None:
    """Honesty rule: the body is self-reported and outside the report data. Swapping in an
    allowed measurement goes unnoticed. Only a DCAP quote makes the policy enforceable."""
    doc = json.loads(document(dataclasses.replace(BODY, mr_enclave=bytes(32))).to_json())
    evidence = json.loads(base64.urlsafe_b64decode(doc["evidence"] + "=="))
    evidence["report_body"]["mrenclave"] = MRENCLAVE.hex()
    raw = json.dumps(evidence, sort_keys=True, separators=(",", ":")).encode()
    doc["evidence"] = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    assert verify(json.dumps(doc)).simulated_body == BODY
