"""HTTP routes of the wallet API (``/wallet/v1``): parse, call :class:`WalletService`, render.

Binary values travel base64url (no padding). Errors are JSON ``{"error", "error_description"}``
with the HTTP status of the refusal; nothing in a response is personal data.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from healthid.host.wallet_service import TooManyRequests, WalletError, WalletService
from healthid.protocol.jose.keys import b64url_encode

MAX_BODY_BYTES = 128 * 1024
B64URL = re.compile(r"[A-Za-z0-9_-]+")
MAX_ADDRESS_CHARS = 45  # the longest textual IPv6 address
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

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
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
        raise WalletError(f"request body larger than {MAX_BODY_BYTES} bytes")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise WalletError(f"request body larger than {MAX_BODY_BYTES} bytes")
    if not raw:
        return {}
    try:
        body = json.loads(raw)
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
            try:  # only an address: anything else would become part of a counter's key
                return str(ipaddress.ip_address(last))
            except ValueError:
                return f"invalid-forwarded-from-{peer}"  # one shared bucket for the garbage
    return peer


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _str(body: dict[str, Any], name: str, *, max_len: int = 256) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise WalletError(f"{name} must be a non-empty string")
    return value


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
        challenge_id, value = await svc.login_challenge(
            _str(body, "device_id", max_len=64), ip=_ip(request)
        )
        return _json(
            {"challenge_id": challenge_id, "challenge": b64e(value), "expires_in": 120}, 201
        )

    async def assertion(request: Request, svc: WalletService) -> Response:
        body = await json_body(request)
        counter = body.get("counter")
        if not isinstance(counter, int) or isinstance(counter, bool) or counter < 0:
            raise WalletError("counter must be a non-negative integer")
        result = await svc.login(
            challenge_id=_str(body, "challenge_id", max_len=64),
            device_id=_str(body, "device_id", max_len=64),
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

    prefix = "/wallet/v1"
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
    ]
