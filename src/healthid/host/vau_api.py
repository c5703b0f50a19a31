"""The VAU channel's HTTP transport on the host (vau-and-tee.md §1.2; issue #6 item 2).

The channel ends in the enclave; the host relays ciphertext and routes by channel id (CID):

    POST /VAU            application/cbor  M1 → M2, answered with ``VAU-CID: /VAU/<cid>``
    POST /VAU/<cid>      application/cbor  M3 → M4
    POST /VAU/<cid>      application/octet-stream  an encrypted request → its response
    GET  /VAU-Keys       the enclave's signed public VAU keys (what M2 carries), CBOR

An encrypted request cannot be read here, so the wallet repeats its non-personal routing
context in the outer request — ``VAU-Op`` (the operation), ``Authorization: Bearer <device
session>`` for the person's own data, and ``VAU-Args`` (form-encoded routing arguments: an
enrolment id, or an authorization's client_id and request_uri) — and the host hands the
enclave what the operation needs (sealed records, the pending authorization's requested
claims, the enrolment's challenge) in a :class:`~healthid.enclave.api.VauContext`. The enclave
refuses a request whose inside says otherwise. What the host sends back is the enclave's
reply as it is; refusals of the transport carry the CBOR error body of libasl
(``{"MessageType": "Error", "ErrorCode", "ErrorMessage"}``) with the enclave's status, and
refusals of the host's own checks (no session, unknown enrolment) are the wallet API's JSON.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Collection
from typing import Final
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from healthid.enclave import api
from healthid.enclave.api import (
    EnclaveClient,
    EnclaveError,
    EnclaveUnavailable,
    RequestedClaims,
    VauContext,
    VauReply,
)
from healthid.host.json_io import JSONResponse
from healthid.host.oidc_service import OidcService
from healthid.host.request_body import BodyTooLarge, read_body
from healthid.host.wallet_api import client_address
from healthid.host.wallet_service import TooManyRequests, WalletError, WalletService
from healthid.protocol.oauth.errors import OAuthError, TemporarilyUnavailableError
from healthid.protocol.vau import (
    VauError,
    VauExpiredError,
    VauMalformedError,
    VauOversizedError,
    error_body,
)
from healthid.protocol.vau.channel import OVERHEAD
from healthid.protocol.vau.messages import MAX_M1_SIZE, MAX_M3_SIZE
from healthid.store.ephemeral import EphemeralStoreUnavailable

VAU_PATH: Final = "/VAU"
KEYS_PATH: Final = "/VAU-Keys"
CID_HEADER: Final = "VAU-CID"
OP_HEADER: Final = "VAU-Op"
ARGS_HEADER: Final = "VAU-Args"
CBOR: Final = "application/cbor"
OCTETS: Final = "application/octet-stream"
CID_PATTERN: Final = re.compile(r"[0-9a-f]{64}")  # the enclave's CIDs: 32 random bytes, hex
MAX_PLAINTEXT: Final = 128 * 1024  # the enclave's bound of one inner request
MAX_MESSAGE_BYTES: Final = MAX_PLAINTEXT + OVERHEAD
MAX_ARGS_CHARS: Final = 2048
MAX_ARG_CHARS: Final = 512
NO_STORE: Final = {"Cache-Control": "no-store", "Pragma": "no-cache"}

Handler = Callable[[Request], Awaitable[Response]]


class _RefusedError(Exception):
    """A refusal of the transport: an HTTP status and the libasl error body of ``error``."""

    def __init__(self, status: int, error: VauError) -> None:
        super().__init__(str(error))
        self.status = status
        self.error = error


def _unsupported(description: str) -> _RefusedError:
    return _RefusedError(415, VauMalformedError(description))


def _too_large(limit: int) -> _RefusedError:
    return _RefusedError(413, VauOversizedError(f"the body exceeds {limit} bytes"))


def _unknown_cid() -> _RefusedError:
    return _RefusedError(404, VauExpiredError("unknown CID"))  # ASL 9 "unknown CID"


def _refusal(exc: _RefusedError) -> Response:
    return Response(
        error_body(exc.error), status_code=exc.status, media_type=CBOR, headers=NO_STORE
    )


def _wallet_error(exc: WalletError) -> Response:
    headers = dict(NO_STORE)
    if isinstance(exc, TooManyRequests):
        headers["Retry-After"] = str(exc.retry_after)
    return JSONResponse(
        {"error": exc.error, "error_description": exc.description},
        status_code=exc.status,
        headers=headers,
    )


def _reply(reply: VauReply, media_type: str) -> Response:
    kind = media_type if reply.status == 200 else CBOR
    return Response(reply.body, status_code=reply.status, media_type=kind, headers=NO_STORE)


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it exceeds ``limit`` bytes."""
    try:
        raw = await read_body(request, limit)
    except BodyTooLarge:
        raise _too_large(limit) from None
    if not raw:
        raise _RefusedError(400, VauMalformedError("empty body"))
    return raw


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _bearer(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _routing(request: Request) -> tuple[str, tuple[tuple[str, str], ...]]:
    """The outer request's op and its routing arguments (exactly those the op names)."""
    op = request.headers.get(OP_HEADER, "")
    if op not in api.VAU_OPS:
        raise WalletError(f"{OP_HEADER} must name one of: {', '.join(sorted(api.VAU_OPS))}")
    raw = request.headers.get(ARGS_HEADER, "")
    if len(raw) > MAX_ARGS_CHARS:
        raise WalletError(f"{ARGS_HEADER} is longer than {MAX_ARGS_CHARS} characters")
    try:
        pairs = parse_qsl(raw, keep_blank_values=True, strict_parsing=bool(raw))
    except ValueError:
        raise WalletError(f"{ARGS_HEADER} is not form-encoded") from None
    names = [name for name, _ in pairs]
    if sorted(names) != sorted(api.VAU_OP_ARGS[op]):
        expected = ", ".join(api.VAU_OP_ARGS[op]) or "nothing"
        raise WalletError(f"{ARGS_HEADER} of {op} must carry exactly: {expected}")
    if any(not value or len(value) > MAX_ARG_CHARS for _, value in pairs):
        raise WalletError(f"{ARGS_HEADER} values must be 1 to {MAX_ARG_CHARS} characters")
    return op, tuple(sorted(pairs))


class VauRelay:
    """Builds each request's context from the host's stores and relays it to the enclave."""

    def __init__(self, enclave: EnclaveClient, wallet: WalletService, oidc: OidcService) -> None:
        self._enclave = enclave
        self._wallet = wallet
        self._oidc = oidc

    async def context(
        self, op: str, args: tuple[tuple[str, str], ...], session: str, ip: str
    ) -> VauContext:
        named = dict(args)
        if op == api.VAU_OP_STATUS:
            return VauContext(op=op)
        if op == api.VAU_OP_EGK_PROVE:
            challenge = await self._wallet.egk_challenge(named["enrolment_id"], ip=ip)
            return VauContext(op=op, args=args, challenge=challenge)
        if op == api.VAU_OP_LOGIN:
            counter = named["counter"]
            if not counter.isdigit() or len(counter) > 19:
                raise WalletError("counter must be a non-negative integer")
            login = await self._wallet.login_request(
                challenge_id=named["challenge_id"],
                device_id=named["device_id"],
                counter=int(counter),
                ip=ip,
            )
            return VauContext(op=op, args=args, login=login)
        pseudonym, sealed, ticket = await self._wallet.person(session)  # 401 unless logged in
        history: tuple[api.SealedHistoryEvent, ...] = ()
        claims = None
        if op == api.VAU_OP_HISTORY:
            history = await self._wallet.sealed_history(pseudonym)
        elif op == api.VAU_OP_CONSENT_CLAIMS:
            pending = await self._oidc.pending(  # the PAR behind client_id + request_uri
                {"client_id": [named["client_id"]], "request_uri": [named["request_uri"]]}
            )
            claims = RequestedClaims(
                essential=pending.essential_claims, optional=pending.optional_claims
            )
        return VauContext(
            op=op,
            session=session,
            args=args,
            pseudonym=pseudonym,
            sealed=sealed,
            history=history,
            claims=claims,
            ticket=ticket,
        )

    async def request(
        self,
        cid: str,
        message: bytes,
        *,
        op: str,
        args: tuple[tuple[str, str], ...],
        session: str,
        ip: str,
    ) -> Response:
        context = await self.context(op, args, session, ip)
        reply = await self._enclave.vau_request(cid, message, context)
        if op == api.VAU_OP_EGK_PROVE and reply.status == 200:
            if reply.lookup is not None:  # the card is genuine: whom does it prove?
                await self._wallet.egk_proven(dict(args)["enrolment_id"], reply.lookup, ip=ip)
            elif reply.outcome == "proof_rejected":
                await self._wallet.egk_rejected(ip=ip)
        elif op == api.VAU_OP_LOGIN and context.login is not None:
            await self._login_done(reply, context.login, ip)
        return _reply(reply, OCTETS)

    async def _login_done(self, reply: VauReply, request: api.LoginRequest, ip: str) -> None:
        """The host's part of a login through the channel: the counter and the session
        (under its bearer) when the enclave verified it, the failure counters when not. The
        wallet's answer (its token) is in the encrypted reply; if the host cannot finish,
        the session it names does not exist here and every use of it is refused."""
        if reply.login is not None:
            await self._wallet.login_finished(request, reply.login)
        elif reply.outcome == "login_refused":
            await self._wallet.login_failed(request.device_id, ip, "device authentication failed")


def vau_routes(
    enclave: Callable[[], EnclaveClient],
    wallet: Callable[[], WalletService],
    oidc: Callable[[], OidcService],
    trusted_proxies: Callable[[], Collection[str]] = tuple,
) -> list[Route]:
    """The routes; the callables return what was built at start-up."""

    def guarded(fn: Handler) -> Handler:
        async def handler(request: Request) -> Response:
            try:
                return await fn(request)
            except _RefusedError as exc:
                return _refusal(exc)
            except WalletError as exc:
                return _wallet_error(exc)
            except OAuthError as exc:
                return JSONResponse(exc.to_dict(), status_code=exc.status_code, headers=NO_STORE)
            except EphemeralStoreUnavailable:
                error = TemporarilyUnavailableError("please try again later")
                return JSONResponse(error.to_dict(), status_code=503, headers=NO_STORE)
            except EnclaveUnavailable:
                raise  # the app answers 503 with Retry-After
            except EnclaveError:  # no channel in this enclave, or the RPC refused the context
                error = TemporarilyUnavailableError("the VAU channel is not available")
                return JSONResponse(error.to_dict(), status_code=503, headers=NO_STORE)

        return handler

    async def keys(_request: Request) -> Response:
        return Response(await enclave().vau_public_keys(), media_type=CBOR, headers=NO_STORE)

    async def handshake(request: Request) -> Response:
        if _media_type(request) != CBOR:
            raise _unsupported(f"M1 is {CBOR}")
        reply = await enclave().vau_handshake(await _body(request, MAX_M1_SIZE))
        if reply.status != 200 or reply.cid is None:
            return _reply(reply, CBOR)
        response = _reply(reply, CBOR)
        response.headers[CID_HEADER] = f"{VAU_PATH}/{reply.cid}"
        return response

    async def channel(request: Request) -> Response:
        cid = request.path_params["cid"]
        if not CID_PATTERN.fullmatch(cid):
            raise _unknown_cid()
        kind = _media_type(request)
        if kind == CBOR:  # M3
            reply = await enclave().vau_finish(cid, await _body(request, MAX_M3_SIZE))
            return _reply(reply, CBOR)
        if kind != OCTETS:
            raise _unsupported(f"M3 is {CBOR}, an encrypted request {OCTETS}")
        op, args = _routing(request)
        message = await _body(request, MAX_MESSAGE_BYTES)
        relay = VauRelay(enclave(), wallet(), oidc())
        ip = client_address(request, trusted_proxies())
        return await relay.request(cid, message, op=op, args=args, session=_bearer(request), ip=ip)

    return [
        Route(VAU_PATH, guarded(handshake), methods=["POST"]),
        Route(f"{VAU_PATH}/{{cid}}", guarded(channel), methods=["POST"]),
        Route(KEYS_PATH, guarded(keys), methods=["GET"]),
    ]
