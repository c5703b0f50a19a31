"""Resolve a relying party through the federation master (spec §4; OpenID Federation §4, §10).

Inputs the caller fetched (no I/O here): the RP's self-signed entity configuration, the master's
subordinate statement about the RP (from the master's fetch endpoint), and the PINNED master
JWKS. Order, each step only after the previous one succeeded:

1. the subordinate statement verifies with the pinned master keys; ``iss`` is the master and
   ``sub`` is the RP (spec §4 step 2);
2. its ``jwks`` is authoritative for the RP's federation keys: the RP's configuration verifies
   with those keys only, never with keys it carries itself (spec §4 step 3), and its own
   ``jwks`` must hold the vouched key it signed with;
3. the configuration is self-signed for the RP, names the master in ``authority_hints``;
4. metadata rule: a parameter in the superior's ``openid_relying_party`` overrides the leaf's,
   the leaf's is the fallback (spec §2 step 2g, §4; OpenID Federation §6.1.3.1 ``value``);
5. the result expires at the earliest ``exp`` of the chain (cache until then, spec §4 step 4).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, Final

from healthid.protocol.federation.errors import (
    InvalidMetadata,
    IssuerMismatch,
    KeyNotVouched,
    MissingAuthorityHint,
    SubjectMismatch,
)
from healthid.protocol.federation.statements import EntityStatement, verify_entity_statement
from healthid.protocol.jose.claims import check_times
from healthid.protocol.jose.errors import JoseError
from healthid.protocol.jose.jws import TYP_SIGNED_JWKS, verify_compact
from healthid.protocol.jose.keys import jwks_keys, p256_public_key, select_key

RP_METADATA_TYPE: Final = "openid_relying_party"
# spec §6.3: an RP that lists no versions speaks ID token 1.0.0.
DEFAULT_ID_TOKEN_VERSIONS: Final = ("1.0.0",)
MAX_REDIRECT_URIS: Final = 32
MAX_CERTIFICATE_BYTES: Final = 8 * 1024


@dataclass(frozen=True, kw_only=True)
class RelyingPartyKeys:
    """What the IdP needs from an RP key set: mTLS certs (``use: sig`` + x5c) and the enc key.

    spec §2 step 2f: the presented client certificate must equal one of ``tls_certificates``
    (DER); spec §5: the ID token is encrypted to ``encryption_jwk``.
    """

    tls_certificates: tuple[bytes, ...]
    encryption_jwk: Mapping[str, Any] | None

    def __post_init__(self) -> None:
        if self.encryption_jwk is not None:
            object.__setattr__(self, "encryption_jwk", MappingProxyType(dict(self.encryption_jwk)))


@dataclass(frozen=True, kw_only=True)
class ResolvedRelyingParty:
    """An RP the federation vouches for, with its effective ``openid_relying_party`` metadata."""

    client_id: str
    expires_at: int
    redirect_uris: tuple[str, ...]
    scopes: tuple[str, ...]
    federation_jwks: Mapping[str, Any]
    jwks: Mapping[str, Any] | None
    signed_jwks_uri: str | None
    keys: RelyingPartyKeys
    id_token_versions_supported: tuple[str, ...]
    metadata: Mapping[str, Any]
    # the verified chain as fetched: (subordinate statement, entity configuration), for a
    # verifier that must check it again (the enclave, before it encrypts to the RP's key)
    statements: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "metadata", MappingProxyType(dict(self.metadata)))
        object.__setattr__(self, "federation_jwks", MappingProxyType(dict(self.federation_jwks)))
        if self.jwks is not None:
            object.__setattr__(self, "jwks", MappingProxyType(dict(self.jwks)))


def apply_metadata_rule(
    leaf: Mapping[str, Any], superior: Mapping[str, Any], entity_type: str
) -> dict[str, Any]:
    """The leaf's metadata of ``entity_type`` with every parameter the superior sets overriding.

    spec §4 (inferred from the ref and real masters): superior overrides leaf, leaf is the
    fallback; a parameter only the superior sets is added.
    """
    return {**dict(leaf.get(entity_type, {})), **dict(superior.get(entity_type, {}))}


def _verify_subordinate(
    token: str, *, master_jwks: Mapping[str, Any], master: str, client_id: str, now: int
) -> tuple[EntityStatement, Mapping[str, Any]]:
    statement = verify_entity_statement(token, jwks=master_jwks, now=now)
    if statement.iss != master:
        raise IssuerMismatch("the subordinate statement is not issued by the federation master")
    if statement.sub != client_id:
        raise SubjectMismatch("the subordinate statement is about another entity")
    if statement.jwks is None:
        raise KeyNotVouched("the subordinate statement vouches for no keys")
    return statement, statement.jwks


def _verify_leaf(
    token: str, *, vouched: Mapping[str, Any], master: str, client_id: str, now: int
) -> EntityStatement:
    leaf = verify_entity_statement(token, jwks=vouched, now=now)
    if leaf.iss != client_id or leaf.sub != client_id:
        raise SubjectMismatch("the RP's entity configuration is not self-issued for client_id")
    if leaf.jwks is None:
        raise KeyNotVouched("the RP's entity configuration publishes no jwks")
    try:
        own = select_key(leaf.jwks, leaf.kid, use="sig")
    except JoseError:
        raise KeyNotVouched("the RP's own jwks lacks the key it signed with") from None
    if p256_public_key(own, use="sig") != p256_public_key(
        select_key(vouched, leaf.kid, use="sig"), use="sig"
    ):
        raise KeyNotVouched("the RP's own key differs from the one the master vouched for")
    if master not in leaf.authority_hints:
        raise MissingAuthorityHint("the RP does not name the federation master as superior")
    return leaf


def rp_keys(jwks: Mapping[str, Any] | None) -> RelyingPartyKeys:
    """The mTLS certificates and the enc key of an RP key set (spec §2 2f, §5).

    ``use: sig`` keys with ``x5c`` give TLS certificates (x5c[0], standard base64 DER, RFC 7517
    §4.7); the first P-256 ``use: enc`` key is the ID-token encryption key.
    """
    if jwks is None:
        return RelyingPartyKeys(tls_certificates=(), encryption_jwk=None)
    certificates: list[bytes] = []
    encryption: Mapping[str, Any] | None = None
    for key in jwks_keys(jwks):
        if key.get("use") == "sig" and "x5c" in key:
            certificates.append(_first_certificate(key["x5c"]))
        elif key.get("use") == "enc" and encryption is None:
            try:
                p256_public_key(key, use="enc")
            except JoseError:
                continue  # spec §7: only a P-256 key can receive an ECDH-ES ID token
            if isinstance(key.get("kid"), str):
                encryption = key
    return RelyingPartyKeys(tls_certificates=tuple(certificates), encryption_jwk=encryption)


def _first_certificate(x5c: object) -> bytes:
    if not isinstance(x5c, list) or not x5c or not isinstance(x5c[0], str):
        raise InvalidMetadata("an x5c is not a non-empty array of strings")
    if len(x5c[0]) > MAX_CERTIFICATE_BYTES * 4 // 3 + 4:
        raise InvalidMetadata("an x5c certificate is too large")
    try:
        return base64.b64decode(x5c[0], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidMetadata("an x5c certificate is not base64") from None


def _string_list(value: object, name: str, *, limit: int) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > limit:
        raise InvalidMetadata(f"{name} is not a short array")
    if not all(isinstance(v, str) and v for v in value):
        raise InvalidMetadata(f"{name} holds a non-string")
    return tuple(value)


def _relying_party(
    client_id: str, expires_at: int, federation_jwks: Mapping[str, Any], metadata: Mapping[str, Any]
) -> ResolvedRelyingParty:
    redirect_uris = _string_list(
        metadata.get("redirect_uris"), "redirect_uris", limit=MAX_REDIRECT_URIS
    )
    if not redirect_uris:
        raise InvalidMetadata("the RP registers no redirect_uris")
    scope = metadata.get("scope", "")
    if not isinstance(scope, str):
        raise InvalidMetadata("scope is not a space-separated string")
    jwks = metadata.get("jwks")
    if jwks is not None and not isinstance(jwks, Mapping):
        raise InvalidMetadata("jwks is not an object")
    signed_jwks_uri = metadata.get("signed_jwks_uri")
    if signed_jwks_uri is not None and not (
        isinstance(signed_jwks_uri, str) and signed_jwks_uri.startswith("https://")
    ):
        raise InvalidMetadata("signed_jwks_uri is not an https URL")
    if jwks is None and signed_jwks_uri is None:
        raise InvalidMetadata("the RP publishes neither jwks nor signed_jwks_uri")
    features = metadata.get("ti_features_supported", {})
    versions: object = (
        features.get("id_token_version_supported", list(DEFAULT_ID_TOKEN_VERSIONS))
        if isinstance(features, Mapping)
        else None
    )
    return ResolvedRelyingParty(
        client_id=client_id,
        expires_at=expires_at,
        redirect_uris=redirect_uris,
        scopes=tuple(scope.split()),
        federation_jwks=federation_jwks,
        jwks=jwks,
        signed_jwks_uri=signed_jwks_uri,
        keys=rp_keys(jwks),
        id_token_versions_supported=_string_list(versions, "id_token_version_supported", limit=8),
        metadata=metadata,
    )


def resolve_relying_party(
    *,
    client_id: str,
    entity_configuration: str,
    subordinate_statement: str,
    master_entity_id: str,
    master_jwks: Mapping[str, Any],
    now: int,
    allow_http: bool = False,
) -> ResolvedRelyingParty:
    """Verify the two-statement chain RP → master and return the RP's effective metadata.

    ``allow_http`` admits http entity identifiers: development only (a loopback federation
    has no TLS, DESIGN.md).

    Raises :class:`~healthid.protocol.jose.errors.JoseError` (signature, key, typ, lifetime) or
    :class:`~healthid.protocol.federation.errors.FederationError` (chain consistency, metadata).
    """
    if not client_id.startswith(("https://", "http://") if allow_http else ("https://",)):
        raise SubjectMismatch("client_id is not an https entity identifier")
    superior, vouched = _verify_subordinate(
        subordinate_statement,
        master_jwks=master_jwks,
        master=master_entity_id,
        client_id=client_id,
        now=now,
    )
    leaf = _verify_leaf(
        entity_configuration,
        vouched=vouched,
        master=master_entity_id,
        client_id=client_id,
        now=now,
    )
    metadata = apply_metadata_rule(leaf.metadata, superior.metadata, RP_METADATA_TYPE)
    rp = _relying_party(client_id, min(superior.exp, leaf.exp), vouched, metadata)
    return replace(rp, statements=(subordinate_statement, entity_configuration))


def verify_rp_signed_jwks(
    token: str, *, relying_party: ResolvedRelyingParty, now: int
) -> RelyingPartyKeys:
    """The keys of the RP's ``signed_jwks_uri`` document, verified with its federation keys.

    spec §4 (inferred; the ref skips it): verify with the entity-statement keys the master
    vouched for; ``iss`` must be the RP; ``exp`` is honoured when present.
    """
    verified = verify_compact(token, jwks=relying_party.federation_jwks, typ=TYP_SIGNED_JWKS)
    claims = verified.claims
    if claims.get("iss") != relying_party.client_id:
        raise IssuerMismatch("the signed JWKS is not issued by the RP")
    if "exp" in claims:
        check_times(claims, now=now, require_iat=False)
    return rp_keys(claims)
