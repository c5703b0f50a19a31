"""A LOCAL eID-Server stand-in, for development and tests only (spec §1.4 "Local stand-in").

It speaks the same SOAP eID-Interface as a real eID-Server (BSI TR-03130-1 v2.4.0 §3) at
``POST /eID`` and plays the eID-Client + card through a development hook::

    POST /standin/sessions/{psk_id}/complete   {"identity": "<key>"} | {"error": "cancelled"}

It never talks to a card, has no terminal certificate, signs nothing, and serves only the
test identities it was given. :func:`create_standin_app` refuses to build it for a process in
production mode.

Behaviour (TR-03130-1 §3.2, §3.4.1):

- every request is size-capped, parsed by the hardened parser and validated against our XSD;
  anything else, or a SOAPAction that does not match the Body, gets ``common#schemaViolation``
  (a SOAP Fault when not even the operation can be told);
- useID: ``missingArgument`` for an age/place verification without its request element,
  ``missingTerminalRights`` for attributes beyond the stand-in's rights, ``invalidPSK`` for a
  short or reused PSK, ``tooManyOpenSessions`` beyond the bound;
- getResult: ``invalidSession`` for an unknown, expired or finished session,
  ``invalidCounter`` unless RequestCounter is the previous one + 1 (starting at 1),
  ``noResultYet`` until the hook completed the session (the session stays open), then the
  result: ``deniedDocument`` when the identity's eID type does not meet the requested LoA /
  eID types (§3.3.12), else PersonalData. Every answer other than ``noResultYet`` ends the
  session (§3.2.2.2).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Mapping

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from healthid.eid.errors import MalformedMessageError
from healthid.eid.model import Attribute
from healthid.eid.soap import CONTENT_TYPE, Operation, fault_envelope, local_name, open_envelope
from healthid.eid.standin_core import (
    COMPLETION_ERRORS,
    DEFAULT_SESSION_TTL_SECONDS,
    MAX_OPEN_SESSIONS,
    STANDIN_TERMINAL_RIGHTS,
    StandinCore,
    StandinIdentity,
)
from healthid.eid.xml import MAX_XML_BYTES

# The largest SOAP request read (the parser would refuse more anyway) and hook body.
MAX_REQUEST_BYTES = MAX_XML_BYTES
MAX_HOOK_BYTES = 4 * 1024

__all__ = [
    "COMPLETION_ERRORS",
    "StandinIdentity",
    "StandinRefusedError",
    "create_standin_app",
    "run_standin",
]


class StandinRefusedError(RuntimeError):
    """The stand-in must not run in this process (production mode)."""


async def _read_capped(request: Request, cap: int) -> bytes | None:
    """The request body, or ``None`` when it is larger than ``cap`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > cap:
            return None
    return bytes(body)


def _operation_from_action(header: str | None) -> Operation | None:
    action = (header or "").strip().strip('"')
    return next((op for op in Operation if op.soap_action == action), None)


def _soap(status: int, body: bytes) -> Response:
    return Response(body, status_code=status, media_type=CONTENT_TYPE)


def _handle_soap(core: StandinCore, action: Operation | None, body: bytes | None) -> Response:
    """Parse, validate and dispatch one SOAP request (the decisions are in the core)."""
    message = None
    if body is not None:
        try:
            message = open_envelope(body)
        except MalformedMessageError:
            message = None
    name = None if message is None else local_name(message)
    by_body = next((op for op in Operation if op.request_element == name), None)
    operation = action or by_body
    if operation is None:
        return _soap(500, fault_envelope("Client", "not an eID-Interface request"))
    if by_body is None or (action is not None and action is not by_body):
        return _soap(200, core.schema_violation(operation))
    if operation is Operation.USE_ID:
        return _soap(200, core.use_id(message))
    return _soap(200, core.get_result(message))


def _json(status: int, payload: Mapping[str, str]) -> JSONResponse:
    return JSONResponse(dict(payload), status_code=status, headers={"Cache-Control": "no-store"})


def create_standin_app(
    identities: Mapping[str, StandinIdentity],
    *,
    enabled_in_production: bool = False,
    max_open_sessions: int = MAX_OPEN_SESSIONS,
    session_ttl_seconds: float = DEFAULT_SESSION_TTL_SECONDS,
    terminal_rights: frozenset[Attribute] = STANDIN_TERMINAL_RIGHTS,
    ecard_server_address: str | None = None,
    clock: Callable[[], float] = time.monotonic,
    random_bytes: Callable[[int], bytes] = secrets.token_bytes,
) -> Starlette:
    """The stand-in as an ASGI app.

    ``enabled_in_production``: pass ``True`` when the process runs in production mode; the
    stand-in then refuses to exist (:class:`StandinRefusedError`).
    """
    if enabled_in_production:
        raise StandinRefusedError(
            "the eID-Server stand-in is for development and tests only; it never runs in "
            "production mode"
        )
    core = StandinCore(
        identities,
        max_open_sessions=max_open_sessions,
        session_ttl_seconds=session_ttl_seconds,
        terminal_rights=terminal_rights,
        ecard_server_address=ecard_server_address,
        clock=clock,
        random_bytes=random_bytes,
    )

    async def soap_endpoint(request: Request) -> Response:
        action = _operation_from_action(request.headers.get("soapaction"))
        return _handle_soap(core, action, await _read_capped(request, MAX_REQUEST_BYTES))

    async def complete(request: Request) -> Response:
        body = await _read_capped(request, MAX_HOOK_BYTES)
        if body is None:
            return _json(413, {"error": "body_too_large"})
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return _json(400, {"error": "invalid_json"})
        status, answer = core.complete(request.path_params["psk_id"], payload)
        return _json(status, answer)

    return Starlette(
        routes=[
            Route("/eID", soap_endpoint, methods=["POST"]),
            Route("/standin/sessions/{psk_id}/complete", complete, methods=["POST"]),
        ]
    )


def run_standin(
    host: str,
    port: int,
    identities: Mapping[str, StandinIdentity],
    *,
    enabled_in_production: bool = False,
) -> None:
    """Serve the stand-in with uvicorn (``healthid eid-standin``); blocks until stopped."""
    import uvicorn

    app = create_standin_app(identities, enabled_in_production=enabled_in_production)
    uvicorn.run(app, host=host, port=port, log_level="info", server_header=False)
