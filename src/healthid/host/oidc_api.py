"""HTTP routes of the sectoral IdP's OAuth flow: parse, call :class:`OidcService`, render.

``/PAR_Auth`` and ``/token`` sit on the mTLS host (spec §1.1); the client certificate reaches
us in ``X-SSL-CERT`` from the TLS terminator. Errors are OAuth JSON with their status and
no-store headers; nothing here renders personal data.
"""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable, Collection

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from healthid.host.json_io import JSONResponse
from healthid.host.oidc_service import OidcService, SlowDown, client_certificate
from healthid.host.request_body import BodyTooLarge, read_body
from healthid.host.wallet_api import client_address, json_body
from healthid.host.wallet_errors import WalletError
from healthid.protocol.oauth.authorize import requested_claims
from healthid.protocol.oauth.errors import (
    InvalidRequestError,
    OAuthError,
    TemporarilyUnavailableError,
)
from healthid.protocol.oauth.form import parse_form
from healthid.store.ephemeral import EphemeralStoreUnavailable

MAX_FORM_BYTES = 64 * 1024
MAX_QUERY_CHARS = 8 * 1024
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
FORM_TYPE = "application/x-www-form-urlencoded"

Form = dict[str, list[str]]


def _oauth_error(exc: OAuthError) -> JSONResponse:
    headers = NO_STORE if exc.status_code != 503 else {**NO_STORE, "Retry-After": "5"}
    if isinstance(exc, SlowDown):  # 429 from a rate limit: when the window ends
        headers = {**NO_STORE, "Retry-After": str(exc.retry_after)}
    return JSONResponse(exc.to_dict(), status_code=exc.status_code, headers=headers)


async def _form(request: Request) -> Form:
    if request.headers.get("content-type", "").split(";")[0].strip() != FORM_TYPE:
        raise InvalidRequestError(f"the request body must be {FORM_TYPE}")
    try:
        raw = await read_body(request, MAX_FORM_BYTES)
    except BodyTooLarge as exc:
        raise InvalidRequestError(str(exc)) from None
    try:
        return parse_form(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise InvalidRequestError("the request body is not UTF-8") from None


def _query(request: Request) -> Form:
    """The query's parameters: what ``request.url.query`` gives (the query string as UTF-8,
    without a fragment), without building and splitting the whole URL for it."""
    try:
        text = request.scope["query_string"].decode("utf-8").partition("#")[0]
    except UnicodeDecodeError:  # uvicorn refuses such a request line; another server might not
        raise InvalidRequestError("the query string is not UTF-8") from None
    if len(text) > MAX_QUERY_CHARS:
        raise InvalidRequestError("query string too long")
    return parse_form(text)


def oidc_routes(
    service: Callable[[], OidcService], trusted_proxies: Callable[[], Collection[str]]
) -> list[Route]:
    def guarded(
        fn: Callable[[Request, OidcService], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def handler(request: Request) -> Response:
            try:
                return await fn(request, service())
            except OAuthError as exc:
                return _oauth_error(exc)
            except EphemeralStoreUnavailable:
                # fail closed: without the flow store nothing is issued (issue #7 item 2)
                return _oauth_error(TemporarilyUnavailableError("please try again later"))

        return handler

    def cert(request: Request) -> bytes | None:
        peer = request.client.host if request.client else None
        return client_certificate(request.headers, peer, trusted_proxies())

    async def par_endpoint(request: Request, svc: OidcService) -> Response:
        response = await svc.push(
            await _form(request), cert(request), ip=client_address(request, trusted_proxies())
        )
        return JSONResponse(response.to_dict(), status_code=201, headers=NO_STORE)

    async def authorization_endpoint(request: Request, svc: OidcService) -> Response:
        query = _query(request)
        pending = await svc.pending(query)
        if "app_version" in query or "device_type" in query:
            # the insurer app asks which claims to show for consent (spec §1.1)
            return JSONResponse(requested_claims(pending), headers=NO_STORE)
        # the browser: on a phone this URL opens the insurer app (universal / app link)
        page = (
            "<!doctype html><html lang='de'><meta charset='utf-8'><title>healthid</title>"
            "<body><h1>Anmeldung mit Ihrer GesundheitsID</h1>"
            "<p>Bitte öffnen Sie die App Ihrer Krankenkasse, um sich anzumelden.</p>"
            f"<p><a href='{html.escape(str(request.url))}'>In der App öffnen</a></p></body></html>"
        )
        return HTMLResponse(page, headers=NO_STORE)

    async def consent_endpoint(request: Request, svc: OidcService) -> Response:
        try:
            body = await json_body(request)  # bounded; deep nesting and non-objects refused
        except WalletError as exc:
            raise InvalidRequestError(exc.description) from None
        selected = body.get("selected_claims", [])
        if not isinstance(selected, list) or not all(isinstance(c, str) for c in selected):
            raise InvalidRequestError("selected_claims must be a list of claim names")
        header = request.headers.get("authorization", "")
        scheme, _, session = header.partition(" ")
        location = await svc.authorize_with_device(
            client_id=str(body.get("client_id", "")),
            request_uri=str(body.get("request_uri", "")),
            session=session.strip() if scheme.lower() == "bearer" else "",
            selected_claims=selected,
        )
        return JSONResponse({"redirect": location}, headers=NO_STORE)

    async def token_endpoint(request: Request, svc: OidcService) -> Response:
        return JSONResponse(
            await svc.exchange(await _form(request), cert(request)), headers=NO_STORE
        )

    async def wrong_method(request: Request) -> Response:
        # gsi-testsuite PAR_004 / TOKEN_002: a GET gets an OAuth JSON error, not an HTML 405
        error = InvalidRequestError(f"{request.method} is not allowed here; use POST")
        return JSONResponse(error.to_dict(), status_code=405, headers={**NO_STORE, "Allow": "POST"})

    return [
        Route("/PAR_Auth", guarded(par_endpoint), methods=["POST"]),
        Route("/auth", guarded(authorization_endpoint), methods=["GET"]),
        Route("/wallet/v1/authorizations", guarded(consent_endpoint), methods=["POST"]),
        Route("/token", guarded(token_endpoint), methods=["POST"]),
        # a path that matches with another method falls through to these
        Route("/PAR_Auth", wrong_method, methods=["GET", "PUT", "DELETE", "PATCH"]),
        Route("/token", wrong_method, methods=["GET", "PUT", "DELETE", "PATCH"]),
    ]
