"""The host's ASGI application (embedded default: one process).

Routes are thin: parse, call, render. This issue serves liveness, readiness and the status of
the deployment (including ``tee: simulated`` in development); the federation, OIDC and wallet
endpoints of later issues mount here.
"""

from __future__ import annotations

import asyncio
import html
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Final

import asyncpg  # type: ignore[import-untyped]
import sqlalchemy.exc
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from healthid import __version__
from healthid.enclave.api import EnclaveClient, EnclaveUnavailable
from healthid.host.enclave_api import enclave_routes
from healthid.host.federation_api import (
    AppLinks,
    FederationPublisher,
    app_link_routes,
    federation_routes,
)
from healthid.host.json_io import JSONResponse
from healthid.host.observability import (
    SIGNING_ERROR,
    SIGNING_UNAVAILABLE,
    HostMetrics,
    ObservabilityMiddleware,
    probe,
    render_metrics,
)
from healthid.host.oidc_api import oidc_routes
from healthid.host.oidc_service import OidcService
from healthid.host.routing import IndexedRouter
from healthid.host.vau_api import vau_routes
from healthid.host.wallet_api import wallet_routes
from healthid.host.wallet_service import WalletService
from healthid.keys.base import KeyStoreError, KeyStoreUnavailable
from healthid.store.ephemeral import EphemeralStore, EphemeralStoreUnavailable, InvalidKeyError
from healthid.store.sql.audit import AuditBacklogFull

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
}


@dataclass(frozen=True, kw_only=True)
class HostDeps:
    mode: str
    public_url: str
    enclave: EnclaveClient
    engine: AsyncEngine
    ephemeral: EphemeralStore
    wallet: WalletService
    federation: FederationPublisher
    oidc: OidcService
    trusted_proxies: tuple[str, ...] = ()
    app_links: AppLinks = field(default_factory=AppLinks)


def _json(body: object, status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=SECURITY_HEADERS)


async def _temporarily_unavailable(_request: Request, _exc: Exception) -> Response:
    """A dependency is down or did not answer (the enclave process, Redis, PostgreSQL — e.g.
    during a failover): nothing was issued; try again. The OAuth error format, which the
    wallet API shares; never a bare 500."""
    return JSONResponse(
        {"error": "temporarily_unavailable", "error_description": "please try again later"},
        status_code=503,
        headers={**SECURITY_HEADERS, "Retry-After": "5"},
    )


LOG = logging.getLogger("healthid.host")
HSM: Final = "hsm"  # the dependency name of a PKCS#11 key store (healthid_dependency_up)
# Dependencies whose outage only some routes feel: reported by /readyz and /metrics, but the
# instance stays ready ("degraded"). Every instance shares the HSM; taking them all out of
# the load balancer would stop enrolment and login too, which need no signature.
DEGRADING: Final = frozenset({HSM})


def _route(request: Request) -> str:
    """The matched route's template for a log line (never the raw path: ids live there)."""
    return str(getattr(request.scope.get("route"), "path", "<unmatched>"))


def _server_error() -> Response:
    return JSONResponse(
        {"error": "server_error", "error_description": "the request could not be completed"},
        status_code=500,
        headers=SECURITY_HEADERS,
    )


async def _malformed_identifier(request: Request, exc: Exception) -> Response:
    """An identifier from the request (a code, request_uri or challenge id) that cannot even
    be a key of the ephemeral store (non-ASCII, spaces, too long): it names nothing we
    issued. A route should refuse it while parsing; this is the boundary's safety net, so
    that it is a 400, never a 500."""
    LOG.warning("unusable identifier refused at %s: %s", _route(request), exc)
    return JSONResponse(
        {"error": "invalid_request", "error_description": "malformed identifier"},
        status_code=400,
        headers=SECURITY_HEADERS,
    )


# What "a dependency is unavailable" looks like to the host (fail closed, issue #7 item 2).
UNAVAILABLE: tuple[type[Exception], ...] = (
    AuditBacklogFull,  # the audit trail cannot be written: nothing goes unrecorded
    EnclaveUnavailable,
    EphemeralStoreUnavailable,
    asyncpg.PostgresConnectionError,  # the hot statements' own driver connection
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # e.g. no host of a multi-host URL is read-write (failover)
    asyncpg.OperatorInterventionError,  # the server is shutting down or killed our session
    sqlalchemy.exc.TimeoutError,  # every pooled connection stayed busy for POOL_TIMEOUT_S
    ConnectionError,
)


async def _database_error(request: Request, exc: Exception) -> Response:
    """A database error: 503 when the connection is the problem (down, dropped, no writable
    primary during a failover), else the OAuth ``server_error`` as JSON."""
    if not isinstance(exc, sqlalchemy.exc.DBAPIError):  # registered for DBAPIError only
        raise exc
    if (
        exc.connection_invalidated
        or isinstance(exc, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError)
        or isinstance(exc.orig, UNAVAILABLE)
        or isinstance(getattr(exc.orig, "__cause__", None), UNAVAILABLE)
    ):
        return await _temporarily_unavailable(request, exc)
    return _server_error()


PLAIN_EGK_SUFFIX = "/egk"
DEVELOPMENT = "development"


def _plain_egk_in_development_only(routes: list[Route], mode: Callable[[], str]) -> list[Route]:
    """The eGK certificate names the person (KVNR, names): the wallet sends it through the
    VAU channel (``VAU-Op: egk_prove``, issue #6 item 4). The plain route stays for
    development tools only; in production it answers 404 and never sees the certificate."""

    def gate(route: Route) -> Route:
        plain = route.endpoint

        async def development_only(request: Request) -> Response:
            if mode() != DEVELOPMENT:
                return JSONResponse(
                    {
                        "error": "not_found",
                        "error_description": "send the eGK proof through the VAU channel "
                        "(POST /VAU/<cid>, VAU-Op: egk_prove)",
                    },
                    status_code=404,
                    headers=SECURITY_HEADERS,
                )
            response: Response = await plain(request)
            return response

        return Route(route.path, development_only, methods=route.methods)

    return [gate(r) if r.path.endswith(PLAIN_EGK_SUFFIX) else r for r in routes]


def create_app(
    deps_factory: Callable[[], Awaitable[HostDeps]],
    on_close: Callable[[], Awaitable[None]] | None = None,
    *,
    extra_routes: Sequence[BaseRoute] = (),
) -> Starlette:
    """Build the app; ``deps_factory`` opens the stores and the enclave at start-up."""
    state: dict[str, HostDeps] = {}

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        state["deps"] = await deps_factory()
        try:
            yield
        finally:
            if on_close is not None:
                await on_close()

    async def healthz(_request: Request) -> Response:
        return _json({"status": "ok"})

    async def dependencies() -> dict[str, bool]:
        """Each dependency answers within DEPENDENCY_CHECK_TIMEOUT (readiness and metrics)."""
        deps = state["deps"]

        async def database() -> None:
            async with deps.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))

        checks: dict[str, Callable[[], Awaitable[object]]] = {
            "database": database,
            "ephemeral_store": deps.ephemeral.ping,
            "enclave": deps.enclave.status,
        }
        # a key store with a health probe (PKCS#11: the HSM); key files have nothing to probe
        hsm_check = getattr(deps.federation.key_store, "check", None)
        if callable(hsm_check):
            checks[HSM] = lambda: asyncio.to_thread(hsm_check)  # PKCS#11 calls block
        return await probe(checks)

    async def readyz(_request: Request) -> Response:
        health = await dependencies()
        checks = {k: "ok" if up else "unavailable" for k, up in health.items()}
        ready = all(up for name, up in health.items() if name not in DEGRADING)
        status = "unavailable" if not ready else "ready" if all(health.values()) else "degraded"
        return _json({"status": status, "checks": checks}, 200 if ready else 503)

    async def metrics_endpoint(_request: Request) -> Response:
        """Prometheus text format; nothing personal (route templates, no raw paths)."""
        body = render_metrics(metrics, await dependencies())
        return Response(body, media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})

    async def status(_request: Request) -> Response:
        deps = state["deps"]
        enclave = await deps.enclave.status()
        return _json(
            {
                "service": "healthid",
                "version": __version__,
                "mode": deps.mode,
                "tee": enclave.tee,
                "warning": enclave.warning,
            }
        )

    async def index(_request: Request) -> Response:
        deps = state["deps"]
        enclave = await deps.enclave.status()
        banner = (
            f'<p class="warn"><strong>tee: {html.escape(enclave.tee)}</strong> — '
            f"{html.escape(enclave.warning)}</p>"
            if enclave.warning
            else f"<p>tee: {html.escape(enclave.tee)}</p>"
        )
        page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>healthid</title><style>body{{font-family:sans-serif;max-width:46em;margin:2em auto}}
.warn{{background:#fff3cd;border:1px solid #d39e00;padding:.6em}}</style></head><body>
<h1>healthid</h1><p>GesundheitsID sectoral identity provider and wallet backend,
version {html.escape(__version__)}, {html.escape(deps.mode)} mode.</p>{banner}
<ul><li><a href="/status">/status</a></li><li><a href="/readyz">/readyz</a></li></ul>
</body></html>"""
        return HTMLResponse(page, headers=SECURITY_HEADERS)

    metrics = HostMetrics()

    async def key_store_error(request: Request, exc: Exception) -> Response:
        """A signature the key store could not make (the ID token, inside the enclave through
        its token signer; the federation statements): counted for the alert. Unavailable
        (token, slot or session gone) is 503 ``temporarily_unavailable`` — nothing was
        issued, and the key store reconnects by itself; any other key store error is the
        OAuth ``server_error``."""
        if isinstance(exc, KeyStoreUnavailable):
            metrics.signing_failures.labels(SIGNING_UNAVAILABLE).inc()
            LOG.warning("signing failed at %s: %s", _route(request), exc)
            return await _temporarily_unavailable(request, exc)
        metrics.signing_failures.labels(SIGNING_ERROR).inc()
        LOG.error("signing failed at %s: %s", _route(request), exc)
        return _server_error()

    app = Starlette(
        # Starlette tries routes in order: the endpoints of every login come first.
        routes=[
            *oidc_routes(lambda: state["deps"].oidc, lambda: state["deps"].trusted_proxies),
            *_plain_egk_in_development_only(
                wallet_routes(lambda: state["deps"].wallet, lambda: state["deps"].trusted_proxies),
                lambda: state["deps"].mode,
            ),
            *vau_routes(
                lambda: state["deps"].enclave,
                lambda: state["deps"].wallet,
                lambda: state["deps"].oidc,
                lambda: state["deps"].trusted_proxies,
            ),
            Route("/", index),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/status", status),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            *federation_routes(lambda: state["deps"].federation),
            *app_link_routes(lambda: state["deps"].app_links),
            *enclave_routes(lambda: state["deps"].enclave),
            *extra_routes,
        ],
        middleware=[
            Middleware(
                ObservabilityMiddleware,
                metrics=metrics,
                mounts=[r.path for r in extra_routes if isinstance(r, Mount)],
            )
        ],
        exception_handlers={
            **{kind: _temporarily_unavailable for kind in UNAVAILABLE},
            sqlalchemy.exc.DBAPIError: _database_error,
            KeyStoreError: key_store_error,
            InvalidKeyError: _malformed_identifier,
        },
        lifespan=lifespan,
    )
    # the same routes, the same choice among them, with the fixed paths looked up at once
    app.router = IndexedRouter(app.router.routes, lifespan=lifespan)
    return app
