"""The pure relying-party side of the sectoral IdP flow, for the DEMO relying party (spec §2).

No I/O and no clock: the shell (:mod:`healthid.demo.rp`) fetches documents and
passes them in with ``now``. Steps, by the numbering of spec §2:

- step 1: trust in the IdP, either through the federation master (the master's entity
  configuration verified with its PINNED keys, the master's statement about the IdP, then the
  IdP's configuration verified with the keys the master vouches for), or, without a pinned
  master, trust on first use of the IdP's self-signed configuration;
- step 2: the PAR form (PKCE S256, state, nonce, scope, acr_values);
- step 3: the authorization URL (``client_id`` and ``request_uri`` only);
- step 8: the ID token: decrypt with the RP's enc key, verify the inner JWS with the keys of
  the IdP's signed JWKS (itself verified with the IdP's entity-statement keys), then
  iss/aud/nonce/exp.

Also the RP's own entity configuration (spec §1.3, §4: what the IdP's automatic registration
reads). Every refusal is one :class:`DemoRpError` whose message is safe to show.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import urlencode

from cryptography.hazmat.primitives.asymmetric import ec

from healthid.demo.rp_keys import SIG_KID, DemoRpKeys
from healthid.protocol.federation import EntityStatement, FederationError, verify_entity_statement
from healthid.protocol.federation.statements import sign_entity_statement
from healthid.protocol.jose import (
    TYP_ID_TOKEN,
    TYP_SIGNED_JWKS,
    JoseError,
    check_times,
    decrypt_id_token,
    verify_compact,
)
from healthid.protocol.jose.jws import read_header
from healthid.protocol.jose.keys import b64url_decode, b64url_encode, jwks_keys, p256_public_key

# spec §8: an RP's own statement may be short-lived; the brief asks for 24 h.
ENTITY_CONFIGURATION_LIFETIME_SECONDS: Final = 24 * 60 * 60
# spec §6.1: the LoA the demo asks for.
ACR_HIGH: Final = "gematik-ehealth-loa-high"
KNOWN_ACR_VALUES: Final = frozenset({ACR_HIGH, "gematik-ehealth-loa-substantial"})
# spec §6.3: the demo reads both ID-token versions.
ID_TOKEN_VERSIONS: Final = ("1.0.0", "2.0.0")
# spec §5: what the demo asks for (every scope must also be in its entity configuration).
DEFAULT_SCOPES: Final = (
    "openid",
    "urn:telematik:versicherter",
    "urn:telematik:display_name",
    "urn:telematik:given_name",
    "urn:telematik:family_name",
    "urn:telematik:alter",
)
# RFC 7636 §4.1: 43-128 characters; 48 random bytes give 64 base64url characters.
PKCE_VERIFIER_BYTES: Final = 48
# state and nonce: 256 bits each (RFC 6749 §10.10: not guessable).
STATE_BYTES: Final = 32
NONCE_BYTES: Final = 32
# Bounds on what the IdP may send back.
MAX_REQUEST_URI_CHARS: Final = 512
MAX_ENDPOINT_CHARS: Final = 2048
METADATA_TYPE_PROVIDER: Final = "openid_provider"
_ENDPOINTS: Final = (
    "authorization_endpoint",
    "token_endpoint",
    "pushed_authorization_request_endpoint",
    "signed_jwks_uri",
)


class DemoRpError(Exception):
    """A step of the demo login is refused; ``str(error)`` is safe to show (no token content)."""

    def __init__(self, message: str, *, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code


# -- the RP's own entity configuration ------------------------------------------------------
def entity_configuration_claims(
    *,
    entity_id: str,
    fedmaster_url: str,
    keys: DemoRpKeys,
    scopes: Sequence[str],
    organization_name: str,
    contacts: Sequence[str],
    now: int,
) -> dict[str, Any]:
    """The RP's self-signed entity configuration (OpenID Federation §3; spec §1.3, §4 step 5).

    ``openid_relying_party.jwks`` holds the TLS certificate key (``use: sig`` + ``x5c``, spec §2
    step 2f) and the enc key (``use: enc``, spec §5); the top-level ``jwks`` holds only the
    entity-statement key the master vouches for.
    """
    return {
        "iss": entity_id,
        "sub": entity_id,
        "iat": now,
        "exp": now + ENTITY_CONFIGURATION_LIFETIME_SECONDS,
        "jwks": keys.federation_jwks(),
        "authority_hints": [fedmaster_url],
        "metadata": {
            "openid_relying_party": {
                "client_name": organization_name,
                "organization_name": organization_name,
                "client_registration_types": ["automatic"],
                "redirect_uris": [callback_url(entity_id)],
                "response_types": ["code"],
                "grant_types": ["authorization_code"],
                "require_pushed_authorization_requests": True,
                "token_endpoint_auth_method": "self_signed_tls_client_auth",
                "default_acr_values": [ACR_HIGH],
                "id_token_signed_response_alg": "ES256",
                "id_token_encrypted_response_alg": "ECDH-ES",
                "id_token_encrypted_response_enc": "A256GCM",
                "scope": " ".join(scopes),
                "jwks": keys.relying_party_jwks(),
                "ti_features_supported": {"id_token_version_supported": list(ID_TOKEN_VERSIONS)},
            },
            "federation_entity": {
                "name": organization_name,
                "organization_name": organization_name,
                "contacts": list(contacts),
                "homepage_uri": entity_id,
            },
        },
    }


def sign_rp_entity_configuration(claims: Mapping[str, Any], *, keys: DemoRpKeys) -> str:
    """Sign the RP's entity configuration with its federation key (typ entity-statement+jwt)."""
    return sign_entity_statement(claims, kid=SIG_KID, signer=keys.signer())


def callback_url(entity_id: str) -> str:
    """The one registered redirect_uri (spec §2 step 2g: exact match)."""
    return entity_id.rstrip("/") + "/callback"


# -- step 1: trust in the IdP -----------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class IdpMetadata:
    """The IdP's endpoints (spec §1.1: always from its statement) and its federation keys."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    pushed_authorization_request_endpoint: str
    signed_jwks_uri: str
    federation_jwks: Mapping[str, Any]
    trust: str  # "federation master" or "trust on first use"

    def __post_init__(self) -> None:
        object.__setattr__(self, "federation_jwks", MappingProxyType(dict(self.federation_jwks)))


def _unverified_payload(token: str) -> dict[str, Any]:
    read_header(token)  # size bounds first
    try:
        value = json.loads(b64url_decode(token.split(".")[1]))
    except (ValueError, UnicodeDecodeError, IndexError):
        raise DemoRpError("the IdP's entity configuration is malformed") from None
    if not isinstance(value, dict):
        raise DemoRpError("the IdP's entity configuration is malformed")
    return value


def _self_issued(statement: EntityStatement, entity_id: str, what: str) -> EntityStatement:
    if statement.iss != entity_id or statement.sub != entity_id:
        raise DemoRpError(f"{what} is not self-issued by {entity_id}")
    return statement


def verify_idp_first_use(
    token: str, *, idp_entity_id: str, pinned_jwks: Mapping[str, Any] | None, now: int
) -> EntityStatement:
    """DEMO ONLY, no federation: the IdP's configuration verified with keys IT names.

    On first use (``pinned_jwks`` is None) the statement's own ``jwks`` is trusted; this proves
    only self-consistency, not who the IdP is. Afterwards the caller passes the pinned keys, so
    a later change of keys is refused (trust on first use).
    """
    try:
        if pinned_jwks is None:
            jwks = _unverified_payload(token).get("jwks")
            if not isinstance(jwks, Mapping):
                raise DemoRpError("the IdP's entity configuration has no jwks")
            pinned_jwks = jwks
        statement = verify_entity_statement(token, jwks=pinned_jwks, now=now)
    except (JoseError, FederationError) as exc:
        raise DemoRpError(f"the IdP's entity configuration is refused: {exc}") from None
    return _self_issued(statement, idp_entity_id, "the IdP's entity configuration")


def master_fetch_endpoint(
    token: str, *, master_entity_id: str, master_jwks: Mapping[str, Any], now: int
) -> str:
    """The master's ``federation_fetch_endpoint``, from its configuration verified with the
    PINNED master keys (spec §1.2: discover it there; §4 step 1)."""
    try:
        statement = verify_entity_statement(token, jwks=master_jwks, now=now)
    except (JoseError, FederationError) as exc:
        raise DemoRpError(f"the federation master's configuration is refused: {exc}") from None
    _self_issued(statement, master_entity_id, "the federation master's configuration")
    entity = statement.metadata.get("federation_entity", {})
    endpoint = entity.get("federation_fetch_endpoint") if isinstance(entity, Mapping) else None
    if not isinstance(endpoint, str) or not endpoint.startswith(("https://", "http://")):
        raise DemoRpError("the federation master publishes no federation_fetch_endpoint")
    return endpoint


def verify_idp_through_master(
    *,
    subordinate_statement: str,
    entity_configuration: str,
    master_entity_id: str,
    master_jwks: Mapping[str, Any],
    idp_entity_id: str,
    now: int,
) -> EntityStatement:
    """spec §2 step 1: master's statement about the IdP → its ``jwks`` → IdP configuration."""
    try:
        superior = verify_entity_statement(subordinate_statement, jwks=master_jwks, now=now)
    except (JoseError, FederationError) as exc:
        raise DemoRpError(f"the master's statement about the IdP is refused: {exc}") from None
    if superior.iss != master_entity_id or superior.sub != idp_entity_id:
        raise DemoRpError("the master's statement is not about this IdP")
    if superior.jwks is None:
        raise DemoRpError("the master vouches for no key of the IdP")
    try:
        leaf = verify_entity_statement(entity_configuration, jwks=superior.jwks, now=now)
    except (JoseError, FederationError) as exc:
        raise DemoRpError(f"the IdP's entity configuration is refused: {exc}") from None
    _self_issued(leaf, idp_entity_id, "the IdP's entity configuration")
    if master_entity_id not in leaf.authority_hints:
        raise DemoRpError("the IdP does not name the federation master in authority_hints")
    return leaf


def idp_metadata(statement: EntityStatement, *, trust: str) -> IdpMetadata:
    """``metadata.openid_provider`` of a verified IdP configuration (spec §3)."""
    provider = statement.metadata.get(METADATA_TYPE_PROVIDER)
    if not isinstance(provider, Mapping):
        raise DemoRpError("the IdP's configuration has no openid_provider metadata")
    if provider.get("issuer") != statement.iss:
        raise DemoRpError("the IdP's issuer differs from its entity identifier")
    for name in _ENDPOINTS:
        value = provider.get(name)
        if not isinstance(value, str) or len(value) > MAX_ENDPOINT_CHARS:
            raise DemoRpError(f"the IdP's {name} is missing")
        if not value.startswith(("https://", "http://")):
            raise DemoRpError(f"the IdP's {name} is not an http(s) URL")
    if statement.jwks is None:
        raise DemoRpError("the IdP's configuration has no jwks")
    return IdpMetadata(
        issuer=statement.iss,
        authorization_endpoint=provider["authorization_endpoint"],
        token_endpoint=provider["token_endpoint"],
        pushed_authorization_request_endpoint=provider["pushed_authorization_request_endpoint"],
        signed_jwks_uri=provider["signed_jwks_uri"],
        federation_jwks=statement.jwks,
        trust=trust,
    )


# -- steps 2 and 3: PAR and the authorization URL ---------------------------------------------
def pkce_challenge(verifier: str) -> str:
    """RFC 7636 §4.2: ``BASE64URL(SHA256(ASCII(code_verifier)))``."""
    return b64url_encode(hashlib.sha256(verifier.encode("ascii")).digest())


@dataclass(frozen=True, kw_only=True)
class LoginSecrets:
    """What the RP remembers between PAR and callback (spec §2 steps 2 and 6)."""

    state: str
    nonce: str
    code_verifier: str

    @classmethod
    def generate(cls) -> LoginSecrets:
        return cls(
            state=secrets.token_urlsafe(STATE_BYTES),
            nonce=secrets.token_urlsafe(NONCE_BYTES),
            code_verifier=secrets.token_urlsafe(PKCE_VERIFIER_BYTES),
        )


def par_form(
    *, client_id: str, secrets_: LoginSecrets, scopes: Sequence[str], acr_values: str
) -> dict[str, str]:
    """The PAR body (spec §2 step 2: every parameter the ref-impl requires)."""
    return {
        "client_id": client_id,
        "state": secrets_.state,
        "redirect_uri": callback_url(client_id),
        "code_challenge": pkce_challenge(secrets_.code_verifier),
        "code_challenge_method": "S256",  # spec §2 step 2: plain is refused
        "response_type": "code",
        "nonce": secrets_.nonce,
        "scope": " ".join(scopes),
        "acr_values": acr_values,
    }


def request_uri_of(body: object) -> str:
    """``request_uri`` of the IdP's 201 PAR answer (RFC 9126 §2.2)."""
    value = body.get("request_uri") if isinstance(body, Mapping) else None
    if not isinstance(value, str) or not 0 < len(value) <= MAX_REQUEST_URI_CHARS:
        raise DemoRpError("the IdP's PAR answer has no usable request_uri", status_code=502)
    return value


def authorization_url(*, endpoint: str, client_id: str, request_uri: str) -> str:
    """spec §2 step 3: ``authorization_endpoint?client_id&request_uri`` and nothing else."""
    separator = "&" if "?" in endpoint else "?"
    return endpoint + separator + urlencode({"client_id": client_id, "request_uri": request_uri})


def token_form(*, client_id: str, code: str, code_verifier: str) -> dict[str, str]:
    """spec §2 step 6: the authorization-code grant with PKCE."""
    return {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": code_verifier,
        "client_id": client_id,
        "redirect_uri": callback_url(client_id),
    }


def same_secret(expected: str, given: str) -> bool:
    """CONVENTIONS 8: constant-time comparison of a state, nonce or cookie."""
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8"))


# -- step 8: the ID token -----------------------------------------------------------------------
def verify_signed_jwks(token: str, *, idp: IdpMetadata, now: int) -> dict[str, Any]:
    """The IdP's signed JWKS (spec §3.1), verified with its entity-statement keys (spec §2 step 8,
    gemSpec_IDP_Sek A_22655-02 as cited by oviva); only P-256 ``use: sig`` keys are kept."""
    try:
        verified = verify_compact(token, jwks=idp.federation_jwks, typ=TYP_SIGNED_JWKS)
        if verified.claims.get("iss") != idp.issuer:
            raise DemoRpError("the IdP's signed JWKS is issued by someone else")
        if "exp" in verified.claims:
            check_times(verified.claims, now=now, require_iat=False)
        keys = [dict(k) for k in jwks_keys(verified.claims) if k.get("use", "sig") == "sig"]
        for key in keys:
            p256_public_key(key, use="sig")
    except JoseError as exc:
        raise DemoRpError(f"the IdP's signed JWKS is refused: {exc}") from None
    return {"keys": keys}


def _audience_is(claims: Mapping[str, Any], client_id: str) -> bool:
    aud = claims.get("aud")
    if isinstance(aud, str):
        return aud == client_id
    return isinstance(aud, list) and aud == [client_id]


def verify_id_token(
    token: object,
    *,
    encryption_key: ec.EllipticCurvePrivateKey,
    token_jwks: Mapping[str, Any],
    issuer: str,
    client_id: str,
    nonce: str,
    now: int,
) -> Mapping[str, Any]:
    """The claims of an encrypted ID token after every check of spec §2 step 8.

    Decrypt (ECDH-ES + A256GCM to our enc key), verify the ES256 JWS with the IdP's signed-JWKS
    keys (never with a key named by the token), then ``iss`` = the IdP, ``aud`` = us,
    ``nonce`` = the one we sent (constant time), and ``exp``/``iat`` with the allowed skew.
    """
    if not isinstance(token, str):
        raise DemoRpError("the token response carries no id_token", status_code=502)
    try:
        inner = decrypt_id_token(token, private_key=encryption_key)
        claims = verify_compact(inner, jwks=token_jwks, typ=TYP_ID_TOKEN).claims
        check_times(claims, now=now, require_iat=True)
    except JoseError as exc:
        raise DemoRpError(f"the ID token is refused: {exc}") from None
    if claims.get("iss") != issuer:
        raise DemoRpError("the ID token is refused: it was issued by another issuer")
    if not _audience_is(claims, client_id):
        raise DemoRpError("the ID token is refused: it is meant for another audience")
    got = claims.get("nonce")
    if not isinstance(got, str) or not same_secret(nonce, got):
        raise DemoRpError("the ID token is refused: the nonce does not match")
    return claims
