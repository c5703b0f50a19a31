"""JWS compact serialization, ES256 only (RFC 7515 §7.1, RFC 7518 §3.4).

gematik sectoral IdP spec §7: entity statements, signed JWKS and ID tokens are ES256 on
P-256. CONVENTIONS 5: the list is closed; ``none``, HS*, RS*, ES384 and unknown algorithms are
refused before any key is touched, and the key never comes from the token (``jwk``, ``jku``,
``x5u`` headers are refused; ``x5c`` is carried but never used to select or trust a key).

Signing goes through an injected :data:`Signer` (an HSM-backed key store): the private key never
enters this module. Sizes are checked on the raw segments before anything is decoded.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from joserfc import jws as joserfc_jws
from joserfc.errors import JoseError as JoserfcError
from joserfc.jwk import ECKey

from healthid.protocol.jose.errors import (
    AlgorithmNotAllowed,
    BadSignature,
    ForbiddenHeader,
    MalformedToken,
    TokenTooLarge,
    WrongType,
)
from healthid.protocol.jose.keys import b64url_decode, b64url_encode, p256_public_key, select_key

# RFC 7518 §3.4 / spec §7: the one JWS algorithm of every healthid context.
ALG_ES256: Final = "ES256"
ALLOWED_JWS_ALGORITHMS: Final = frozenset({ALG_ES256})
# RFC 7518 §3.4: R || S, each 32 octets for P-256; 86 base64url characters.
ES256_SIGNATURE_BYTES: Final = 64
# Bounds on the base64url segments, checked before decoding (CONVENTIONS 6). The header bound
# leaves room for an x5c chain of a few certificates (spec §11: joserfc's 512 is too small).
MAX_HEADER_SEGMENT_CHARS: Final = 8 * 1024
MAX_PAYLOAD_SEGMENT_CHARS: Final = 64 * 1024
MAX_SIGNATURE_SEGMENT_CHARS: Final = 86
MAX_COMPACT_JWS_CHARS: Final = (
    MAX_HEADER_SEGMENT_CHARS + MAX_PAYLOAD_SEGMENT_CHARS + MAX_SIGNATURE_SEGMENT_CHARS + 2
)
# RFC 7515 §4.1.2/.5/.6: headers that would let the token choose its own verification key.
KEY_SUPPLYING_HEADERS: Final = frozenset({"jwk", "jku", "x5u"})

# RFC 7515 §4.1.9 ``typ`` values per context.
TYP_ENTITY_STATEMENT: Final = "entity-statement+jwt"  # OpenID Federation §3, spec §3
TYP_SIGNED_JWKS: Final = "jwk-set+json"  # spec §3.1, gsi-testsuite SIGNED_JWKS_002
TYP_ID_TOKEN: Final = "JWT"  # noqa: S105 - a media type, not a secret; spec §5
TYP_IDP_LIST: Final = "idp-list+jwt"  # spec §9

Signer = Callable[[str, bytes], bytes]
"""``sign(kid, signing_input) -> raw R || S`` (64 bytes), as an HSM key store provides."""


@dataclass(frozen=True, kw_only=True)
class VerifiedJws:
    """A JWS whose ES256 signature verified with a trusted key; header and claims are read-only."""

    header: Mapping[str, Any]
    claims: Mapping[str, Any]
    kid: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "header", MappingProxyType(dict(self.header)))
        object.__setattr__(self, "claims", MappingProxyType(dict(self.claims)))


def _json_segment(obj: Mapping[str, Any]) -> str:
    return b64url_encode(json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode())


def sign_compact(
    claims: Mapping[str, Any],
    *,
    kid: str,
    typ: str,
    signer: Signer,
    extra_header: Mapping[str, Any] | None = None,
) -> str:
    """A compact ES256 JWS of ``claims`` with header ``{alg, kid, typ, **extra_header}``.

    ``extra_header`` may carry ``x5c`` (spec §3.1/§5) but never a key-supplying header or
    another ``alg``; the signature comes from ``signer(kid, signing_input)`` (RFC 7515 §5.1).
    """
    extra = dict(extra_header or {})
    if extra.keys() & (KEY_SUPPLYING_HEADERS | {"alg", "kid", "typ", "crit"}):
        raise ForbiddenHeader("extra_header may not set alg, kid, typ, crit, jwk, jku or x5u")
    header = {"alg": ALG_ES256, "kid": kid, "typ": typ, **extra}
    signing_input = f"{_json_segment(header)}.{_json_segment(claims)}"
    signature = signer(kid, signing_input.encode("ascii"))
    if len(signature) != ES256_SIGNATURE_BYTES:
        raise BadSignature("the signer did not return a raw 64-byte ES256 signature")
    token = f"{signing_input}.{b64url_encode(signature)}"
    if len(token) > MAX_COMPACT_JWS_CHARS:
        raise TokenTooLarge("the signed token exceeds the compact JWS bound")
    return token


def _split(token: str) -> tuple[str, str, str]:
    if not isinstance(token, str):
        raise MalformedToken("the token is not a string")
    if len(token) > MAX_COMPACT_JWS_CHARS:
        raise TokenTooLarge("the token exceeds the compact JWS bound")
    parts = token.split(".")
    if len(parts) != 3:
        raise MalformedToken("a compact JWS has three segments")
    header, payload, signature = parts
    if len(header) > MAX_HEADER_SEGMENT_CHARS:
        raise TokenTooLarge("the JWS header exceeds its bound")
    if len(payload) > MAX_PAYLOAD_SEGMENT_CHARS:
        raise TokenTooLarge("the JWS payload exceeds its bound")
    if len(signature) > MAX_SIGNATURE_SEGMENT_CHARS:
        raise TokenTooLarge("the JWS signature exceeds its bound")
    return header, payload, signature


def _json_object(segment: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(b64url_decode(segment))
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: deep nesting
        raise MalformedToken(f"the JWS {what} is not base64url JSON") from None
    if not isinstance(value, dict):
        raise MalformedToken(f"the JWS {what} is not a JSON object")
    return value


def typ_matches(actual: object, expected: str) -> bool:
    """RFC 7515 §4.1.9: compare case-insensitively; the ``application/`` prefix may be omitted."""
    if not isinstance(actual, str):
        return False
    value = actual.lower()
    return value in {expected.lower(), f"application/{expected.lower()}"}


def read_header(token: str) -> dict[str, Any]:
    """The decoded protected header, after the size bounds; nothing in it is trusted yet."""
    header, _, _ = _split(token)
    return _json_object(header, "header")


def _check_header(header: Mapping[str, Any], typ: str) -> None:
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ALLOWED_JWS_ALGORITHMS:
        raise AlgorithmNotAllowed("only ES256 is accepted")
    if header.keys() & KEY_SUPPLYING_HEADERS:
        raise ForbiddenHeader("the header may not supply the verification key")
    if "crit" in header:
        raise ForbiddenHeader("no critical header extension is understood")
    if not typ_matches(header.get("typ"), typ):
        raise WrongType("the JWS typ does not match the context")


def _registry() -> joserfc_jws.JWSRegistry:
    registry = joserfc_jws.JWSRegistry(algorithms=sorted(ALLOWED_JWS_ALGORITHMS))
    registry.strict_check_header = False  # the header was checked above, against our list
    registry.max_header_length = MAX_HEADER_SEGMENT_CHARS
    registry.max_payload_length = MAX_PAYLOAD_SEGMENT_CHARS
    return registry


_REGISTRY: Final = _registry()


def verify_compact(token: str, *, jwks: Mapping[str, Any], typ: str) -> VerifiedJws:
    """Verify an ES256 compact JWS against the trusted ``jwks``, selecting the key by ``kid``.

    Order: size bounds, header decoding, closed alg list, forbidden headers, ``typ``, key
    selection, signature, payload decoding. Time claims are checked by :func:`check_times`.
    """
    header_segment, payload_segment, _ = _split(token)
    header = _json_object(header_segment, "header")
    _check_header(header, typ)
    jwk = select_key(jwks, header.get("kid"), use="sig")
    key = ECKey.import_key(p256_public_key(jwk, use="sig"))
    try:
        joserfc_jws.deserialize_compact(token, key, registry=_REGISTRY)
    except JoserfcError:
        raise BadSignature("the JWS signature does not verify with the trusted key") from None
    claims = _json_object(payload_segment, "payload")
    return VerifiedJws(header=header, claims=claims, kid=str(header["kid"]))
