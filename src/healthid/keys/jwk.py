"""P-256 public keys as JWKs (RFC 7517, RFC 7518 §6.2) and their thumbprints (RFC 7638)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from typing import Final

from cryptography.hazmat.primitives.asymmetric import ec

from healthid.keys.base import ALGORITHM, CURVE

# RFC 7518 §6.2.1.2/§6.2.1.3: P-256 coordinates are exactly 32 octets.
COORDINATE_LEN: Final = 32
# RFC 7638 §3.2: the required members of an EC public key, in lexicographic order.
_THUMBPRINT_MEMBERS: Final = ("crv", "kty", "x", "y")


class JwkError(ValueError):
    """A JWK is not an ES256 (P-256) public key."""


def b64url_encode(data: bytes) -> str:
    """RFC 7515 §2 base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """RFC 7515 §2 base64url without padding; padding and other alphabets are refused."""
    if "=" in text or "+" in text or "/" in text:
        raise JwkError("not unpadded base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise JwkError("not unpadded base64url") from exc


def _check_p256(key: ec.EllipticCurvePublicKey) -> None:
    if not isinstance(key.curve, ec.SECP256R1):
        raise JwkError(f"only {CURVE} keys are allowed, not {key.curve.name}")


def ec_public_jwk(key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    """The RFC 7518 §6.2.1 members of a P-256 public key: ``kty``, ``crv``, ``x``, ``y``."""
    _check_p256(key)
    numbers = key.public_numbers()
    return {
        "kty": "EC",
        "crv": CURVE,
        "x": b64url_encode(numbers.x.to_bytes(COORDINATE_LEN, "big")),
        "y": b64url_encode(numbers.y.to_bytes(COORDINATE_LEN, "big")),
    }


def thumbprint(jwk: Mapping[str, str]) -> str:
    """RFC 7638 §3: SHA-256 over the required members, sorted, without whitespace."""
    try:
        members = {name: jwk[name] for name in _THUMBPRINT_MEMBERS}
    except KeyError as exc:
        raise JwkError(f"JWK lacks the member {exc.args[0]!r}") from exc
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return b64url_encode(hashlib.sha256(canonical.encode("utf-8")).digest())


def signing_jwk(key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    """The JWK to publish: public members plus ``kid`` (RFC 7638), ``use`` and ``alg``."""
    jwk = ec_public_jwk(key)
    return {**jwk, "kid": thumbprint(jwk), "use": "sig", "alg": ALGORITHM}


def public_key_from_jwk(jwk: Mapping[str, str]) -> ec.EllipticCurvePublicKey:
    """The P-256 public key of ``jwk``; other key types, curves or off-curve points fail."""
    if jwk.get("kty") != "EC":
        raise JwkError("JWK kty must be EC")
    if jwk.get("crv") != CURVE:
        raise JwkError(f"JWK crv must be {CURVE}")
    if "alg" in jwk and jwk["alg"] != ALGORITHM:
        raise JwkError(f"JWK alg must be {ALGORITHM}")
    x = b64url_decode(jwk.get("x", ""))
    y = b64url_decode(jwk.get("y", ""))
    if len(x) != COORDINATE_LEN or len(y) != COORDINATE_LEN:
        raise JwkError("JWK coordinates must be 32 octets each")
    try:
        # SEC 1 §2.3.4: from_encoded_point checks that the point lies on the curve.
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + x + y)
    except ValueError as exc:
        raise JwkError("JWK point is not on P-256") from exc
