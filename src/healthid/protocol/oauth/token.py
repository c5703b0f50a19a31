"""The token request (authorization code grant with PKCE) and the ID-token claim set.

Sources: gematik-sectoral-idp.md §2 steps 6 and 7 (gsi ``FedIdpController.getTokensForCode``,
``RequestValidator.verify*``), §5 "ID token" (gsi ``IdTokenBuilder``), §6.2 (amr per version),
§8 (ID token 300 s); gsi-testsuite ``idpsektoralTokenEndpoint.feature`` TC 001 to 011 and
``idToken.feature`` ID_TOKEN 002, 003, 005. Signing and encryption are done elsewhere (JOSE).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from healthid.protocol.oauth import pkce
from healthid.protocol.oauth.acr_amr import ACR_VALUES, ID_TOKEN_VERSION_2, id_token_amr, was_sso
from healthid.protocol.oauth.authorize import IssuedCode
from healthid.protocol.oauth.client import RegisteredClient, check_client_cert
from healthid.protocol.oauth.errors import (
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    ServerError,
    UnauthorizedClientError,
    UnsupportedGrantTypeError,
)
from healthid.protocol.oauth.form import Form, check_form, non_empty, required
from healthid.protocol.oauth.par import MAX_CLIENT_ID_LENGTH, MAX_REDIRECT_URI_LENGTH
from healthid.protocol.oidc.loa import ACR_SUBSTANTIAL, Assurance

GRANT_TYPE_AUTHORIZATION_CODE = "authorization_code"
ID_TOKEN_LIFETIME = 300  # seconds; spec §8, ID_TOKEN_003 (strictly between 299 and 301)
TOKEN_EXPIRES_IN = 300  # the token response's expires_in (spec §2 step 7)
MAX_CODE_LENGTH = 128
MAX_GRANT_TYPE_LENGTH = 64
MAX_SUB_LENGTH = 255  # OIDC Core §2: sub MUST NOT exceed 255 ASCII characters
CLAIM_CONSENT = "urn:telematik:auth:consent"  # v2, acr substantial (ID_TOKEN_005)
CLAIM_INTERACTIVE = "urn:telematik:auth:interactive"  # v2, silent after SSO

TOKEN_PARAMETER_LIMITS: Mapping[str, int] = MappingProxyType(
    {
        "grant_type": MAX_GRANT_TYPE_LENGTH,
        "code": MAX_CODE_LENGTH,
        "code_verifier": pkce.CODE_VERIFIER_MAX_LENGTH,
        "client_id": MAX_CLIENT_ID_LENGTH,
        "redirect_uri": MAX_REDIRECT_URI_LENGTH,
    }
)
# gsi getTokensForCode parameter order (code is also its mapping condition)
TOKEN_REQUIRED = ("grant_type", "code", "code_verifier", "client_id", "redirect_uri")


@dataclass(frozen=True, kw_only=True)
class TokenRequest:
    code: str
    code_verifier: str
    client_id: str
    redirect_uri: str


@dataclass(frozen=True, kw_only=True)
class TokenGrant:
    """A redeemed code: what the ID token is built from."""

    client_id: str
    nonce: str
    id_token_version: str
    consented_claims: tuple[str, ...]


def parse_token_request(form: Form) -> TokenRequest:
    """Presence and syntax, in gsi's order (token TC 001, 003)."""
    check_form(form, TOKEN_PARAMETER_LIMITS)
    required(form, "code")  # gsi: the handler mapping requires code first
    values = {name: required(form, name) for name in TOKEN_REQUIRED}
    grant_type = non_empty("grant_type", values["grant_type"])
    if grant_type != GRANT_TYPE_AUTHORIZATION_CODE:  # RFC 6749 §5.2
        raise UnsupportedGrantTypeError("grant_type must be authorization_code")
    return TokenRequest(
        code=non_empty("code", values["code"]),
        code_verifier=non_empty("code_verifier", values["code_verifier"]),
        client_id=non_empty("client_id", values["client_id"]),
        redirect_uri=non_empty("redirect_uri", values["redirect_uri"]),
    )


def redeem_code(
    request: TokenRequest,
    issued: IssuedCode | None,
    *,
    client: RegisteredClient,
    client_cert: bytes | None,
    now: int,
) -> TokenGrant:
    """Check the token request against what the store returned for ``request.code``.

    gsi's order: code known, redirect_uri, code_verifier, client_id, then the mTLS
    certificate of ``client`` (the registration of ``request.client_id``).
    """
    if client.client_id != request.client_id:
        raise ServerError("registered client does not match client_id")
    if issued is None or not hmac.compare_digest(
        issued.code.encode("ascii"), request.code.encode("utf-8")
    ):
        raise InvalidGrantError("unknown code")  # RFC 6749 §5.2
    if now >= issued.expires_at:
        raise InvalidGrantError("code expired")
    # spec §2 step 6: redirect_uri equal to the PAR's (RFC 6749 §4.1.3)
    if request.redirect_uri != issued.redirect_uri:
        raise InvalidGrantError("invalid redirect_uri")
    # RFC 7636 §4.6 with S256; token TC 007 expects invalid_request
    if not pkce.verify(request.code_verifier, issued.code_challenge):
        raise InvalidRequestError("invalid code_verifier")
    if request.client_id != issued.client_id:  # RFC 6749 §4.1.3: issued to this client
        raise InvalidGrantError("invalid client_id")
    try:
        check_client_cert(client, client_cert)
    except UnauthorizedClientError as exc:
        # gsi-testsuite TOKEN_004 expects invalid_.* here (PAR TC 006: unauthorized_client)
        raise InvalidClientError(exc.description, status_code=exc.status_code) from None
    return TokenGrant(
        client_id=issued.client_id,
        nonce=issued.nonce,
        id_token_version=issued.id_token_version,
        consented_claims=issued.consented_claims,
    )


def id_token_claims(
    *,
    issuer: str,
    grant: TokenGrant,
    sub: str,
    assurance: Assurance,
    auth_time: int,
    claim_values: Mapping[str, str],
    iat: int,
) -> dict[str, object]:
    """The ID-token body for ``grant.id_token_version`` (spec §5 "ID token", §6.2).

    ``sub`` is the caller's pairwise pseudonym for this RP. Of ``claim_values`` only the
    consented claims are released; a consented claim without a value is left out.
    """
    if not sub or len(sub) > MAX_SUB_LENGTH or not sub.isascii():
        raise ServerError("sub must be 1 to 255 ASCII characters")
    if assurance.acr not in ACR_VALUES:
        raise ServerError("assurance has an unknown acr")
    amr = id_token_amr(assurance, grant.id_token_version)
    if not amr:
        raise ServerError("assurance has no amr")
    claims: dict[str, object] = {
        "iss": issuer,
        "sub": sub,
        "aud": grant.client_id,
        "iat": iat,
        "exp": iat + ID_TOKEN_LIFETIME,  # ID_TOKEN_003
        "auth_time": auth_time,
        "nonce": grant.nonce,
        "acr": assurance.acr,
        "amr": list(amr),  # gemSpec_IDP_Sek A_23129-03: amr is a JSON array
    }
    if grant.id_token_version == ID_TOKEN_VERSION_2:
        # gsi IdTokenBuilder.modifyUserDataForIdTokenVersion (ID_TOKEN_005)
        if assurance.acr == ACR_SUBSTANTIAL:
            claims[CLAIM_CONSENT] = ["loa-substantial"]
        if was_sso(assurance):
            claims[CLAIM_INTERACTIVE] = "silent"
    for name in grant.consented_claims:
        if name in claims:  # a user claim never overrides a protocol claim
            raise ServerError("consented claim collides with a protocol claim")
        if name in claim_values:
            claims[name] = claim_values[name]
    return claims
