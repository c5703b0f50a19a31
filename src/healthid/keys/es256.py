"""ES256 signature encoding (RFC 7518 §3.4): JOSE uses raw R || S, not DER."""

from __future__ import annotations

import hashlib
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from healthid.keys.jwk import COORDINATE_LEN

# RFC 7518 §3.4: R and S as 32-octet big-endian integers, concatenated.
SIGNATURE_LEN: Final = 2 * COORDINATE_LEN


def digest(data: bytes) -> bytes:
    """The SHA-256 hash that ES256 signs (RFC 7518 §3.4 step 1)."""
    return hashlib.sha256(data).digest()


def jose_from_der(der: bytes) -> bytes:
    """Convert a DER ``ECDSA-Sig-Value`` (as OpenSSL emits it) to JOSE R || S."""
    r, s = decode_dss_signature(der)
    return r.to_bytes(COORDINATE_LEN, "big") + s.to_bytes(COORDINATE_LEN, "big")


def sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """The ES256 signature of ``data`` by an in-memory key, as JOSE R || S."""
    if not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("ES256 needs a P-256 key")
    return jose_from_der(key.sign(data, ec.ECDSA(hashes.SHA256())))


def der_from_jose(signature: bytes) -> bytes:
    """Convert a JOSE R || S signature to DER; any length but 64 octets is refused."""
    if len(signature) != SIGNATURE_LEN:
        raise ValueError(f"an ES256 signature is {SIGNATURE_LEN} octets")
    r = int.from_bytes(signature[:COORDINATE_LEN], "big")
    s = int.from_bytes(signature[COORDINATE_LEN:], "big")
    return encode_dss_signature(r, s)


def verify(key: ec.EllipticCurvePublicKey, data: bytes, signature: bytes) -> bool:
    """Whether ``signature`` (JOSE R || S) is a valid ES256 signature of ``data`` by ``key``."""
    if not isinstance(key.curve, ec.SECP256R1) or len(signature) != SIGNATURE_LEN:
        return False
    try:
        key.verify(der_from_jose(signature), data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True
