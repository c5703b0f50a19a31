"""Trusted keys: EC P-256 public JWKs selected by ``kid`` from a JWKS the caller trusts.

RFC 7517 §4.5 (``kid``), §5 (JWK Set); RFC 7518 §6.2.1 (EC public key parameters).
gematik sectoral IdP spec §7: everything federation-facing is ES256 on NIST P-256.
CONVENTIONS 5: a key comes only from a trusted source passed in here, never from a header.
"""

from __future__ import annotations

import base64
import binascii
import functools
from collections.abc import Mapping
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric import ec

from healthid.protocol.jose.errors import UnknownKey, UnsuitableKey

KTY: Final = "EC"
CURVE: Final = "P-256"
# RFC 7518 §6.2.1.2/.3: a P-256 coordinate is exactly 32 octets (43 base64url characters).
COORDINATE_BYTES: Final = 32
# A JWKS larger than this is not a federation key set (bound before iterating).
MAX_JWKS_KEYS: Final = 32
MAX_KID_CHARS: Final = 256


def b64url_decode(value: str) -> bytes:
    """RFC 7515 §2: base64url without padding; refuse any other alphabet."""
    if not isinstance(value, str) or "=" in value:
        raise ValueError("not unpadded base64url")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None


def b64url_encode(value: bytes) -> str:
    """RFC 7515 §2: base64url without padding."""
    return base64.urlsafe_b64encode(value).rstrip(b"=").decode("ascii")


def jwks_keys(jwks: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The ``keys`` array of a JWKS (RFC 7517 §5), bounded; each member must be an object."""
    keys = jwks.get("keys") if isinstance(jwks, Mapping) else None
    if not isinstance(keys, list):
        raise UnsuitableKey("the JWKS has no keys array")
    if len(keys) > MAX_JWKS_KEYS:
        raise UnsuitableKey("the JWKS has too many keys")
    if not all(isinstance(k, Mapping) for k in keys):
        raise UnsuitableKey("a JWKS member is not an object")
    return list(keys)


def p256_public_key(jwk: Mapping[str, Any], *, use: str) -> ec.EllipticCurvePublicKey:
    """The P-256 public key of ``jwk``, refusing other types, curves, ``use`` and private parts.

    RFC 7517 §4.2: a present ``use`` must match; RFC 7518 §6.2.1: the point must be on the curve.
    """
    if jwk.get("kty") != KTY or jwk.get("crv") != CURVE:
        raise UnsuitableKey("the key is not an EC P-256 key")
    if "use" in jwk and jwk["use"] != use:
        raise UnsuitableKey("the key's use does not match")
    if "d" in jwk:
        raise UnsuitableKey("a private key was given where a public key is required")
    try:
        x = b64url_decode(jwk["x"])
        y = b64url_decode(jwk["y"])
    except (KeyError, ValueError):
        raise UnsuitableKey("the key's coordinates are malformed") from None
    if len(x) != COORDINATE_BYTES or len(y) != COORDINATE_BYTES:
        raise UnsuitableKey("the key's coordinates have the wrong length")
    try:
        return _p256_point(b"\x04" + x + y)
    except ValueError:
        raise UnsuitableKey("the key's point is not on P-256") from None


@functools.lru_cache(maxsize=1024)
def _p256_point(encoded: bytes) -> ec.EllipticCurvePublicKey:
    """The public key of an uncompressed P-256 point, checked to lie on the curve. Public keys
    only, from a few relying parties and signers: each is checked and parsed once (the check
    costs as much as a third of an ID token's ECDH); a point refused is not remembered."""
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), encoded)


def select_key(jwks: Mapping[str, Any], kid: object, *, use: str) -> Mapping[str, Any]:
    """The one key of ``jwks`` whose ``kid`` equals ``kid``; refuse none or several.

    RFC 7515 §4.1.4 / OpenID Federation §3 (``jwks``): the verifier picks the key by ``kid``.
    A key with a different ``use`` is skipped, so a sig and an enc key may share a kid.
    """
    if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_CHARS:
        raise UnknownKey("the header has no usable kid")
    matches = [k for k in jwks_keys(jwks) if k.get("kid") == kid and k.get("use", use) == use]
    if not matches:
        raise UnknownKey("no trusted key has the header's kid")
    if len(matches) > 1:
        raise UnknownKey("several trusted keys share the header's kid")
    return matches[0]


def public_jwk(key: ec.EllipticCurvePublicKey, *, kid: str, use: str) -> dict[str, str]:
    """The public JWK of a P-256 key with ``kid`` and ``use`` (RFC 7518 §6.2.1)."""
    if not isinstance(key.curve, ec.SECP256R1):
        raise UnsuitableKey("the key is not a P-256 key")
    numbers = key.public_numbers()
    return {
        "kty": KTY,
        "crv": CURVE,
        "x": b64url_encode(numbers.x.to_bytes(COORDINATE_BYTES, "big")),
        "y": b64url_encode(numbers.y.to_bytes(COORDINATE_BYTES, "big")),
        "kid": kid,
        "use": use,
    }
