"""Pushed authorization request (RFC 9126) as profiled by gematik for the sectoral IdP.

Source: gematik-sectoral-idp.md §2 step 2 (gsi ``FedIdpController.postPar`` and
``RequestValidator``; gsi-testsuite ``idpsektoralPushedAuthorizationEndpoint.feature``).

The checks run in gematik's order, so a request with two faults reports the one gsi reports:

0. form hygiene (ours): at most one value per known parameter, size limits;
1. parameter binding (Spring, in declaration order): ``acr_values`` present (the handler
   mapping condition), then presence of each required parameter, then the ``claims``
   structure (its converter runs while binding);
2. constraint validation: non-empty values, client_id URL, S256, ``response_type=code``,
   ``acr_values``, ``amr``; then (ours) the S256 challenge syntax, ``prompt``, ``max_age``;
3. a. ``redirect_uri`` syntax — this ends :func:`parse_par`; the caller then resolves the RP
   (automatic registration, step c) and calls :func:`validate_par`, which goes on with
   d. ID-token version, e. essential acr/amr, f. mTLS client certificate, g. redirect_uri
   registered, scopes registered, scopes supported, ``openid`` present and (ours) every
   claim of the ``claims`` parameter covered by a registered scope.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from urllib.parse import urlsplit

from healthid.protocol.oauth import pkce
from healthid.protocol.oauth.acr_amr import (
    ACR_VALUES,
    AMR_PARAMETER_VALUES,
    check_essential_acr_amr,
    negotiate_id_token_version,
)
from healthid.protocol.oauth.claims import (
    SCOPE_OPENID,
    SCOPES_SUPPORTED,
    ClaimsRequest,
    claims_for_scopes,
    parse_claims,
)
from healthid.protocol.oauth.client import RegisteredClient, check_client_cert
from healthid.protocol.oauth.errors import (
    InvalidRequestError,
    InvalidScopeError,
    ServerError,
    UnsupportedResponseTypeError,
)
from healthid.protocol.oauth.form import (
    Form,
    RandomBytes,
    check_form,
    non_empty,
    optional,
    required,
)

REQUEST_URI_TTL = 90  # seconds; gsi.requestUriTTL, auth-endpoint TC 004 (spec §8)
REQUEST_URI_PREFIX = "urn:ietf:params:oauth:request_uri:"  # RFC 9126 §2.2
REQUEST_URI_RANDOM_BYTES = 32  # 256 bits (at least 128 required)
PAR_STATUS_CODE = 201  # RFC 9126 §2.2

MAX_CLIENT_ID_LENGTH = 512
MAX_REDIRECT_URI_LENGTH = 2048
MAX_STATE_LENGTH = 512
MAX_NONCE_LENGTH = 512
MAX_SCOPE_LENGTH = 1024
MAX_CLAIMS_LENGTH = 4096
MAX_CODE_CHALLENGE_LENGTH = 128  # the S256 syntax check then requires exactly 43
MAX_TOKEN_LENGTH = 64  # code_challenge_method, response_type
MAX_ACR_VALUES_LENGTH = 128
MAX_AMR_LENGTH = 128
MAX_PROMPT_LENGTH = 128
MAX_MAX_AGE_DIGITS = 10

PAR_PARAMETER_LIMITS: Mapping[str, int] = MappingProxyType(
    {
        "client_id": MAX_CLIENT_ID_LENGTH,
        "state": MAX_STATE_LENGTH,
        "redirect_uri": MAX_REDIRECT_URI_LENGTH,
        "code_challenge": MAX_CODE_CHALLENGE_LENGTH,
        "code_challenge_method": MAX_TOKEN_LENGTH,
        "response_type": MAX_TOKEN_LENGTH,
        "nonce": MAX_NONCE_LENGTH,
        "scope": MAX_SCOPE_LENGTH,
        "acr_values": MAX_ACR_VALUES_LENGTH,
        "amr": MAX_AMR_LENGTH,
        "claims": MAX_CLAIMS_LENGTH,
        "prompt": MAX_PROMPT_LENGTH,
        "max_age": MAX_MAX_AGE_DIGITS,
    }
)
# gsi FedIdpController.postPar parameter order (acr_values is also its mapping condition)
PAR_REQUIRED = (
    "client_id",
    "state",
    "redirect_uri",
    "code_challenge",
    "code_challenge_method",
    "response_type",
    "nonce",
    "scope",
    "acr_values",
)
RESPONSE_TYPE_CODE = "code"
PROMPT_VALUES = frozenset({"none", "login", "consent", "select_account"})  # PAR TC 013
_CLIENT_ID = re.compile(r"https://[^\s]+")
_CLIENT_ID_DEVELOPMENT = re.compile(r"https?://[^\s]+")  # a loopback federation has no TLS
_MAX_AGE = re.compile(r"[0-9]{1,10}")
_CONTROL = re.compile(r"[\x00-\x20\x7f]")


@dataclass(frozen=True, kw_only=True)
class ParParams:
    """The syntactically valid PAR parameters, before the RP is resolved."""

    client_id: str
    state: str
    redirect_uri: str
    code_challenge: str
    nonce: str
    scopes: tuple[str, ...]
    acr_values: str
    amr: str | None
    prompt: tuple[str, ...]
    max_age: int | None
    claims: ClaimsRequest


@dataclass(frozen=True, kw_only=True)
class ParRequest:
    """The validated PAR, stored under its request_uri for :data:`REQUEST_URI_TTL` seconds.

    ``essential_claims``/``optional_claims`` are what the user is asked to consent to
    (scope-derived claims are optional unless the ``claims`` parameter made them essential).
    """

    client_id: str
    state: str
    redirect_uri: str
    code_challenge: str
    nonce: str
    scopes: tuple[str, ...]
    acr_values: str
    amr: str | None
    prompt: tuple[str, ...]
    max_age: int | None
    essential_claims: tuple[str, ...]
    optional_claims: tuple[str, ...]
    essential_acr: tuple[str, ...]
    essential_amr: tuple[str, ...]
    id_token_version: str
    issued_at: int
    expires_at: int


@dataclass(frozen=True, kw_only=True)
class ParResponse:
    """RFC 9126 §2.2: HTTP 201 with ``Cache-Control: no-store``."""

    request_uri: str
    expires_in: int = REQUEST_URI_TTL

    def to_dict(self) -> dict[str, str | int]:
        return {"request_uri": self.request_uri, "expires_in": self.expires_in}


def new_request_uri(rng: RandomBytes) -> str:
    """A fresh request_uri: the RFC 9126 URN prefix and 256 random bits, base64url."""
    raw = rng(REQUEST_URI_RANDOM_BYTES)
    if len(raw) != REQUEST_URI_RANDOM_BYTES:
        raise ServerError("random source returned the wrong number of bytes")
    return REQUEST_URI_PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _split_scope(scope: str) -> tuple[str, ...]:
    # RFC 6749 §3.3: space-delimited; keep the first occurrence of each, in order
    return tuple(dict.fromkeys(s for s in scope.split(" ") if s))


def _check_acr_values(acr_values: str) -> None:
    # gsi @Pattern: exactly one of the two gematik LoA values (PAR TC 003)
    if acr_values not in ACR_VALUES:
        raise InvalidRequestError(
            "acr_values must be gematik-ehealth-loa-high or gematik-ehealth-loa-substantial"
        )


def _check_amr(amr: str | None) -> None:
    # gsi @Pattern on amr; PAR TC 012 wants "amr: " in the description. PAR TC 010: any of
    # the six values is accepted with either acr_values; the combination is only a hint.
    if amr is not None and amr not in AMR_PARAMETER_VALUES:
        raise InvalidRequestError("amr: must be one of the urn:telematik:auth values")


def _parse_prompt(prompt: str | None) -> tuple[str, ...]:
    if prompt is None:
        return ()
    values = tuple(dict.fromkeys(prompt.split(" ")))
    if not values or not set(values) <= PROMPT_VALUES:
        raise InvalidRequestError("prompt has an unsupported value")  # allowed by PAR TC 014
    if "none" in values and len(values) > 1:  # OIDC Core §3.1.2.1
        raise InvalidRequestError("prompt none must not be combined with other values")
    return values


def _parse_max_age(max_age: str | None) -> int | None:
    if max_age is None:
        return None
    if _MAX_AGE.fullmatch(max_age) is None:  # allowed by PAR TC 016 (-123)
        raise InvalidRequestError("max_age must be a non-negative integer")
    return int(max_age)


def _check_redirect_uri_syntax(redirect_uri: str) -> None:
    """gsi validateRedirectUri: it must parse as a URI; RFC 6749 §3.1.2: absolute, no fragment."""
    if _CONTROL.search(redirect_uri):
        raise InvalidRequestError("Invalid redirect uri")
    try:
        parts = urlsplit(redirect_uri)
    except ValueError:
        raise InvalidRequestError("Invalid redirect uri") from None
    if not parts.scheme or "#" in redirect_uri:
        raise InvalidRequestError("Invalid redirect uri")


def parse_par(form: Form, *, allow_http: bool = False) -> ParParams:
    """Steps 0 to 3a: everything that needs no knowledge of the RP, in gematik's order.

    ``allow_http`` admits http client_ids: development only (DESIGN.md, loopback)."""
    check_form(form, PAR_PARAMETER_LIMITS)
    required(form, "acr_values")  # gsi: the handler mapping requires acr_values first
    values = {name: required(form, name) for name in PAR_REQUIRED}
    claims = parse_claims(optional(form, "claims"))
    amr = optional(form, "amr")

    client_id = non_empty("client_id", values["client_id"])
    pattern = _CLIENT_ID_DEVELOPMENT if allow_http else _CLIENT_ID
    if pattern.fullmatch(client_id) is None:  # an entity identifier (OpenID Federation)
        raise InvalidRequestError("client_id must be an https URL")
    state = non_empty("state", values["state"])
    redirect_uri = non_empty("redirect_uri", values["redirect_uri"])
    code_challenge = non_empty("code_challenge", values["code_challenge"])
    # gemSpec_IDP_Sek (spec §2 step 2): PKCE with S256 only, plain -> 400 invalid_request
    pkce.check_challenge_method(non_empty("code_challenge_method", values["code_challenge_method"]))
    response_type = non_empty("response_type", values["response_type"])
    if response_type != RESPONSE_TYPE_CODE:
        raise UnsupportedResponseTypeError("response_type must be code")
    nonce = non_empty("nonce", values["nonce"])
    scope = non_empty("scope", values["scope"])
    acr_values = non_empty("acr_values", values["acr_values"])
    _check_acr_values(acr_values)
    _check_amr(amr)
    pkce.check_challenge(code_challenge)
    prompt = _parse_prompt(optional(form, "prompt"))
    max_age = _parse_max_age(optional(form, "max_age"))

    _check_redirect_uri_syntax(redirect_uri)
    return ParParams(
        client_id=client_id,
        state=state,
        redirect_uri=redirect_uri,
        code_challenge=code_challenge,
        nonce=nonce,
        scopes=_split_scope(scope),
        acr_values=acr_values,
        amr=amr,
        prompt=prompt,
        max_age=max_age,
        claims=claims,
    )


def _check_scopes(client: RegisteredClient, scopes: tuple[str, ...]) -> None:
    """Step g (gsi validateParParams), then ``openid`` present (spec §2 step 2)."""
    if not set(scopes) <= client.scopes:
        raise InvalidScopeError(
            "Content of parameter scope exceeds scopes found in entity statement"
        )
    if not set(scopes) <= SCOPES_SUPPORTED:
        raise InvalidScopeError("More scopes requested in PAR than supported.")
    if SCOPE_OPENID not in scopes:
        raise InvalidScopeError("scope must contain openid")


def validate_par(
    form: Form,
    *,
    client: RegisteredClient,
    client_cert: bytes | None,
    now: int,
    allow_http: bool = False,
    parsed: ParParams | None = None,
) -> ParRequest:
    """Validate a PAR of the registered ``client`` presented with mTLS ``client_cert`` (DER).

    ``client`` must be the registration of the form's ``client_id`` (the caller resolves it
    after :func:`parse_par`; an unknown or untrustworthy RP is the caller's 4xx). ``parsed``:
    what :func:`parse_par` made of this very ``form`` (with the same ``allow_http``), if the
    caller has it already.
    """
    params = parse_par(form, allow_http=allow_http) if parsed is None else parsed
    if client.client_id != params.client_id:
        raise ServerError("registered client does not match client_id")
    claims = params.claims
    # step b: claims implied by the scopes are optional unless made essential
    scope_claims = claims_for_scopes(params.scopes)
    optional_claims = (scope_claims | set(claims.optional)) - set(claims.essential)
    # step d (spec §6.3), step e (spec §6.2, A_24547)
    version = negotiate_id_token_version(client.id_token_versions_supported)
    check_essential_acr_amr(claims.essential_acr, claims.essential_amr, id_token_version=version)
    check_client_cert(client, client_cert)
    # step g: exact match against the registered redirect_uris (RFC 9700 §4.1.3)
    if params.redirect_uri not in client.redirect_uris:
        raise InvalidRequestError("Content of parameter redirect_uri not found in entity statement")
    _check_scopes(client, params.scopes)
    # ours: the claims parameter must not reach beyond the RP's registered scopes
    allowed = claims_for_scopes(client.scopes)
    if not (set(claims.essential) | set(claims.optional)) <= allowed:
        raise InvalidRequestError(
            "claims requests a claim outside the scopes registered for the client"
        )
    return ParRequest(
        client_id=params.client_id,
        state=params.state,
        redirect_uri=params.redirect_uri,
        code_challenge=params.code_challenge,
        nonce=params.nonce,
        scopes=params.scopes,
        acr_values=params.acr_values,
        amr=params.amr,
        prompt=params.prompt,
        max_age=params.max_age,
        essential_claims=claims.essential,
        optional_claims=tuple(sorted(optional_claims)),
        essential_acr=claims.essential_acr,
        essential_amr=claims.essential_amr,
        id_token_version=version,
        issued_at=now,
        expires_at=now + REQUEST_URI_TTL,
    )
