"""The reference client's software attestation, for development only.

Source: ../shared/spec/eid-egk-wallet-device.md §4.4 (record the key class; software keys get
the lowest). There is no hardware behind it: the device key signs (ES256, raw r||s) the
canonical CBOR map ``{"fmt": "healthid-software", "challenge", "public_key" (SPKI DER),
"app_id"}``, which proves possession of the key and binds it to the challenge, nothing more.
Wire format: canonical CBOR ``{"payload": <those bytes>, "signature": <64 bytes>}``.
Production configurations set ``allow_software=False`` and every such attestation is refused.
"""

from __future__ import annotations

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from .common import (
    AppIdentityMismatchError,
    AttestationFormat,
    AttestedKey,
    ChallengeMismatchError,
    InvalidSignatureError,
    KeyClass,
    MalformedAttestationError,
    PolicyViolationError,
    cbor_bytes,
    cbor_map,
    decode_cbor,
    equal,
    key_id_of,
    load_p256_spki,
    p256_public_key,
    require_challenge,
    require_size,
    spki_der,
)

SOFTWARE_FORMAT = "healthid-software"
ES256_COORDINATE_BYTES = 32
ES256_SIGNATURE_BYTES = 2 * ES256_COORDINATE_BYTES
MAX_APP_ID_CHARS = 255
_ENVELOPE_KEYS = frozenset({"payload", "signature"})
_PAYLOAD_KEYS = frozenset({"fmt", "challenge", "public_key", "app_id"})


def make_software_attestation(
    private_key: ec.EllipticCurvePrivateKey, challenge: bytes, app_id: str
) -> bytes:
    """What the reference wallet client sends when it has no attesting hardware."""
    require_challenge(challenge)
    _require_app_id(app_id)
    public_key = p256_public_key(private_key.public_key())
    payload = cbor2.dumps(
        {
            "fmt": SOFTWARE_FORMAT,
            "challenge": challenge,
            "public_key": spki_der(public_key),
            "app_id": app_id,
        },
        canonical=True,
    )
    r, s = decode_dss_signature(private_key.sign(payload, ec.ECDSA(hashes.SHA256())))
    signature = r.to_bytes(ES256_COORDINATE_BYTES, "big") + s.to_bytes(
        ES256_COORDINATE_BYTES, "big"
    )
    return cbor2.dumps({"payload": payload, "signature": signature}, canonical=True)


def verify_software_attestation(
    attestation: bytes, *, challenge: bytes, app_id: str, allow_software: bool
) -> AttestedKey:
    """Verify a software attestation; refused outright unless ``allow_software``."""
    if not allow_software:
        raise PolicyViolationError("software attestation is disabled")
    require_challenge(challenge)
    require_size(attestation)
    envelope = cbor_map(decode_cbor(attestation), _ENVELOPE_KEYS)
    payload_bytes = cbor_bytes(envelope["payload"])
    signature = cbor_bytes(envelope["signature"])
    payload = cbor_map(decode_cbor(payload_bytes), _PAYLOAD_KEYS)
    if cbor2.dumps(payload, canonical=True) != payload_bytes:
        raise MalformedAttestationError("the signed payload is not canonical CBOR")
    if payload["fmt"] != SOFTWARE_FORMAT:
        raise MalformedAttestationError("fmt is not healthid-software")
    if not isinstance(payload["app_id"], str) or payload["app_id"] != app_id:
        raise AppIdentityMismatchError("app_id is not ours")
    if not equal(cbor_bytes(payload["challenge"]), challenge):
        raise ChallengeMismatchError("challenge does not match")
    public_key = load_p256_spki(cbor_bytes(payload["public_key"]))
    _verify_es256(public_key, payload_bytes, signature)
    return AttestedKey(
        format=AttestationFormat.HEALTHID_SOFTWARE,
        key_class=KeyClass.SOFTWARE,
        public_key=spki_der(public_key),
        key_id=key_id_of(public_key),
        sign_count=0,
        development=True,
    )


def _verify_es256(key: ec.EllipticCurvePublicKey, message: bytes, signature: bytes) -> None:
    if len(signature) != ES256_SIGNATURE_BYTES:
        raise InvalidSignatureError("an ES256 signature is 64 bytes")
    r = int.from_bytes(signature[:ES256_COORDINATE_BYTES], "big")
    s = int.from_bytes(signature[ES256_COORDINATE_BYTES:], "big")
    try:
        key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as exc:
        raise InvalidSignatureError("software attestation signature does not verify") from exc


def _require_app_id(app_id: str) -> None:
    if not 0 < len(app_id) <= MAX_APP_ID_CHARS:
        raise ValueError(f"an app_id has 1 to {MAX_APP_ID_CHARS} characters")
