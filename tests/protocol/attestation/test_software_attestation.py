"""The reference client's software attestation: development only (spec §4.4 key classes)."""

from __future__ import annotations

import time

import cbor2
import pytest
from attestation_factory import CHALLENGE, OTHER_CHALLENGE, p256, p384
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from healthid.protocol.attestation import (
    AppIdentityMismatchError,
    AttestationFormat,
    AttestationTooLargeError,
    AttestedKey,
    ChallengeMismatchError,
    InvalidSignatureError,
    KeyClass,
    MalformedAttestationError,
    PolicyViolationError,
    UnsupportedKeyError,
    make_software_attestation,
    verify_software_attestation,
)

APP_ID = "de.example.healthid.wallet"


def verify(attestation: bytes, challenge: bytes = CHALLENGE, app_id: str = APP_ID) -> AttestedKey:
    return verify_software_attestation(
        attestation, challenge=challenge, app_id=app_id, allow_software=True
    )


def resign(
    payload: dict[str, object], key: ec.EllipticCurvePrivateKey, *, canonical: bool = True
) -> bytes:
    """Build an envelope around an arbitrary payload, correctly signed by ``key``."""
    payload_bytes = cbor2.dumps(payload, canonical=canonical)
    r, s = decode_dss_signature(key.sign(payload_bytes, ec.ECDSA(hashes.SHA256())))
    size = (key.curve.key_size + 7) // 8
    signature = r.to_bytes(size, "big") + s.to_bytes(size, "big")
    return cbor2.dumps({"payload": payload_bytes, "signature": signature}, canonical=True)


def payload_of(attestation: bytes) -> dict[str, object]:
    payload: dict[str, object] = cbor2.loads(cbor2.loads(attestation)["payload"])
    return payload


def test_software_attestation_round_trips_as_a_development_software_key() -> None:
    key = p256()
    attested = verify(make_software_attestation(key, CHALLENGE, APP_ID))
    assert attested.format is AttestationFormat.HEALTHID_SOFTWARE
    assert attested.key_class is KeyClass.SOFTWARE
    assert attested.development is True
    assert attested.public_key == key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_software_attestation_is_refused_when_software_is_not_allowed() -> None:
    attestation = make_software_attestation(p256(), CHALLENGE, APP_ID)
    with pytest.raises(PolicyViolationError):
        verify_software_attestation(
            attestation, challenge=CHALLENGE, app_id=APP_ID, allow_software=False
        )


def test_software_attestation_rejects_the_wrong_challenge() -> None:
    attestation = make_software_attestation(p256(), OTHER_CHALLENGE, APP_ID)
    with pytest.raises(ChallengeMismatchError):
        verify(attestation)


def test_software_attestation_rejects_a_replay_for_a_new_challenge() -> None:
    attestation = make_software_attestation(p256(), CHALLENGE, APP_ID)
    verify(attestation, CHALLENGE)
    with pytest.raises(ChallengeMismatchError):
        verify(attestation, OTHER_CHALLENGE)


def test_software_attestation_rejects_another_app() -> None:
    attestation = make_software_attestation(p256(), CHALLENGE, "de.example.other")
    with pytest.raises(AppIdentityMismatchError):
        verify(attestation)


def test_software_attestation_rejects_a_tampered_signature() -> None:
    envelope = cbor2.loads(make_software_attestation(p256(), CHALLENGE, APP_ID))
    envelope["signature"] = envelope["signature"][:-1] + bytes([envelope["signature"][-1] ^ 1])
    with pytest.raises(InvalidSignatureError):
        verify(cbor2.dumps(envelope, canonical=True))


def test_software_attestation_rejects_a_signature_by_another_key() -> None:
    payload = payload_of(make_software_attestation(p256(), CHALLENGE, APP_ID))
    with pytest.raises(InvalidSignatureError):
        verify(resign(payload, p256()))


def test_software_attestation_rejects_a_tampered_payload() -> None:
    envelope = cbor2.loads(make_software_attestation(p256(), CHALLENGE, APP_ID))
    envelope["payload"] = envelope["payload"].replace(CHALLENGE, OTHER_CHALLENGE)
    with pytest.raises(InvalidSignatureError):
        verify(cbor2.dumps(envelope, canonical=True), challenge=OTHER_CHALLENGE)


def test_software_attestation_rejects_a_non_canonical_payload() -> None:
    key = p256()
    payload = payload_of(make_software_attestation(key, CHALLENGE, APP_ID))
    reordered = dict(reversed(list(payload.items())))
    with pytest.raises(MalformedAttestationError, match="canonical"):
        verify(resign(reordered, key, canonical=False))


def test_software_attestation_rejects_a_p384_key() -> None:
    key = p384()
    with pytest.raises(UnsupportedKeyError):
        make_software_attestation(key, CHALLENGE, APP_ID)
    payload = payload_of(make_software_attestation(p256(), CHALLENGE, APP_ID))
    payload["public_key"] = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(UnsupportedKeyError):
        verify(resign(payload, key))


def test_software_attestation_rejects_another_format() -> None:
    key = p256()
    payload = payload_of(make_software_attestation(key, CHALLENGE, APP_ID))
    payload["fmt"] = "apple-appattest"
    with pytest.raises(MalformedAttestationError, match="fmt"):
        verify(resign(payload, key))


@pytest.mark.parametrize(
    "attestation",
    [
        b"",
        cbor2.dumps({"payload": b""}),
        cbor2.dumps({"payload": cbor2.dumps({}), "signature": b""}),
        cbor2.dumps({"payload": "text", "signature": b""}),
    ],
)
def test_software_attestation_rejects_malformed_input(attestation: bytes) -> None:
    with pytest.raises(MalformedAttestationError):
        verify(attestation)


def test_software_attestation_rejects_a_signature_of_the_wrong_length() -> None:
    envelope = cbor2.loads(make_software_attestation(p256(), CHALLENGE, APP_ID))
    envelope["signature"] += b"\x00"
    with pytest.raises(InvalidSignatureError):
        verify(cbor2.dumps(envelope, canonical=True))


def test_software_attestation_rejects_10_megabytes_before_parsing() -> None:
    started = time.perf_counter()
    with pytest.raises(AttestationTooLargeError):
        verify(b"\xa2" + b"\x00" * 10_000_000)
    assert time.perf_counter() - started < 0.1


def test_make_software_attestation_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="challenge"):
        make_software_attestation(p256(), b"short", APP_ID)
    with pytest.raises(ValueError, match="app_id"):
        make_software_attestation(p256(), CHALLENGE, "")
