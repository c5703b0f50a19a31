"""The authorization endpoint after PAR, the consent step, the code and the redirect.

Sources: gematik-sectoral-idp.md §2 steps 3 to 5 (gsi ``FedIdpController.getLandingPage``,
``getRequestedEssentialAndOptionalClaims``, ``getAuthorizationCode``,
``RequestValidator.validateAuthRequestParams``, ``SektoralIdpAuthenticator``), §5 "Consent",
§8 (lifetimes); gsi-testsuite ``idpsektoralAuthorizationEndpoint.feature`` TC 001 to 004.

The request_uri and the code are one-time artefacts consumed atomically by the store
(CONVENTIONS 14); the functions here receive what the store returned, or None.
"""

from __future__ import annotations

import base64
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from healthid.protocol.oauth.acr_amr import id_token_amr
from healthid.protocol.oauth.errors import (
    AccessDeniedError,
    InvalidRequestError,
    InvalidRequestUriError,
    OAuthError,
    ServerError,
)
from healthid.protocol.oauth.form import Form, RandomBytes, check_form, non_empty, required
from healthid.protocol.oauth.par import MAX_CLIENT_ID_LENGTH, ParRequest
from healthid.protocol.oidc.loa import Assurance

# spec §8: single use; the ref has no separate TTL, "about 60 s or less" (inferred)
AUTHORIZATION_CODE_TTL = 60
AUTHORIZATION_CODE_RANDOM_BYTES = 32  # 256 bits (at least 128 required)
MAX_REQUEST_URI_LENGTH = 512
MAX_SELECTED_CLAIMS = 32

AUTHORIZATION_PARAMETER_LIMITS: Mapping[str, int] = MappingProxyType(
    {"request_uri": MAX_REQUEST_URI_LENGTH, "client_id": MAX_CLIENT_ID_LENGTH}
)


@dataclass(frozen=True, kw_only=True)
class AuthorizationRequest:
    """``authorization_endpoint?client_id&request_uri`` and nothing else (spec §2 step 3)."""

    request_uri: str
    client_id: str


@dataclass(frozen=True, kw_only=True)
class Consent:
    """The claims the user agreed to release: all essential ones, none beyond the request."""

    claims: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class IssuedCode:
    """What the store keeps under an authorization code until the token request."""

    code: str
    client_id: str
    redirect_uri: str
    code_challenge: str
    nonce: str
    id_token_version: str
    consented_claims: tuple[str, ...]
    issued_at: int
    expires_at: int


def parse_authorization_request(query: Form) -> AuthorizationRequest:
    """Both parameters present and non-empty, once each (auth-endpoint TC 003: 400)."""
    check_form(query, AUTHORIZATION_PARAMETER_LIMITS)
    request_uri = required(query, "request_uri")
    client_id = required(query, "client_id")
    return AuthorizationRequest(
        request_uri=non_empty("request_uri", request_uri),
        client_id=non_empty("client_id", client_id),
    )


def check_authorization_request(
    request: AuthorizationRequest, par: ParRequest | None, *, now: int
) -> ParRequest:
    """The stored PAR for ``request.request_uri`` (None if unknown), checked in gsi's order.

    Unknown or expired request_uri: 400 ``invalid_request_uri`` (TC 002/004 accept it);
    a client_id that is not the PAR's: 400 ``invalid_request`` (TC 002). Both are rendered.
    """
    if par is None:
        raise InvalidRequestUriError("unknown request_uri, no session found")
    # RFC 9126 §2.2 / spec §8: the request_uri lives REQUEST_URI_TTL seconds
    if now >= par.expires_at:
        raise InvalidRequestUriError("request_uri expired")
    # spec §2 step 4: client_id must belong to the request_uri
    if request.client_id != par.client_id:
        raise InvalidRequestError("unknown client_id")
    return par


def requested_claims(par: ParRequest) -> dict[str, list[str]]:
    """The body of the Authenticator app's ``app_version`` call (spec §1.1)."""
    return {
        "requested_essential_claims": list(par.essential_claims),
        "requested_optional_claims": list(par.optional_claims),
    }


def consent(par: ParRequest, selected_claims: Collection[str]) -> Consent:
    """The user's selection: every essential claim, nothing beyond what was requested.

    spec §5 "Consent" (gsi ``getSelectedClaimsSet``). Unlike the ref, optional claims the
    user did not select are not added back.
    """
    if len(selected_claims) > MAX_SELECTED_CLAIMS:
        raise InvalidRequestError("too many selected claims")
    selected = frozenset(selected_claims)
    if not set(par.essential_claims) <= selected:
        raise InvalidRequestError("selected claims are missing essential claims in PAR")
    if not selected <= set(par.essential_claims) | set(par.optional_claims):
        raise InvalidRequestError("selected claims exceed scopes in PAR")
    return Consent(claims=tuple(sorted(selected)))


def check_assurance(par: ParRequest, assurance: Assurance) -> None:
    """Essential acr/amr the RP asked for must have been achieved (OIDC Core §5.5.1.1).

    An unmet essential requirement is a failed authentication: ``access_denied``, which may be
    redirected (the PAR validated client and redirect_uri).
    """
    if par.essential_acr and assurance.acr not in par.essential_acr:
        raise AccessDeniedError("acr: the essential acr was not achieved")
    amr = id_token_amr(assurance, par.id_token_version)
    if par.essential_amr and not set(amr) & set(par.essential_amr):
        raise AccessDeniedError("amr: no essential amr was achieved")


def new_authorization_code(rng: RandomBytes) -> str:
    """256 random bits, base64url (at least 128 bits: RFC 6749 §10.10)."""
    raw = rng(AUTHORIZATION_CODE_RANDOM_BYTES)
    if len(raw) != AUTHORIZATION_CODE_RANDOM_BYTES:
        raise ServerError("random source returned the wrong number of bytes")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _with_query(redirect_uri: str, params: Mapping[str, str]) -> str:
    """Append ``params`` to the query, keeping the registered one (RFC 6749 §3.1.2)."""
    parts = urlsplit(redirect_uri)
    extra = urlencode(params, quote_via=quote)
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def issue_code(
    par: ParRequest, *, consent: Consent, now: int, rng: RandomBytes
) -> tuple[str, IssuedCode]:
    """The 302 ``Location`` ``redirect_uri?code&state`` and the state to store under the code.

    spec §2 step 5: ``state`` is the RP's, echoed. gsi sends no ``iss`` (RFC 9207) and its
    metadata does not announce it, so neither do we.
    """
    code = new_authorization_code(rng)
    issued = IssuedCode(
        code=code,
        client_id=par.client_id,
        redirect_uri=par.redirect_uri,
        code_challenge=par.code_challenge,
        nonce=par.nonce,
        id_token_version=par.id_token_version,
        consented_claims=consent.claims,
        issued_at=now,
        expires_at=now + AUTHORIZATION_CODE_TTL,
    )
    return _with_query(par.redirect_uri, {"code": code, "state": par.state}), issued


def error_redirect(par: ParRequest, error: OAuthError) -> str:
    """The ``Location`` for an error sent back to the RP (RFC 6749 §4.1.2.1).

    Taking the validated :class:`ParRequest` is the proof that client and redirect_uri were
    validated (CONVENTIONS 4). A non-redirectable error must be rendered instead.
    """
    if not error.redirectable:
        raise ValueError(f"{error.error} must be rendered, not redirected")
    params = {"error": error.error, "error_description": error.description, "state": par.state}
    return _with_query(par.redirect_uri, params)
