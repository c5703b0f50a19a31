"""Entity statements: verify one against trusted keys and read it (OpenID Federation 1.0 §3).

An entity statement is a JWS with ``typ: entity-statement+jwt`` (spec §3), ES256 on P-256, whose
claims carry ``iss``, ``sub``, ``iat``, ``exp`` and optionally ``jwks``, ``authority_hints`` and
``metadata``. Which keys are trusted is the caller's decision (the pinned master JWKS, or the
``jwks`` a superior vouched for); this module never takes a key from the statement itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from healthid.protocol.federation.errors import InvalidStatement
from healthid.protocol.jose.claims import check_times, int_claim
from healthid.protocol.jose.jws import TYP_ENTITY_STATEMENT, Signer, sign_compact, verify_compact
from healthid.protocol.jose.keys import jwks_keys, p256_public_key

# OpenID Federation 1.0 §3: a bound on how many superiors a statement may name.
MAX_AUTHORITY_HINTS: Final = 8


@dataclass(frozen=True, kw_only=True)
class EntityStatement:
    """A verified entity statement; ``claims`` keeps every claim for callers that need more."""

    iss: str
    sub: str
    iat: int
    exp: int
    jwks: Mapping[str, Any] | None
    authority_hints: tuple[str, ...]
    metadata: Mapping[str, Any]
    claims: Mapping[str, Any]
    kid: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "metadata", MappingProxyType(dict(self.metadata)))
        object.__setattr__(self, "claims", MappingProxyType(dict(self.claims)))
        if self.jwks is not None:
            object.__setattr__(self, "jwks", MappingProxyType(dict(self.jwks)))

    @property
    def is_self_signed(self) -> bool:
        """OpenID Federation §3: an entity configuration has ``iss == sub``."""
        return self.iss == self.sub


def _string(claims: Mapping[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidStatement(f"the {name} claim is missing or not a string")
    return value


def _jwks(claims: Mapping[str, Any]) -> Mapping[str, Any] | None:
    if "jwks" not in claims:
        return None
    value = claims["jwks"]
    if not isinstance(value, Mapping):
        raise InvalidStatement("the jwks claim is not an object")
    for key in jwks_keys(value):  # every federation key must be a P-256 signing key (spec §7)
        p256_public_key(key, use="sig")
    return value


def _authority_hints(claims: Mapping[str, Any]) -> tuple[str, ...]:
    value = claims.get("authority_hints", [])
    if not isinstance(value, list) or len(value) > MAX_AUTHORITY_HINTS:
        raise InvalidStatement("authority_hints is not a short array")
    if not all(isinstance(v, str) and v for v in value):
        raise InvalidStatement("authority_hints holds a non-string")
    return tuple(value)


def _metadata(claims: Mapping[str, Any]) -> Mapping[str, Any]:
    value = claims.get("metadata", {})
    if not isinstance(value, Mapping) or not all(isinstance(v, Mapping) for v in value.values()):
        raise InvalidStatement("metadata is not an object of objects")
    return value


def verify_entity_statement(token: str, *, jwks: Mapping[str, Any], now: int) -> EntityStatement:
    """Verify ``token`` with the trusted ``jwks`` (kid-selected, ES256) and check lifetimes.

    Raises a :class:`~healthid.protocol.jose.errors.JoseError` for signature, typ, key and time
    refusals and :class:`InvalidStatement` for missing or mistyped claims.
    """
    verified = verify_compact(token, jwks=jwks, typ=TYP_ENTITY_STATEMENT)
    claims = verified.claims
    exp = check_times(claims, now=now, require_iat=True)
    iat = int_claim(claims, "iat", required=True)
    return EntityStatement(
        iss=_string(claims, "iss"),
        sub=_string(claims, "sub"),
        iat=iat if iat is not None else now,
        exp=exp,
        jwks=_jwks(claims),
        authority_hints=_authority_hints(claims),
        metadata=_metadata(claims),
        claims=claims,
        kid=verified.kid,
    )


def sign_entity_statement(claims: Mapping[str, Any], *, kid: str, signer: Signer) -> str:
    """Sign ``claims`` as an entity statement (header ``{alg: ES256, kid, typ}``, spec §3)."""
    return sign_compact(claims, kid=kid, typ=TYP_ENTITY_STATEMENT, signer=signer)
