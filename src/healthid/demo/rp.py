"""The DEMO relying party ("Fachdienst"): ``healthid demo-rp`` (issue #4; development only).

A small Starlette app that logs a user in at a healthid IdP the way a TI relying party does
(spec §1.3, §2), so the whole flow can be tried locally:

- ``/.well-known/openid-federation``: its self-signed entity configuration (spec §4 step 5:
  ``openid_relying_party`` with redirect_uris, scope, jwks with the TLS certificate as
  ``use: sig`` + ``x5c`` and the ``use: enc`` key, ``self_signed_tls_client_auth``,
  ``ti_features_supported``; authority_hints = the federation master; 24 h lifetime);
- ``/``: a page with a "Mit GesundheitsID anmelden" button;
- ``/login``: discover and verify the IdP, PAR over mTLS (PKCE S256, state, nonce), remember
  the flow secrets server-side, redirect to ``authorization_endpoint?client_id&request_uri``.
  ``/login?format=url`` returns that URL as text instead, so the CLI wallet
  (``healthid wallet authorize URL``) can complete the login headlessly;
- ``/callback?code&state``: check state, token request over mTLS, decrypt and verify the ID
  token (spec §2 step 8), show its claims (or the IdP's ``error``).

TRUST IN THE IdP: with a pinned master JWKS (``--fedmaster-jwks``) the IdP is verified through
the federation master, as spec §2 step 1 requires. WITHOUT one, the IdP's federation keys are
TRUSTED ON FIRST USE from its own self-signed statement and pinned in memory: that proves
nothing about who the IdP is and is acceptable only for a local demo. The index page says
which mode is active.

Flow state: each login's state, nonce and PKCE verifier live in a bounded in-memory store
(:class:`PendingLogins`, TTL :data:`PENDING_LOGIN_TTL_SECONDS`), keyed by ``state`` and taken
atomically at the callback (CONVENTIONS 14: a replayed callback finds nothing). A browser
login is bound to a random HttpOnly, SameSite=Lax cookie that the callback must present
(login CSRF); a headless ``format=url`` login is bound only to its unguessable state.

It refuses to run in production mode and its keys are TEST-ONLY files.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from healthid.demo.rp_http import TRUST_FIRST_USE, TRUST_MASTER, IdpClient
from healthid.demo.rp_keys import FEDERATION_JWKS_FILE, DemoRpKeys, load_or_create_rp_keys
from healthid.demo.rp_pages import SECURITY_HEADERS, claims_page, error_page, index_page
from healthid.demo.rp_protocol import (
    ACR_HIGH,
    DEFAULT_SCOPES,
    DemoRpError,
    LoginSecrets,
    authorization_url,
    entity_configuration_claims,
    par_form,
    same_secret,
    sign_rp_entity_configuration,
    token_form,
    verify_id_token,
)
from healthid.demo.rp_state import PENDING_LOGIN_TTL_SECONDS, PendingLogins

COOKIE_NAME: Final = "healthid_demo_rp_login"
COOKIE_BYTES: Final = 32
MAX_QUERY_VALUE_CHARS: Final = 2048
ENTITY_STATEMENT_MEDIA_TYPE: Final = "application/entity-statement+jwt;charset=UTF-8"
KVNR_CLAIM: Final = "urn:telematik:claims:id"  # spec §5
DEFAULT_ORGANIZATION_NAME: Final = "healthid Demo-Fachdienst (TEST ONLY)"
DEFAULT_CONTACTS: Final = ("demo-rp@example.invalid",)


class DemoRpRefused(RuntimeError):  # noqa: N818 - the name says the state
    """The demo relying party was asked to run in production mode."""


def _entity_identifier(value: str, what: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError(f"{what} must be an http(s) URL")
    if parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError(f"{what} may not carry a query, fragment or credentials")
    return value.rstrip("/")


@dataclass(frozen=True, kw_only=True)
class DemoRpConfig:
    """The demo RP's settings. ``base_url`` is its entity identifier and client_id.

    ``fedmaster_jwks``: the PINNED master key set; None means trust on first use of the IdP
    (module docstring).
    """

    base_url: str
    idp_url: str
    fedmaster_url: str
    data_dir: Path
    fedmaster_jwks: Mapping[str, Any] | None = None
    scopes: tuple[str, ...] = DEFAULT_SCOPES
    acr_values: str = ACR_HIGH
    organization_name: str = DEFAULT_ORGANIZATION_NAME
    contacts: tuple[str, ...] = field(default=DEFAULT_CONTACTS)

    def __post_init__(self) -> None:
        object.__setattr__(self, "base_url", _entity_identifier(self.base_url, "base_url"))
        object.__setattr__(self, "idp_url", _entity_identifier(self.idp_url, "idp_url"))
        object.__setattr__(
            self, "fedmaster_url", _entity_identifier(self.fedmaster_url, "fedmaster_url")
        )
        if "openid" not in self.scopes:
            raise ValueError("scopes must contain openid (spec §2 step 2)")


@dataclass(frozen=True, kw_only=True)
class StartedLogin:
    authorization_url: str
    cookie: str | None


class DemoRelyingParty:
    """The demo RP's flow (spec §2), between the routes and the IdP client."""

    def __init__(
        self,
        config: DemoRpConfig,
        *,
        keys: DemoRpKeys,
        idp: IdpClient,
        clock: Callable[[], float],
    ) -> None:
        self.config, self.keys, self.idp, self._clock = config, keys, idp, clock
        self.pending = PendingLogins(clock)

    @property
    def trust(self) -> str:
        return TRUST_FIRST_USE if self.config.fedmaster_jwks is None else TRUST_MASTER

    def entity_configuration(self) -> str:
        claims = entity_configuration_claims(
            entity_id=self.config.base_url,
            fedmaster_url=self.config.fedmaster_url,
            keys=self.keys,
            scopes=self.config.scopes,
            organization_name=self.config.organization_name,
            contacts=self.config.contacts,
            now=int(self._clock()),
        )
        return sign_rp_entity_configuration(claims, keys=self.keys)

    async def begin(self, *, headless: bool) -> StartedLogin:
        """spec §2 steps 1-3: discover the IdP, PAR, remember the secrets, the URL to go to."""
        idp = await self.idp.discover()
        login_secrets = LoginSecrets.generate()
        form = par_form(
            client_id=self.config.base_url,
            secrets_=login_secrets,
            scopes=self.config.scopes,
            acr_values=self.config.acr_values,
        )
        request_uri = await self.idp.push(idp, form)
        cookie = None if headless else secrets.token_urlsafe(COOKIE_BYTES)
        self.pending.start(login_secrets, idp, cookie)
        url = authorization_url(
            endpoint=idp.authorization_endpoint,
            client_id=self.config.base_url,
            request_uri=request_uri,
        )
        return StartedLogin(authorization_url=url, cookie=cookie)

    async def finish(self, query: Mapping[str, str], cookie: str | None) -> Mapping[str, Any]:
        """spec §2 steps 5-8: the callback; the verified ID-token claims."""
        state = query.get("state", "")
        login = self.pending.take(state) if state else None
        if "error" in query:  # the IdP's error redirect; the pending login is spent either way
            description = query.get("error_description", "")
            detail = f"{query['error']}" + (f": {description}" if description else "")
            raise DemoRpError(f"the IdP answered with an error: {detail}")
        if login is None:
            raise DemoRpError("unknown, expired or already used state: start the login again")
        if login.browser_binding is not None and not (
            cookie is not None and same_secret(login.browser_binding, cookie)
        ):
            raise DemoRpError("this login was started in another browser (login cookie missing)")
        code = query.get("code", "")
        if not code:
            raise DemoRpError("the callback carries no code")
        form = token_form(
            client_id=self.config.base_url,
            code=code,
            code_verifier=login.secrets.code_verifier,
        )
        id_token = await self.idp.redeem(login.idp, form)
        token_keys = await self.idp.token_keys(login.idp)
        return verify_id_token(
            id_token,
            encryption_key=self.keys.encryption_key,
            token_jwks=token_keys,
            issuer=login.idp.issuer,
            client_id=self.config.base_url,
            nonce=login.secrets.nonce,
            now=int(self._clock()),
        )


def _html(body: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status_code, headers=SECURITY_HEADERS)


def _query(request: Request) -> dict[str, str]:
    """The callback's query, each parameter once and bounded (else a refusal)."""
    params = request.query_params
    for name in params:
        values = params.getlist(name)
        if len(values) != 1 or len(values[0]) > MAX_QUERY_VALUE_CHARS:
            raise DemoRpError(f"the query parameter {name[:40]} is repeated or too long")
    return dict(params)


def create_demo_rp_app(
    config: DemoRpConfig,
    *,
    production: bool,
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """The demo RP's Starlette app; :class:`DemoRpRefused` in production mode.

    ``transport`` replaces the network for calls to the master and the IdP (tests). Keys are
    created under ``config.data_dir`` on first start.
    """
    if production:
        raise DemoRpRefused("the demo relying party never runs in production")
    keys = load_or_create_rp_keys(
        config.data_dir, common_name=urlsplit(config.base_url).hostname or "demo-rp"
    )
    client = IdpClient(
        client_id=config.base_url,
        idp_entity_id=config.idp_url,
        master_entity_id=config.fedmaster_url,
        master_jwks=config.fedmaster_jwks,
        keys=keys,
        key_dir=config.data_dir,
        clock=clock,
        transport=transport,
    )
    rp = DemoRelyingParty(config, keys=keys, idp=client, clock=clock)
    secure_cookie = config.base_url.startswith("https://")

    async def entity_configuration(_request: Request) -> Response:
        return Response(
            rp.entity_configuration(),
            media_type=ENTITY_STATEMENT_MEDIA_TYPE,
            headers={"Cache-Control": "no-cache"},
        )

    async def index(_request: Request) -> Response:
        return _html(index_page(client_id=config.base_url, idp=config.idp_url, trust=rp.trust))

    async def login(request: Request) -> Response:
        headless = request.query_params.get("format") == "url"
        try:
            started = await rp.begin(headless=headless)
        except DemoRpError as exc:
            if headless:
                return PlainTextResponse(str(exc), status_code=exc.status_code)
            return _html(error_page(str(exc)), exc.status_code)
        if started.cookie is None:
            return PlainTextResponse(
                started.authorization_url + "\n", headers={"Cache-Control": "no-store"}
            )
        response = RedirectResponse(started.authorization_url, status_code=303)
        response.headers.update(SECURITY_HEADERS)
        response.set_cookie(
            COOKIE_NAME,
            started.cookie,
            max_age=PENDING_LOGIN_TTL_SECONDS,
            path="/",
            httponly=True,
            samesite="lax",
            secure=secure_cookie,
        )
        return response

    async def callback(request: Request) -> Response:
        try:
            claims = await rp.finish(_query(request), request.cookies.get(COOKIE_NAME))
        except DemoRpError as exc:
            response: Response = _html(error_page(str(exc)), exc.status_code)
        else:
            page = claims_page(
                claims, trust=rp.trust, requested_acr=config.acr_values, kvnr_claim=KVNR_CLAIM
            )
            response = _html(page)
        response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="lax")
        return response

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await client.aclose()

    app = Starlette(
        routes=[
            Route("/.well-known/openid-federation", entity_configuration, methods=["GET"]),
            Route("/", index, methods=["GET"]),
            Route("/login", login, methods=["GET"]),
            Route("/callback", callback, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.relying_party = rp
    return app


def load_master_jwks(path: Path) -> dict[str, Any]:
    """The pinned master JWKS file (what ``healthid fedmaster`` writes beside its key)."""
    value = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(value, dict) or not isinstance(value.get("keys"), list):
        raise ValueError(f"{path} is not a JWKS")
    return value


def run_demo_rp(
    host: str,
    port: int,
    idp_url: str,
    data_dir: Path,
    fedmaster_url: str,
    *,
    base_url: str | None = None,
    fedmaster_jwks_file: Path | None = None,
    scopes: Sequence[str] = DEFAULT_SCOPES,
    production: bool = False,
) -> None:
    """Serve the demo RP (``healthid demo-rp``); refuses production mode."""
    import uvicorn

    if production:
        raise DemoRpRefused("the demo relying party never runs in production")
    config = DemoRpConfig(
        base_url=base_url or f"http://{host}:{port}",
        idp_url=idp_url,
        fedmaster_url=fedmaster_url,
        data_dir=data_dir,
        fedmaster_jwks=None
        if fedmaster_jwks_file is None
        else load_master_jwks(fedmaster_jwks_file),
        scopes=tuple(scopes),
    )
    app = create_demo_rp_app(config, production=production)
    trust = "federation master" if config.fedmaster_jwks else "TRUST ON FIRST USE (demo only)"
    print(
        f"demo relying party {config.base_url} (TEST ONLY) on http://{host}:{port}/\n"
        f"IdP: {config.idp_url}; trust in the IdP: {trust}\n"
        f'register it at the development master: entity_id = "{config.base_url}", '
        f'jwks_file = "{(data_dir / FEDERATION_JWKS_FILE).resolve()}"\n'
        f"headless: curl -s {config.base_url}/login?format=url | "
        "xargs healthid wallet --dir ... authorize"
    )
    uvicorn.run(app, host=host, port=port, log_level="info", server_header=False)
