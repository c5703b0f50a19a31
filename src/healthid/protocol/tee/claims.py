"""The claims of an enclave attestation document, their canonical form and the report data.

Source: ../shared/spec/vau-and-tee.md §3.1 (Gramine: write ``SHA-256(claims) ‖ 0^32`` to
``user_report_data``), §3.2 step 6 and §3.5 (Signal: ``REPORTDATA = SHA-256(claims) ‖ 0^32``),
§4.4 (the document's claims). The claims are a JSON object::

    {"v": 1,                    # format version
     "tee": "sgx" | "simulated",
     "nonce": "<base64url>",    # the client's nonce, 16..64 bytes, unpadded base64url
     "iat": 1750334160,         # issued at, seconds since the epoch
     "keys": {"identity": {<public EC P-256 JWK>}, "<role>": {...}, ...}}

``keys`` maps a role to the enclave's public key for it; ``identity`` (the key that signs the
VAU keys and the audit checkpoints) is required. Closed lists (CONVENTIONS 5): no other claim
members, JWKs are EC P-256 public keys only.

**Canonical serialisation** (what ``SHA-256`` is taken over): RFC 8785 (JSON Canonicalization
Scheme) of the claims object. The claims are restricted so that it is also, byte for byte,
Python's ``json.dumps(claims, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
allow_nan=False).encode("utf-8")``:

- values are objects, arrays, strings, integers in ±(2^53 - 1), ``true``, ``false``, ``null``;
  no floating-point numbers (JCS number formatting is then plain decimal digits);
- member names are ASCII (so code-point order, used by ``sort_keys``, is JCS's UTF-16 order);
- strings are Unicode scalar values (no lone surrogates), encoded as UTF-8 without escaping
  beyond JSON's mandatory ones (``"``, ``\\``, control characters; both use ``\\b \\t \\n \\f
  \\r`` and lowercase ``\\u00xx``);
- no insignificant whitespace, members sorted by name at every level.

``report_data = SHA-256(canonical claims) ‖ 32 zero bytes`` (64 bytes, the SGX REPORTDATA).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric import ec

from healthid.protocol.jose.errors import JoseError
from healthid.protocol.jose.keys import b64url_decode, b64url_encode, p256_public_key
from healthid.protocol.tee.errors import DocumentTooLargeError, MalformedDocumentError
from healthid.protocol.tee.quote import REPORT_DATA_BYTES

CLAIMS_VERSION: Final = 1
# The client's nonce: at least 128 bits (unguessable), at most what fits in a query string.
MIN_NONCE_BYTES: Final = 16
MAX_NONCE_BYTES: Final = 64
# Bounds on the claims, checked before hashing (a handful of JWKs is < 2 KiB).
MAX_CLAIMS_BYTES: Final = 16 * 1024
MAX_DEPTH: Final = 4  # claims > keys > jwk > member
MAX_KEYS: Final = 16
# RFC 8785 / I-JSON (RFC 7493 §2.2): integers beyond ±(2^53 - 1) are not exchanged exactly.
MAX_SAFE_INTEGER: Final = 2**53 - 1
IDENTITY_ROLE: Final = "identity"
ROLE_PATTERN: Final = re.compile(r"[a-z][a-z0-9_-]{0,31}")
CLAIM_MEMBERS: Final = frozenset({"v", "tee", "nonce", "iat", "keys"})
JWK_MEMBERS: Final = frozenset({"kty", "crv", "x", "y", "kid", "use", "alg"})
JWK_USES: Final = frozenset({"sig", "enc"})


class TeeKind(StrEnum):
    """The ``tee`` claim: the closed list of environments a document may claim."""

    SGX = "sgx"
    SIMULATED = "simulated"  # development only: no protection at all (spec §4, honesty rule)


@dataclass(frozen=True, kw_only=True, slots=True)
class EnclaveKey:
    """One attested public key of the enclave: its role, its JWK and the key itself."""

    role: str
    jwk: Mapping[str, str]
    public_key: ec.EllipticCurvePublicKey


@dataclass(frozen=True, kw_only=True, slots=True)
class AttestationClaims:
    """The claims of a document, validated; ``canonical`` is the exact bytes that are hashed."""

    tee: TeeKind
    nonce: bytes
    iat: int
    keys: tuple[EnclaveKey, ...]
    canonical: bytes

    @property
    def report_data(self) -> bytes:
        return report_data_for(self.canonical)

    def key(self, role: str) -> EnclaveKey:
        """The attested key for ``role``; KeyError when the document has none."""
        for key in self.keys:
            if key.role == role:
                return key
        raise KeyError(role)

    @property
    def identity_key(self) -> ec.EllipticCurvePublicKey:
        return self.key(IDENTITY_ROLE).public_key

    def to_json_object(self) -> dict[str, Any]:
        """The claims as a JSON object (parsed back from the canonical bytes)."""
        obj: dict[str, Any] = json.loads(self.canonical)
        return obj


def _check_value(value: object, depth: int) -> None:
    """Refuse what has no unique RFC 8785 form under Python's encoder (module docstring)."""
    if depth > MAX_DEPTH:
        raise MalformedDocumentError("the claims nest too deeply")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise MalformedDocumentError("an integer in the claims exceeds 2^53 - 1")
        return
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise MalformedDocumentError("a claims string is not valid Unicode") from None
        return
    if isinstance(value, list):
        for item in value:
            _check_value(item, depth + 1)
        return
    if isinstance(value, dict):
        for name, item in value.items():
            if not isinstance(name, str) or not name.isascii():
                raise MalformedDocumentError("a claims member name is not an ASCII string")
            _check_value(item, depth + 1)
        return
    raise MalformedDocumentError(f"a claims value of type {type(value).__name__} is not allowed")


def canonical_json(claims: dict[str, Any]) -> bytes:
    """RFC 8785 canonical UTF-8 bytes of ``claims`` (restricted as in the module docstring)."""
    if not isinstance(claims, dict):
        raise MalformedDocumentError("the claims are not a JSON object")
    _check_value(claims, 0)
    text = json.dumps(
        claims, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    data = text.encode("utf-8")
    if len(data) > MAX_CLAIMS_BYTES:
        raise DocumentTooLargeError(f"the claims exceed {MAX_CLAIMS_BYTES} bytes")
    return data


def report_data_for(canonical: bytes) -> bytes:
    """``SHA-256(canonical claims) ‖ 0^32`` (spec §3.2 step 6, §4.4)."""
    return hashlib.sha256(canonical).digest() + bytes(REPORT_DATA_BYTES - 32)


def report_data_matches(report_data: bytes, canonical: bytes) -> bool:
    """Constant-time comparison of the attested REPORTDATA with the claims' (CONVENTIONS 8)."""
    return hmac.compare_digest(report_data, report_data_for(canonical))


def b64url_decode_strict(text: object) -> bytes:
    """RFC 4648 §5 base64url without padding, in its one canonical spelling.

    Refuses ``+``, ``/``, ``=``, whitespace and non-zero trailing bits (which Python's decoder
    accepts), so one value has one encoding inside bound claims and documents.
    """
    if not isinstance(text, str):
        raise ValueError("not a base64url string")
    raw = b64url_decode(text)
    if b64url_encode(raw) != text:
        raise ValueError("not canonical unpadded base64url")
    return raw


def check_nonce(nonce: bytes) -> None:
    """A caller's nonce must be 16..64 bytes (a programming error otherwise)."""
    if not isinstance(nonce, bytes) or not MIN_NONCE_BYTES <= len(nonce) <= MAX_NONCE_BYTES:
        raise ValueError(f"a nonce has {MIN_NONCE_BYTES} to {MAX_NONCE_BYTES} bytes")


def _parse_key(role: object, jwk: object) -> EnclaveKey:
    if not isinstance(role, str) or not ROLE_PATTERN.fullmatch(role):
        raise MalformedDocumentError("a key role is not a short lowercase name")
    if not isinstance(jwk, dict) or not all(isinstance(v, str) for v in jwk.values()):
        raise MalformedDocumentError(f"the {role} key is not a JWK of string members")
    if not set(jwk) <= JWK_MEMBERS:
        raise MalformedDocumentError(f"the {role} key has members beyond a public EC JWK")
    use = jwk.get("use", "sig")
    if use not in JWK_USES:
        raise MalformedDocumentError(f"the {role} key's use is neither sig nor enc")
    try:
        public_key = p256_public_key(jwk, use=use)
    except JoseError as exc:
        raise MalformedDocumentError(f"the {role} key: {exc}") from None
    return EnclaveKey(role=role, jwk=MappingProxyType(dict(jwk)), public_key=public_key)


def _parse_keys(keys: object) -> tuple[EnclaveKey, ...]:
    if not isinstance(keys, dict) or not keys:
        raise MalformedDocumentError("the keys claim is not a non-empty object")
    if len(keys) > MAX_KEYS:
        raise MalformedDocumentError(f"the keys claim has more than {MAX_KEYS} keys")
    if IDENTITY_ROLE not in keys:
        raise MalformedDocumentError("the keys claim has no identity key")
    return tuple(_parse_key(role, jwk) for role, jwk in sorted(keys.items()))


def parse_claims(claims: object) -> AttestationClaims:
    """Validate a claims object (from a document) into :class:`AttestationClaims`."""
    if not isinstance(claims, dict):
        raise MalformedDocumentError("the claims are not a JSON object")
    canonical = canonical_json(claims)
    if set(claims) != CLAIM_MEMBERS:
        raise MalformedDocumentError(f"the claims must have exactly {sorted(CLAIM_MEMBERS)}")
    version = claims["v"]
    if isinstance(version, bool) or version != CLAIMS_VERSION:
        raise MalformedDocumentError(f"claims version {version!r} is not {CLAIMS_VERSION}")
    try:
        tee = TeeKind(claims["tee"])
    except ValueError:
        raise MalformedDocumentError("the tee claim is neither sgx nor simulated") from None
    iat = claims["iat"]
    if not isinstance(iat, int) or isinstance(iat, bool) or iat < 0:
        raise MalformedDocumentError("the iat claim is not a non-negative integer")
    try:
        nonce = b64url_decode_strict(claims["nonce"])
        check_nonce(nonce)
    except ValueError:
        raise MalformedDocumentError("the nonce claim is not 16..64 bytes of base64url") from None
    return AttestationClaims(
        tee=tee, nonce=nonce, iat=iat, keys=_parse_keys(claims["keys"]), canonical=canonical
    )


def build_claims(
    *,
    tee: TeeKind,
    nonce: bytes,
    issued_at: datetime,
    keys: Mapping[str, Mapping[str, str]],
) -> AttestationClaims:
    """The claims for a document: the enclave's public JWKs by role, the nonce, the time."""
    check_nonce(nonce)
    if issued_at.tzinfo is None:
        raise ValueError("issued_at must be timezone-aware")
    obj: dict[str, Any] = {
        "v": CLAIMS_VERSION,
        "tee": tee.value,
        "nonce": b64url_encode(nonce),
        "iat": int(issued_at.timestamp()),
        "keys": {role: dict(jwk) for role, jwk in keys.items()},
    }
    return parse_claims(obj)
