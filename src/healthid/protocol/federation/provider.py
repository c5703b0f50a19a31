"""The IdP's entity configuration and signed JWKS (spec §3, §3.1; OpenID Federation 1.0 §3).

``/.well-known/openid-federation`` serves a self-signed entity statement (``iss == sub``) with
``exp = iat + 2 h`` (spec §8), the federation keys in ``jwks`` (without the ID-token key since
gsi 8.0.0) and ``metadata.openid_provider`` / ``metadata.federation_entity``. The fixed values
are those gsi-testsuite ENTITY_STATEMENT_005 asserts; the variable ones are parameters.
``signed_jwks_uri`` serves a JWS (``typ: jwk-set+json``) signed with the entity-statement key,
listing that key and the ID-token key with its ``x5c`` (spec §3.1, SIGNED_JWKS_004).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from cryptography import x509

from healthid.protocol.federation.errors import InvalidStatement
from healthid.protocol.federation.statements import sign_entity_statement
from healthid.protocol.jose.jws import TYP_SIGNED_JWKS, Signer, sign_compact
from healthid.protocol.jose.keys import p256_public_key, select_key

# spec §8: the IdP entity statement lives 2 h (gsi >= 8.0.0).
ENTITY_CONFIGURATION_LIFETIME_SECONDS: Final = 2 * 60 * 60
# A certificate chain longer than this is not a TI component-PKI chain.
MAX_X5C_CERTIFICATES: Final = 4

# spec §3 / gsi-testsuite ENTITY_STATEMENT_007: the nine scopes every sectoral IdP offers.
DEFAULT_SCOPES_SUPPORTED: Final = (
    "openid",
    "urn:telematik:geburtsdatum",
    "urn:telematik:alter",
    "urn:telematik:display_name",
    "urn:telematik:given_name",
    "urn:telematik:geschlecht",
    "urn:telematik:email",
    "urn:telematik:versicherter",
    "urn:telematik:family_name",
)
# spec §5: the claims those scopes map to.
DEFAULT_CLAIMS_SUPPORTED: Final = (
    "birthdate",
    "urn:telematik:claims:alter",
    "urn:telematik:claims:display_name",
    "urn:telematik:claims:given_name",
    "urn:telematik:claims:family_name",
    "urn:telematik:claims:geschlecht",
    "urn:telematik:claims:email",
    "urn:telematik:claims:profession",
    "urn:telematik:claims:id",
    "urn:telematik:claims:organization",
)
# spec §3 / §6.3: gsi-testsuite expects exactly ["1.0.0", "2.0.0"].
DEFAULT_ID_TOKEN_VERSIONS: Final = ("1.0.0", "2.0.0")
# gsi-testsuite ENTITY_STATEMENT_005: exact values; none of them is configurable.
FIXED_PROVIDER_METADATA: Final[Mapping[str, Any]] = {
    "client_registration_types_supported": ["automatic"],
    "subject_types_supported": ["pairwise"],
    "response_types_supported": ["code"],
    "response_modes_supported": ["query"],
    "grant_types_supported": ["authorization_code"],
    "require_pushed_authorization_requests": True,
    "token_endpoint_auth_methods_supported": ["self_signed_tls_client_auth"],
    "request_authentication_methods_supported": {
        "ar": ["none"],
        "par": ["self_signed_tls_client_auth"],
    },
    "id_token_signing_alg_values_supported": ["ES256"],
    "id_token_encryption_alg_values_supported": ["ECDH-ES"],
    "id_token_encryption_enc_values_supported": ["A256GCM"],
    "user_type_supported": ["IP"],
    "claims_parameter_supported": True,
}


@dataclass(frozen=True, kw_only=True)
class ProviderConfiguration:
    """The variable parts of the IdP's entity configuration (spec §1.1, §3).

    ``token_endpoint`` and ``pushed_authorization_request_endpoint`` live on the mTLS host.
    ``federation_organization_name`` is required (gsi ReleaseNotes 8.1.2, AF_10100-01);
    ``federation_name`` is what older testsuites check (``name``); both are published.
    """

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    pushed_authorization_request_endpoint: str
    signed_jwks_uri: str
    organization_name: str
    logo_uri: str
    authority_hints: tuple[str, ...]
    federation_name: str
    federation_organization_name: str
    contacts: tuple[str, ...]
    homepage_uri: str
    scopes_supported: tuple[str, ...] = DEFAULT_SCOPES_SUPPORTED
    claims_supported: tuple[str, ...] = DEFAULT_CLAIMS_SUPPORTED
    id_token_versions_supported: tuple[str, ...] = DEFAULT_ID_TOKEN_VERSIONS
    extra_federation_entity: Mapping[str, Any] = field(default_factory=dict)
    # Development only: a local federation on loopback has no TLS (DESIGN.md).
    allow_http: bool = False

    def __post_init__(self) -> None:
        urls = (
            self.issuer,
            self.authorization_endpoint,
            self.token_endpoint,
            self.pushed_authorization_request_endpoint,
            self.signed_jwks_uri,
            self.logo_uri,
            self.homepage_uri,
            *self.authority_hints,
        )
        schemes = ("https://", "http://") if self.allow_http else ("https://",)
        if not all(u.startswith(schemes) for u in urls):
            raise ValueError("every federation URL must be https (OpenID Federation §1.2)")
        if not self.authority_hints or not self.contacts:
            raise ValueError("authority_hints and contacts must not be empty (spec §3)")


def provider_metadata(config: ProviderConfiguration) -> dict[str, Any]:
    """``metadata.openid_provider``: fixed values of spec §3 plus the configured ones."""
    return {
        "issuer": config.issuer,
        "signed_jwks_uri": config.signed_jwks_uri,
        "organization_name": config.organization_name,
        "logo_uri": config.logo_uri,
        "authorization_endpoint": config.authorization_endpoint,
        "token_endpoint": config.token_endpoint,
        "pushed_authorization_request_endpoint": config.pushed_authorization_request_endpoint,
        **{k: _copy(v) for k, v in FIXED_PROVIDER_METADATA.items()},
        "scopes_supported": list(config.scopes_supported),
        "claims_supported": list(config.claims_supported),
        "ti_features_supported": {
            "id_token_version_supported": list(config.id_token_versions_supported)
        },
    }


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def federation_entity_metadata(config: ProviderConfiguration) -> dict[str, Any]:
    """``metadata.federation_entity`` (spec §3; OpenID Federation §5.2.1)."""
    return {
        **dict(config.extra_federation_entity),
        "name": config.federation_name,
        "organization_name": config.federation_organization_name,
        "contacts": list(config.contacts),
        "homepage_uri": config.homepage_uri,
    }


def _checked_federation_jwks(keys: Sequence[Mapping[str, Any]], kid: str) -> dict[str, Any]:
    jwks = {"keys": [dict(k) for k in keys]}
    for key in jwks["keys"]:
        p256_public_key(key, use="sig")  # spec §7: EC P-256 sig keys, public parts only
        if key.get("use") != "sig" or "x5c" in key:
            raise InvalidStatement("a federation key needs use: sig and no x5c (spec §3)")
    select_key(jwks, kid, use="sig")  # the signing kid must be published, exactly once
    return jwks


def entity_configuration_claims(
    config: ProviderConfiguration,
    *,
    federation_keys: Sequence[Mapping[str, Any]],
    kid: str,
    now: int,
) -> dict[str, Any]:
    """The claims of the IdP's entity configuration (spec §3; OpenID Federation §3)."""
    return {
        "iss": config.issuer,
        "sub": config.issuer,
        "iat": now,
        "exp": now + ENTITY_CONFIGURATION_LIFETIME_SECONDS,
        "jwks": _checked_federation_jwks(federation_keys, kid),
        "authority_hints": list(config.authority_hints),
        "metadata": {
            "openid_provider": provider_metadata(config),
            "federation_entity": federation_entity_metadata(config),
        },
    }


def sign_entity_configuration(
    config: ProviderConfiguration,
    *,
    federation_keys: Sequence[Mapping[str, Any]],
    kid: str,
    signer: Signer,
    now: int,
) -> str:
    """The signed entity configuration served at ``/.well-known/openid-federation``."""
    claims = entity_configuration_claims(config, federation_keys=federation_keys, kid=kid, now=now)
    return sign_entity_statement(claims, kid=kid, signer=signer)


def _check_x5c_matches(token_key: Mapping[str, Any], x5c: Sequence[str]) -> None:
    if not x5c or len(x5c) > MAX_X5C_CERTIFICATES:
        raise InvalidStatement("the ID-token key needs an x5c chain (SIGNED_JWKS_004)")
    try:
        leaf = x509.load_der_x509_certificate(base64.b64decode(x5c[0], validate=True))
    except (binascii.Error, ValueError):
        raise InvalidStatement("x5c[0] is not a base64 DER certificate (RFC 7517 §4.7)") from None
    if leaf.public_key() != p256_public_key(token_key, use="sig"):
        raise InvalidStatement("x5c[0] does not certify the ID-token key (RFC 7517 §4.7)")


def signed_jwks_claims(
    *,
    issuer: str,
    federation_key: Mapping[str, Any],
    token_key: Mapping[str, Any],
    token_x5c: Sequence[str],
    now: int,
) -> dict[str, Any]:
    """``{iss, iat, keys}`` of spec §3.1: the entity-statement key and the ID-token key + x5c."""
    p256_public_key(federation_key, use="sig")
    _check_x5c_matches(token_key, token_x5c)
    keys = [
        {**dict(federation_key), "use": "sig"},
        {**dict(token_key), "use": "sig", "x5c": list(token_x5c)},
    ]
    return {"iss": issuer, "iat": now, "keys": keys}


def sign_signed_jwks(
    *,
    issuer: str,
    federation_key: Mapping[str, Any],
    token_key: Mapping[str, Any],
    token_x5c: Sequence[str],
    signer: Signer,
    now: int,
) -> str:
    """The JWS served at ``signed_jwks_uri``, signed with the entity-statement key (spec §3.1)."""
    return sign_signed_jwks_with_keys(
        issuer=issuer,
        federation_key=federation_key,
        token_keys=[(token_key, token_x5c)],
        signer=signer,
        now=now,
    )


def sign_signed_jwks_with_keys(
    *,
    issuer: str,
    federation_key: Mapping[str, Any],
    token_keys: Sequence[tuple[Mapping[str, Any], Sequence[str]]],
    signer: Signer,
    now: int,
) -> str:
    """The signed JWKS of spec §3.1 with one or more ID-token keys (the first is the active
    one, at ``keys[1]`` where the gsi testsuite looks), each checked against its ``x5c`` as
    :func:`~healthid.protocol.federation.provider.signed_jwks_claims` checks one; every kid
    must be unique (oidc-provider v9: an ambiguous kid is refused)."""
    if not token_keys:
        raise InvalidStatement("the signed JWKS needs the active ID-token key")
    keys: list[dict[str, Any]] = []
    for jwk, x5c in token_keys:
        federation_entry, token_entry = signed_jwks_claims(
            issuer=issuer, federation_key=federation_key, token_key=jwk, token_x5c=x5c, now=now
        )["keys"]
        if not keys:
            keys.append(federation_entry)
        keys.append(token_entry)
    kids = [k.get("kid") for k in keys]
    if len(set(kids)) != len(kids):
        raise InvalidStatement("two keys of the signed JWKS share a kid")
    kid = federation_key.get("kid")
    if not isinstance(kid, str) or not kid:
        raise InvalidStatement("the entity-statement key has no kid")
    body = {"iss": issuer, "iat": now, "keys": keys}
    return sign_compact(body, kid=kid, typ=TYP_SIGNED_JWKS, signer=signer)
