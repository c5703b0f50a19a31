"""HTTP routes of the wallet API (``/wallet/v1``): parse, call :class:`WalletService`, render.

Binary values travel base64url (no padding). Errors are JSON ``{"error", "error_description"}``
with the HTTP status of the refusal — also for an unknown path under ``/wallet/`` (404) and a
method a path does not have (405); nothing in a response is personal data. The OpenAPI 3.1
document of these routes (``wallet_openapi.json``, served at ``/wallet/openapi.json``) is
checked against them by tests/host/test_wallet_api.py and fuzzed with schemathesis
(tests/fuzz/test_wallet_schemathesis.py).
"""

from __future__ import annotations

import base64
import binascii
import functools
import importlib.resources
import ipaddress
import re
from collections.abc import Awaitable, Callable, Collection
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send

from healthid.host import json_io
from healthid.host.json_io import JSONResponse
from healthid.host.request_body import BodyTooLarge, read_body
from healthid.host.wallet_service import (
    DEVICE_ID_BYTES,
    NotFound,
    TooManyRequests,
    WalletError,
    WalletService,
)
from healthid.protocol import device_auth
from healthid.protocol.jose.keys import b64url_encode

MAX_BODY_BYTES = 128 * 1024
B64URL = re.compile(r"[A-Za-z0-9_-]+")
# the device ids the server issues (wallet_service: token_hex(DEVICE_ID_BYTES)); anything else
# is refused before it reaches a constant-time comparison that only takes ASCII
DEVICE_ID = re.compile(f"[0-9a-f]{{{2 * DEVICE_ID_BYTES}}}")
# a login challenge id: base64url as issued (token_urlsafe), so it is usable in a store key
MAX_CHALLENGE_ID_CHARS = 64
CHALLENGE_ID = re.compile(f"[A-Za-z0-9_-]{{1,{MAX_CHALLENGE_ID_CHARS}}}")
MAX_ADDRESS_CHARS = 45  # the longest textual IPv6 address
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
PREFIX: Final = "/wallet/v1"
OPENAPI_PATH: Final = "/wallet/openapi.json"
OPENAPI_RESOURCE: Final = "wallet_openapi.json"  # package data of healthid.host
FALLBACK_PATH: Final = "/wallet/{rest:path}"  # JSON 404 / 405 for the rest of /wallet/

Handler = Callable[[Request], Awaitable[Response]]


def _json(body: object, status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=NO_STORE)


def _error(exc: WalletError) -> JSONResponse:
    headers = dict(NO_STORE)
    if isinstance(exc, TooManyRequests):
        headers["Retry-After"] = str(exc.retry_after)
    return JSONResponse(
        {"error": exc.error, "error_description": exc.description},
        status_code=exc.status,
        headers=headers,
    )


def b64d(value: object, name: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise WalletError(f"{name} must be a base64url string")
    if not B64URL.fullmatch(value):
        raise WalletError(f"{name} is not valid base64url")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise WalletError(f"{name} is not valid base64url") from None


b64e = b64url_encode


async def json_body(request: Request) -> dict[str, Any]:
    try:
        raw = await read_body(request, MAX_BODY_BYTES)
    except BodyTooLarge as exc:
        raise WalletError(str(exc)) from None
    if not raw:
        return {}
    try:
        body = json_io.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: deep nesting
        raise WalletError("request body is not JSON") from None
    if not isinstance(body, dict):
        raise WalletError("request body must be a JSON object")
    return body


def client_address(request: Request, trusted_proxies: Collection[str]) -> str:
    """The client's address for rate limits: the peer, or — when the peer is a trusted proxy
    (the TLS terminator) — the last address it appended to X-Forwarded-For."""
    peer = request.client.host if request.client else "unknown"
    forwarded = request.headers.get("x-forwarded-for")
    if forwarded and peer in trusted_proxies:
        last = forwarded.split(",")[-1].strip()
        if last and len(last) <= MAX_ADDRESS_CHARS:
            # only an address: anything else would become part of a counter's key
            return _address(last) or f"invalid-forwarded-from-{peer}"  # one bucket for garbage
    return peer


@functools.lru_cache(maxsize=4096)
def _address(text: str) -> str | None:
    """``text`` as an IP address in its normal form, or None. The same clients come again
    and again: each string is parsed once while it is among the last 4,096 seen."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _str(body: dict[str, Any], name: str, *, max_len: int = 256) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise WalletError(f"{name} must be a non-empty string")
    return value


def _challenge_id(body: dict[str, Any]) -> str:
    value = body.get("challenge_id")
    if not isinstance(value, str) or not CHALLENGE_ID.fullmatch(value):
        raise WalletError(
            f"challenge_id must be 1 to {MAX_CHALLENGE_ID_CHARS} base64url characters"
        )
    return value


def _device_id(body: dict[str, Any]) -> str:
    value = body.get("device_id")
    if not isinstance(value, str) or not DEVICE_ID.fullmatch(value):
        raise WalletError(f"device_id must be {2 * DEVICE_ID_BYTES} lowercase hex characters")
    return value


def _counter(body: dict[str, Any]) -> int:
    """The login counter: a JSON integer (``7`` or, as JSON Schema allows, ``7.0``) that fits
    the 8 octets it is signed as."""
    value = body.get("counter")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or not 0 <= value <= device_auth.MAX_COUNTER
    ):
        raise WalletError(f"counter must be an integer from 0 to {device_auth.MAX_COUNTER}")
    return value


@functools.cache
def openapi_document() -> bytes:
    """The OpenAPI 3.1 document of the wallet API (package data, read once)."""
    return importlib.resources.files("healthid.host").joinpath(OPENAPI_RESOURCE).read_bytes()


async def _openapi(_request: Request) -> Response:
    return Response(openapi_document(), media_type="application/json", headers=NO_STORE)


async def _fallback(request: Request) -> Response:
    """No wallet route has this path (404), or not with this method (405 with ``Allow``):
    the API's JSON error, not the framework's plain text."""
    router = request.scope.get("router")
    allowed: set[str] = set()
    for route in getattr(router, "routes", ()):
        if not isinstance(route, Route) or route.path == FALLBACK_PATH or route.methods is None:
            continue
        if route.matches(request.scope)[0] is Match.PARTIAL:
            allowed |= route.methods
    if not allowed:
        return _error(NotFound("no such resource of the wallet API"))
    allow = ", ".join(sorted(allowed))
    return JSONResponse(
        {
            "error": "invalid_request",
            "error_description": f"{request.method} is not allowed here; use {allow}",
        },
        status_code=405,
        headers={**NO_STORE, "Allow": allow},
    )


class _Fallback:
    """:func:`_fallback` as a plain ASGI app: a Route of a function would answer GET only."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await _fallback(Request(scope, receive))
        await response(scope, receive, send)


def wallet_routes(
    service: Callable[[], WalletService],
    trusted_proxies: Callable[[], Collection[str]] = tuple,
) -> list[Route]:
    """The routes; ``service`` returns the service built at start-up."""

    def _ip(request: Request) -> str:
        return client_address(request, trusted_proxies())

    def guarded(fn: Callable[[Request, WalletService], Awaitable[Response]]) -> Handler:
        async def handler(request: Request) -> Response:
            try:
                return await fn(request, service())
            except WalletError as exc:
                return _error(exc)

        return handler

    async def start(request: Request, svc: WalletService) -> Response:
        enrolment = await svc.start_enrolment(ip=_ip(request))
        return _json(
            {
                "enrolment_id": enrolment.enrolment_id,
                "challenge": b64e(enrolment.challenge),
                "expires_in": enrolment.expires_in,
            },
            201,
        )

    async def egk(request: Request, svc: WalletService) -> Response:
        body = await json_body(request)
        chain = body.get("intermediates", [])
        if not isinstance(chain, list) or len(chain) > 4:
            raise WalletError("intermediates must be a list of at most 4 certificates")
        method = await svc.prove_with_egk(
            request.path_params["enrolment_id"],
            certificate=b64d(body.get("certificate"), "certificate"),
            signature=b64d(body.get("signature"), "signature"),
            intermediates=tuple(b64d(c, "intermediates") for c in chain),
            ip=_ip(request),
        )
        return _json({"status": "proven", "method": method})

    async def eid_start(request: Request, svc: WalletService) -> Response:
        tc_token = await svc.start_eid(request.path_params["enrolment_id"], ip=_ip(request))
        return _json({"tc_token": tc_token}, 201)

    async def eid_result(request: Request, svc: WalletService) -> Response:
        method = await svc.finish_eid(request.path_params["enrolment_id"], ip=_ip(request))
        if method is None:
            return _json({"status": "pending"}, 202)
        return _json({"status": "proven", "method": method})

    async def device(request: Request, svc: WalletService) -> Response:
        body = await json_body(request)
        replace = body.get("replace_devices", False)
        if not isinstance(replace, bool):
            raise WalletError("replace_devices must be true or false")
        bound = await svc.bind_device(
            request.path_params["enrolment_id"],
            public_key=b64d(body.get("public_key"), "public_key"),
            attestation_format=_str(body, "attestation_format", max_len=64),
            attestation=b64d(body.get("attestation"), "attestation"),
            replace_devices=replace,
        )
        return _json(
            {
                "device_id": bound.device_id,
                "key_class": bound.key_class,
                "acr": bound.assurance.acr,
                "revoked_devices": bound.revoked_devices,
            },
            201,
        )

    async def challenge(request: Request, svc: WalletService) -> Response:
        body = await json_body(request)
        challenge_id, value = await svc.login_challenge(_device_id(body), ip=_ip(request))
        return _json(
            {"challenge_id": challenge_id, "challenge": b64e(value), "expires_in": 120}, 201
        )

    async def assertion(request: Request, svc: WalletService) -> Response:
        body = await json_body(request)
        counter = _counter(body)
        result = await svc.login(
            challenge_id=_challenge_id(body),
            device_id=_device_id(body),
            counter=counter,
            signature=b64d(body.get("signature"), "signature"),
            ip=_ip(request),
        )
        return _json(
            {
                "session": result.session,
                "device_id": result.device_id,
                "auth_time": result.auth_time,
                "acr": result.assurance.acr,
                "amr": list(result.assurance.amr_v2),
                "reproof_due_at": result.assurance.reproof_due_at,
            }
        )

    async def devices(request: Request, svc: WalletService) -> Response:
        return _json({"devices": await svc.list_devices(_bearer(request))})

    async def revoke(request: Request, svc: WalletService) -> Response:
        await svc.revoke_device(_bearer(request), request.path_params["device_id"])
        return Response(status_code=204, headers=NO_STORE)

    async def history(request: Request, svc: WalletService) -> Response:
        return _json({"events": await svc.history_count(_bearer(request))})

    prefix = PREFIX
    return [
        Route(f"{prefix}/auth/challenges", guarded(challenge), methods=["POST"]),  # every login
        Route(f"{prefix}/auth/assertions", guarded(assertion), methods=["POST"]),
        Route(f"{prefix}/enrolments", guarded(start), methods=["POST"]),
        Route(f"{prefix}/enrolments/{{enrolment_id}}/egk", guarded(egk), methods=["POST"]),
        Route(f"{prefix}/enrolments/{{enrolment_id}}/eid", guarded(eid_start), methods=["POST"]),
        Route(
            f"{prefix}/enrolments/{{enrolment_id}}/eid/result",
            guarded(eid_result),
            methods=["POST"],
        ),
        Route(f"{prefix}/enrolments/{{enrolment_id}}/device", guarded(device), methods=["POST"]),
        Route(f"{prefix}/devices", guarded(devices), methods=["GET"]),
        Route(f"{prefix}/devices/{{device_id}}", guarded(revoke), methods=["DELETE"]),
        Route(f"{prefix}/history", guarded(history), methods=["GET"]),
        Route(OPENAPI_PATH, _openapi, methods=["GET"]),
        # last: after every route under /wallet/ (the consent's among the OIDC routes too)
        Route(FALLBACK_PATH, _Fallback(), methods=None),  # every method
    ]
