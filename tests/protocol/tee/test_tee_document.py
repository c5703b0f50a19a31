"""Layer 2: claims, canonical JSON, report-data binding, nonce and freshness, end to end with
simulated evidence (spec vau-and-tee.md §3.2 step 6, §4 honesty rule, §4.4-4.5)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from datetime import timedelta
from typing import Any

import pytest
from tee_vectors import NONCE, SAMPLE_NOW, identity_jwk

from healthid.protocol.tee import (
    MAX_DOCUMENT_BYTES,
    SIMULATED_WARNING,
    AttestationDocument,
    DocumentTooLargeError,
    EvidenceType,
    IssuedInFutureError,
    MalformedDocumentError,
    MalformedSimulatedEvidenceError,
    NonceMismatchError,
    ReportDataMismatchError,
    SimulatedEvidenceRejectedError,
    StaleDocumentError,
    TeeKind,
    TeeKindMismatchError,
    TeePolicy,
    build_claims,
    canonical_json,
    make_simulated_evidence,
    parse_attestation_document,
    parse_claims,
    parse_simulated_evidence,
    report_data_for,
    verify_attestation_document,
)

ISSUED = SAMPLE_NOW - timedelta(seconds=60)
POLICY = TeePolicy(mrenclaves=frozenset({bytes(32)}))
# Known answer: the canonical claims of a simulated enclave (TEST key d = 1) for NONCE = 00..1f.
CANONICAL = (
    b'{"iat":1750334100,"keys":{"identity":{"crv":"P-256","kid":"identity","kty":"EC",'
    b'"use":"sig","x":"axfR8uEsQkf4vOblY6RA8ncDfYEt6zOg9KE5RdiYwpY",'
    b'"y":"T-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU"}},'
    b'"nonce":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8","tee":"simulated","v":1}'
)
REPORT_DATA_HEX = "19d3479ae0739d6f01251b5ff263b1455561c94a91d7f207e608ec868bc26842" + "00" * 32


def b64u(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def simulated_document(**claims_override: Any) -> dict[str, Any]:
    """A simulated document as the enclave makes it; ``claims_override`` edits the claims
    before they are bound (so the document stays consistent)."""
    claims = json.loads(
        build_claims(
            tee=TeeKind.SIMULATED,
            nonce=NONCE,
            issued_at=ISSUED,
            keys={"identity": identity_jwk()},
        ).canonical
    )
    claims.update(claims_override)
    evidence = make_simulated_evidence(report_data_for(canonical_json(claims)))
    return {"claims": claims, "evidence_type": "simulated", "evidence": b64u(evidence)}


def verify(doc: object, **kwargs: Any) -> Any:
    params: dict[str, Any] = {
        "nonce": NONCE,
        "policy": POLICY,
        "collateral": None,
        "now": SAMPLE_NOW,
        "allow_simulated": True,
    }
    params.update(kwargs)
    data = doc if isinstance(doc, bytes | str) else json.dumps(doc)
    return verify_attestation_document(data, **params)


# -- canonical serialisation ------------------------------------------------------------------
def test_canonical_claims_known_answer() -> None:
    claims = build_claims(
        tee=TeeKind.SIMULATED, nonce=NONCE, issued_at=ISSUED, keys={"identity": identity_jwk()}
    )
    assert claims.canonical == CANONICAL
    assert claims.report_data == hashlib.sha256(CANONICAL).digest() + bytes(32)
    assert claims.report_data.hex() == REPORT_DATA_HEX


def test_canonical_json_is_rfc8785_for_the_allowed_values() -> None:
    value = {"b": [1, "x/y", None, True], "a": {"z": "Müller\n\u2028", "m": -(2**53 - 1)}}
    assert canonical_json(value) == (
        '{"a":{"m":-9007199254740991,"z":"Müller\\n\u2028"},"b":[1,"x/y",null,true]}'
    ).encode("utf-8")


def test_canonical_form_does_not_depend_on_member_order_or_whitespace() -> None:
    doc = simulated_document()
    shuffled = json.dumps(
        {"evidence": doc["evidence"], "claims": dict(reversed(list(doc["claims"].items())))},
        indent=4,
    )
    reparsed = json.loads(shuffled)
    reparsed["evidence_type"] = "simulated"
    assert verify(json.dumps(reparsed, indent=2)).claims.canonical == CANONICAL.replace(
        b"1750334100", str(int(ISSUED.timestamp())).encode()
    )


@pytest.mark.parametrize(
    "value",
    [
        {"f": 1.5},
        {"big": 2**53},
        {"é": 1},
        {"s": "\ud800"},
        {"deep": {"a": {"b": {"c": {"d": 1}}}}},
        {"o": object()},
    ],
    ids=["float", "big-int", "non-ascii-name", "lone-surrogate", "too-deep", "non-json"],
)
def test_canonical_json_refuses_values_without_a_unique_form(value: dict[str, Any]) -> None:
    with pytest.raises(MalformedDocumentError):
        canonical_json(value)


# -- claims -----------------------------------------------------------------------------------
def test_claims_expose_the_identity_key() -> None:
    claims = parse_claims(simulated_document()["claims"])
    assert claims.identity_key.public_numbers() == (
        dataclasses.replace(claims.key("identity")).public_key.public_numbers()
    )
    with pytest.raises(KeyError):
        claims.key("vau")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"v": 2}, "version"),
        ({"v": True}, "version"),
        ({"tee": "sev"}, "tee"),
        ({"iat": "now"}, "iat"),
        ({"nonce": "AAEC"}, "nonce"),
        ({"nonce": "not base64!"}, "nonce"),
        ({"keys": {}}, "keys"),
        ({"keys": {"vau": identity_jwk()}}, "identity"),
        ({"keys": {"identity": {**identity_jwk(), "d": "AAAA"}}}, "members"),
        ({"keys": {"identity": {**identity_jwk(), "crv": "P-384"}}}, "P-256"),
        ({"keys": {"identity": {**identity_jwk(), "x": "AAAA"}}}, "length"),
        ({"keys": {"identity": {**identity_jwk(), "use": "wrap"}}}, "use"),
        ({"keys": {"Identity!": identity_jwk(), "identity": identity_jwk()}}, "role"),
        ({"extra": 1}, "exactly"),
    ],
)
def test_malformed_claims_are_refused(override: dict[str, Any], message: str) -> None:
    with pytest.raises(MalformedDocumentError, match=message):
        verify(simulated_document(**override))


def test_key_not_on_the_curve_is_refused() -> None:
    jwk = {**identity_jwk(), "y": identity_jwk(2)["y"]}
    with pytest.raises(MalformedDocumentError, match="not on P-256"):
        verify(simulated_document(keys={"identity": jwk}))


def test_several_keys_by_role() -> None:
    enc = {**identity_jwk(3), "kid": "vau-enc", "use": "enc"}
    result = verify(simulated_document(keys={"identity": identity_jwk(), "vau-enc": enc}))
    assert [k.role for k in result.keys] == ["identity", "vau-enc"]
    assert result.key("vau-enc").jwk["use"] == "enc"


# -- end to end with simulated evidence -------------------------------------------------------
def test_simulated_document_verifies_in_development_mode() -> None:
    result = verify(simulated_document())
    assert result.simulated is True
    assert result.quote is None
    assert result.tee is TeeKind.SIMULATED
    assert result.claims.nonce == NONCE
    assert result.identity_key.public_numbers().x == int.from_bytes(
        base64.urlsafe_b64decode(identity_jwk()["x"] + "="), "big"
    )


def test_simulated_evidence_is_rejected_unless_allowed() -> None:
    with pytest.raises(SimulatedEvidenceRejectedError, match="development"):
        verify(simulated_document(), allow_simulated=False)


def test_allow_simulated_defaults_to_false() -> None:
    with pytest.raises(SimulatedEvidenceRejectedError):
        verify_attestation_document(
            json.dumps(simulated_document()),
            nonce=NONCE,
            policy=POLICY,
            collateral=None,
            now=SAMPLE_NOW,
        )


def test_simulated_evidence_says_so() -> None:
    evidence = json.loads(make_simulated_evidence(bytes(64)))
    assert evidence["tee"] == "simulated"
    assert evidence["WARNING"] == SIMULATED_WARNING
    assert "no hardware protection" in evidence["WARNING"]


@pytest.mark.parametrize(
    "tamper",
    [
        lambda c: c.update(iat=c["iat"] + 1),
        lambda c: c.update(nonce=b64u(bytes(32))),
        lambda c: c["keys"].update(identity=identity_jwk(2)),
        lambda c: c["keys"].update(extra={**identity_jwk(2), "kid": "extra"}),
    ],
    ids=["iat", "nonce", "swapped-identity-key", "added-key"],
)
def test_tampered_claims_break_the_binding(tamper: Any) -> None:
    doc = simulated_document()
    tamper(doc["claims"])
    with pytest.raises(ReportDataMismatchError):
        verify(doc, nonce=json_nonce(doc))


def json_nonce(doc: dict[str, Any]) -> bytes:
    return base64.urlsafe_b64decode(doc["claims"]["nonce"] + "==")


def test_evidence_for_other_claims_is_refused() -> None:
    doc = simulated_document()
    other = simulated_document(iat=doc["claims"]["iat"] - 1)
    doc["evidence"] = other["evidence"]
    with pytest.raises(ReportDataMismatchError):
        verify(doc)


def test_report_data_must_end_in_32_zero_bytes() -> None:
    doc = simulated_document()
    digest = hashlib.sha256(canonical_json(doc["claims"])).digest()
    doc["evidence"] = b64u(make_simulated_evidence(digest + b"\x01" + bytes(31)))
    with pytest.raises(ReportDataMismatchError):
        verify(doc)


def test_a_document_for_another_nonce_is_refused() -> None:
    with pytest.raises(NonceMismatchError):
        verify(simulated_document(), nonce=bytes(32))


def test_the_callers_nonce_must_have_16_to_64_bytes() -> None:
    with pytest.raises(ValueError, match="nonce"):
        verify(simulated_document(), nonce=b"short")


def test_a_stale_document_is_refused() -> None:
    with pytest.raises(StaleDocumentError):
        verify(simulated_document(), now=SAMPLE_NOW + timedelta(seconds=POLICY.max_age_seconds))


def test_a_document_from_the_future_is_refused() -> None:
    with pytest.raises(IssuedInFutureError):
        verify(simulated_document(), now=ISSUED - timedelta(seconds=61))
    verify(simulated_document(), now=ISSUED - timedelta(seconds=60))  # within the skew


def test_tee_and_evidence_type_must_agree() -> None:
    doc = simulated_document()
    doc["evidence_type"] = "sgx-dcap"
    with pytest.raises(TeeKindMismatchError):
        verify(doc)
    doc = simulated_document(tee="sgx")
    with pytest.raises(TeeKindMismatchError):
        verify(doc)


@pytest.mark.parametrize(
    "evidence",
    [
        b"not json",
        json.dumps({"tee": "simulated", "report_data": b64u(bytes(64))}).encode(),
        json.dumps({"tee": "sgx", "WARNING": SIMULATED_WARNING, "report_data": ""}).encode(),
        json.dumps(
            {"tee": "simulated", "WARNING": SIMULATED_WARNING, "report_data": b64u(bytes(32))}
        ).encode(),
    ],
    ids=["not-json", "no-warning", "wrong-marker", "short-report-data"],
)
def test_malformed_simulated_evidence_is_refused(evidence: bytes) -> None:
    with pytest.raises(MalformedSimulatedEvidenceError):
        parse_simulated_evidence(evidence)


# -- document structure -----------------------------------------------------------------------
def test_document_round_trips() -> None:
    doc = parse_attestation_document(json.dumps(simulated_document()))
    assert isinstance(doc, AttestationDocument)
    assert doc.evidence_type is EvidenceType.SIMULATED
    again = parse_attestation_document(doc.to_json())
    assert again == doc
    assert verify(doc.to_json()).claims == doc.claims


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        "{",
        '{"claims": {}, "evidence_type": "simulated", "evidence": "", "claims": {}}',
        '{"claims": {"v": 1.0}, "evidence_type": "simulated", "evidence": ""}',
        '{"claims": {"v": NaN}, "evidence_type": "simulated", "evidence": ""}',
    ],
    ids=["array", "truncated", "duplicate-member", "float", "nan"],
)
def test_malformed_json_is_refused(text: str) -> None:
    with pytest.raises(MalformedDocumentError):
        parse_attestation_document(text)


def test_document_members_are_a_closed_list() -> None:
    doc = simulated_document()
    with pytest.raises(MalformedDocumentError):
        verify({**doc, "comment": "hi"})
    del doc["evidence"]
    with pytest.raises(MalformedDocumentError):
        verify(doc)


def test_unknown_evidence_type_is_refused() -> None:
    with pytest.raises(MalformedDocumentError, match="evidence_type"):
        verify({**simulated_document(), "evidence_type": "tdx-dcap"})


@pytest.mark.parametrize("evidence", ["a+b/", "ab==", "abc=", "ab c", "abcde", "AB"])
def test_evidence_must_be_canonical_unpadded_base64url(evidence: str) -> None:
    with pytest.raises(MalformedDocumentError, match="base64url"):
        verify({**simulated_document(), "evidence": evidence})


def test_nonce_claim_must_be_canonical_base64url() -> None:
    doc = simulated_document()
    nonce = doc["claims"]["nonce"]
    lenient = nonce[:-1] + "9"  # same bytes: only the two unused trailing bits differ
    assert base64.urlsafe_b64decode(lenient + "=") == base64.urlsafe_b64decode(nonce + "=")
    with pytest.raises(MalformedDocumentError, match="nonce"):
        verify(simulated_document(nonce=lenient))


def test_document_size_is_bounded_before_parsing() -> None:
    with pytest.raises(DocumentTooLargeError):
        parse_attestation_document(b" " * (MAX_DOCUMENT_BYTES + 1))


def test_document_not_utf8_is_refused() -> None:
    with pytest.raises(MalformedDocumentError):
        parse_attestation_document(b"\xff\xfe{}")
