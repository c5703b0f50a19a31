"""The host's side of the enclave RPC: :class:`RemoteEnclave` implements
:class:`~healthid.enclave.api.EnclaveClient` over the enclave's Unix socket.

One connection per client (opened on first use, per event loop), shared by every call: each
request carries an id, responses are matched to their caller whatever their order. A call
waits at most its method's timeout. When the enclave cannot be reached, the connection breaks
or the enclave does not answer in time, the call raises
:class:`~healthid.enclave.api.EnclaveUnavailable` (the host answers 503); the next call
connects again, so the client recovers by itself when the enclave comes back. Errors raised
inside the enclave arrive as the same exception classes with the same messages.

Besides the ``EnclaveClient`` methods, :class:`RemoteEnclave` speaks the enclave-to-enclave
key-release group (:class:`~healthid.enclave.key_release.KeyReleaseSource`): a joining enclave
uses it to receive the root key from a running one (``healthid enclave serve --join``).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Final, cast

from healthid.enclave import api
from healthid.enclave.key_release import ReleasedRootKey
from healthid.enclave.rpc import cbor, schema
from healthid.enclave.rpc.codec import (
    HEADER_SIZE,
    MAX_FRAME,
    MAX_REQUEST_ID,
    MIB,
    Response,
    encode_request,
    frame_length,
    parse_response,
)
from healthid.enclave.rpc.errors import CodecError, FrameTooLarge, error_from
from healthid.enclave.rpc.methods import (
    KEY_RELEASE_CHALLENGE,
    METHODS,
    RELEASE_ROOT_KEY,
    UPLOAD_METHOD,
    UPLOAD_PART,
)
from healthid.protocol.audit import SignedCheckpoint

CONNECT_TIMEOUT: Final = 5.0  # seconds to reach the enclave's socket
CLIENT_GRACE: Final = 5.0  # seconds beyond the method's timeout (the enclave's answer wins)
VERIFY_BATCH: Final = 1_000  # policyholders per verify_policyholders request, at most
VERIFY_BATCH_BYTES: Final = MAX_FRAME // 2  # ... and about this many bytes of them
_SIZE_SLACK: Final = 128  # bytes of names, pseudonyms and CBOR heads per item (generous)


class _Connection(asyncio.Protocol):
    """One socket to the enclave and its open requests. The answers' frames are cut out of
    the bytes as they arrive and handed to their callers in this callback (no reader task:
    a task step per answer cost more than the rest of receiving it). A frame that cannot be
    read, or an answer the enclave sent without an id (it could not read one of our frames),
    ends the connection: the stream cannot be resynchronised."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pending: dict[int, asyncio.Future[Response]] = {}
        self.closed = False
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._writable: asyncio.Future[None] | None = None  # while the enclave's buffer is full
        self._lost: asyncio.Future[None] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    async def send(self, data: bytes) -> None:
        transport = self._transport
        if self.closed or transport is None:
            raise api.EnclaveUnavailable("the connection to the enclave was lost")
        transport.write(data)  # the whole frame, in order: frames never interleave
        while self._writable is not None and not self.closed:
            await asyncio.shield(self._writable)  # a cancelled caller leaves it to the others
        if self.closed:
            raise api.EnclaveUnavailable("the connection to the enclave was lost")

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        buffer = self._buffer
        buffer += data
        while len(buffer) >= HEADER_SIZE:
            try:
                end = HEADER_SIZE + frame_length(buffer, max_size=MAX_FRAME)
                if len(buffer) < end:
                    return
                payload = bytes(buffer[HEADER_SIZE:end])
                del buffer[:end]
                response = parse_response(cbor.decode(payload))
            except CodecError as exc:
                self.fail(api.EnclaveUnavailable(f"the enclave sent a malformed response ({exc})"))
                return
            if response.id is None:  # the enclave could not read one of our frames
                error = error_from(response.code, response.message)
                self.fail(
                    error if isinstance(error, api.EnclaveError) else api.EnclaveError(str(error))
                )
                return
            future = self.pending.pop(response.id, None)
            if future is not None and not future.done():
                future.set_result(response)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.fail(api.EnclaveUnavailable("the connection to the enclave was lost"))
        self._wake_writers()
        if not self._lost.done():
            self._lost.set_result(None)

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = self.loop.create_future()

    def resume_writing(self) -> None:
        self._wake_writers()

    def _wake_writers(self) -> None:
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    def fail(self, exc: api.EnclaveError) -> None:
        """Close the connection; every open request raises (a copy of) ``exc``."""
        self.closed = True
        pending, self.pending = self.pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(type(exc)(str(exc)))
        self._wake_writers()
        if self._transport is not None:
            self._transport.close()

    def abandon(self) -> None:
        """Close from outside (client closed, or its event loop is gone)."""
        if self.loop.is_closed():
            self.closed = True
            return
        if not self.closed:
            self.fail(api.EnclaveUnavailable("the enclave client was closed"))

    async def wait_closed(self) -> None:
        await asyncio.shield(self._lost)


class RemoteEnclave:
    """The enclave in its own process, reached over its Unix socket."""

    def __init__(
        self,
        socket_path: Path | str | None = None,
        *,
        port: int | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
        timeout: float | None = None,
        upload_part: int = UPLOAD_PART,
    ) -> None:
        """``timeout``: one limit for every call instead of each method's own."""
        if not 0 < upload_part <= MAX_FRAME - MIB:
            raise ValueError("upload_part must leave room for the request in one frame")
        if (socket_path is None) == (port is None):
            raise ValueError("give the enclave's socket path or its loopback port")
        self._path = None if socket_path is None else Path(socket_path)
        self._port = port
        self._address = str(self._path) if self._path is not None else f"127.0.0.1:{port}"
        self._connect_timeout = connect_timeout
        self._timeout = timeout
        self._upload_part = upload_part
        self._ids = itertools.count(1)
        self._conn: _Connection | None = None
        self._connecting: asyncio.Task[_Connection] | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"RemoteEnclave({self._address!r})"

    # -- connection -------------------------------------------------------------------------
    async def _connection(self) -> _Connection:
        if self._closed:
            raise api.EnclaveUnavailable("the enclave client is closed")
        loop = asyncio.get_running_loop()
        conn = self._conn
        if conn is not None and conn.loop is loop and not conn.closed:
            return conn
        if conn is not None and conn.loop is not loop:
            conn.abandon()  # made in another event loop (e.g. an earlier asyncio.run)
            self._conn = None
        task = self._connecting
        if task is None or task.get_loop() is not loop or task.done():
            task = loop.create_task(self._open(loop))
            task.add_done_callback(_retrieve)
            self._connecting = task
        return await asyncio.shield(task)

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        try:
            async with asyncio.timeout(self._connect_timeout):
                if self._path is not None:
                    _, conn = await loop.create_unix_connection(
                        lambda: _Connection(loop), str(self._path)
                    )
                else:
                    _, conn = await loop.create_connection(
                        lambda: _Connection(loop), "127.0.0.1", cast(int, self._port)
                    )
        except (OSError, TimeoutError) as exc:
            raise api.EnclaveUnavailable(
                f"the enclave is not reachable at {self._address} ({type(exc).__name__})"
            ) from None
        self._conn = conn
        return conn

    def close(self) -> None:
        """Close the connection; open calls and later calls raise EnclaveUnavailable."""
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.abandon()

    async def aclose(self) -> None:
        conn = self._conn
        self.close()
        if conn is not None and conn.loop is asyncio.get_running_loop():
            await conn.wait_closed()

    # -- one call ---------------------------------------------------------------------------
    async def _call(
        self, method: str, args: dict[str, object], *, on: _Connection | None = None
    ) -> object:
        spec = METHODS[method]
        request_id = next(self._ids) % MAX_REQUEST_ID
        data = encode_request(request_id, method, args)
        if len(data) - HEADER_SIZE > spec.max_request:
            raise FrameTooLarge(f"{method}: request of {len(data)} bytes exceeds the limit")
        conn = on or await self._connection()
        future: asyncio.Future[Response] = conn.loop.create_future()
        conn.pending[request_id] = future
        timeout = self._timeout if self._timeout is not None else spec.timeout + CLIENT_GRACE
        try:
            async with asyncio.timeout(timeout):
                await conn.send(data)
                response = await future
        except TimeoutError:
            raise api.EnclaveUnavailable(
                f"the enclave did not answer {method} within {timeout:g} s"
            ) from None
        finally:
            conn.pending.pop(request_id, None)
        if not response.ok:
            raise error_from(response.code, response.message)
        return response.result

    # -- EnclaveClient ----------------------------------------------------------------------
    async def status(self) -> api.EnclaveStatus:
        return schema.decode_status(await self._call("status", {}), "status")

    async def prepare_import(
        self, data: bytes, *, filename: str, fmt: str | None, accept_test_kvnr: bool
    ) -> api.PreparedImport:
        args: dict[str, object] = {
            "filename": filename,
            "fmt": fmt,
            "accept_test_kvnr": accept_test_kvnr,
            "data": data,
            "upload": None,
        }
        conn = None
        if len(data) > self._upload_part:  # larger than one part: upload, then name it
            conn = await self._connection()
            args["data"], args["upload"] = None, await self._upload(conn, data)
        result = await self._call("prepare_import", args, on=conn)
        return schema.decode_prepared_import(result, "prepare_import")

    async def _upload(self, conn: _Connection, data: bytes) -> str:
        upload: str | None = None
        for offset in range(0, len(data), self._upload_part):
            part = data[offset : offset + self._upload_part]
            args: dict[str, object] = {"upload": upload, "offset": offset, "part": part}
            reply = schema.Fields(
                await self._call(UPLOAD_METHOD, args, on=conn), UPLOAD_METHOD, ("upload", "size")
            )
            upload = reply.text("upload")
            if reply.count("size") != offset + len(part):
                raise CodecError(f"{UPLOAD_METHOD}: the enclave holds another size")
        if upload is None:
            raise CodecError(f"{UPLOAD_METHOD}: nothing to upload")
        return upload

    async def seal_import_chunk(self, import_id: str, index: int) -> api.SealedChunk:
        result = await self._call("seal_import_chunk", {"import_id": import_id, "index": index})
        return schema.decode_sealed_chunk(result, "seal_import_chunk")

    async def discard_import(self, import_id: str) -> None:
        await self._call("discard_import", {"import_id": import_id})

    async def verify_policyholders(self, sealed: list[api.SealedPolicyholder]) -> list[str]:
        failed: list[str] = []
        for batch in _batches(sealed):
            args: dict[str, object] = {
                "sealed": [schema.encode_sealed_policyholder(s) for s in batch]
            }
            result = await self._call("verify_policyholders", args)
            failed += schema.array(result, "verify_policyholders", schema.text)
        return failed

    async def egk_prove(
        self,
        *,
        certificate: bytes,
        signature: bytes,
        challenge: bytes,
        intermediates: tuple[bytes, ...] = (),
    ) -> api.IdentityLookup:
        args: dict[str, object] = {
            "certificate": certificate,
            "signature": signature,
            "challenge": challenge,
            "intermediates": list(intermediates),
        }
        return schema.decode_identity_lookup(await self._call("egk_prove", args), "egk_prove")

    async def eid_start(self) -> api.EidStarted:
        return schema.decode_eid_started(await self._call("eid_start", {}), "eid_start")

    async def eid_collect(self, handle: str) -> api.IdentityLookup | None:
        result = await self._call("eid_collect", {"handle": handle})
        return None if result is None else schema.decode_identity_lookup(result, "eid_collect")

    async def match_identity(
        self, proof_id: str, candidates: list[api.SealedPolicyholder]
    ) -> api.IdentityMatch:
        args: dict[str, object] = {
            "proof_id": proof_id,
            "candidates": [schema.encode_sealed_policyholder(c) for c in candidates],
        }
        result = await self._call("match_identity", args)
        return schema.decode_identity_match(result, "match_identity")

    async def login_challenges(self, count: int) -> tuple[bytes, ...]:
        result = await self._call("login_challenges", {"count": count})
        return schema.array(result, "login_challenges", schema.blob)

    async def bind_device(self, request: api.DeviceBindingRequest) -> api.BoundDeviceKey:
        args: dict[str, object] = {"request": schema.encode_binding_request(request)}
        result = await self._call("bind_device", args)
        return schema.decode_bound_device_key(result, "bind_device")

    async def login(self, request: api.LoginRequest) -> api.LoginGrant:
        args: dict[str, object] = {"request": schema.encode_login_request(request)}
        return schema.decode_login_grant(await self._call("login", args), "login")

    async def seal_history(
        self, sealed: api.SealedPolicyholder, event: api.HistoryEvent
    ) -> api.SealedHistoryEvent:
        args: dict[str, object] = {
            "sealed": schema.encode_sealed_policyholder(sealed),
            "event": schema.encode_history_event(event),
        }
        result = await self._call("seal_history", args)
        return schema.decode_sealed_history_event(result, "seal_history")

    async def mint_id_token(self, request: api.IdTokenRequest) -> str:
        args: dict[str, object] = {"request": schema.encode_id_token_request(request)}
        return schema.text(await self._call("mint_id_token", args), "mint_id_token")

    async def attest(self, nonce: bytes) -> bytes:
        return schema.blob(await self._call("attest", {"nonce": nonce}), "attest")

    async def audit_head(self) -> SignedCheckpoint | None:
        result = await self._call("audit_head", {})
        return None if result is None else schema.decode_signed_checkpoint(result, "audit_head")

    async def sign_audit_checkpoint(self, request: api.AuditCheckpointRequest) -> SignedCheckpoint:
        args: dict[str, object] = {"request": schema.encode_audit_request(request)}
        result = await self._call("sign_audit_checkpoint", args)
        return schema.decode_signed_checkpoint(result, "sign_audit_checkpoint")

    # -- key release: enclave to enclave (KeyReleaseSource), not part of EnclaveClient --------
    async def key_release_challenge(self) -> bytes:
        reply = schema.Fields(
            await self._call(KEY_RELEASE_CHALLENGE, {}), KEY_RELEASE_CHALLENGE, ("challenge",)
        )
        return reply.blob("challenge")

    async def release_root_key(
        self, *, challenge: bytes, nonce: bytes, attestation: bytes
    ) -> ReleasedRootKey:
        args: dict[str, object] = {
            "challenge": challenge,
            "nonce": nonce,
            "attestation": attestation,
        }
        result = await self._call(RELEASE_ROOT_KEY, args)
        return schema.decode_released_root_key(result, RELEASE_ROOT_KEY)

    # -- the VAU channel into the enclave (EnclaveClient, issue #6) -------------------------
    async def vau_public_keys(self) -> bytes:
        return schema.blob(await self._call("vau_public_keys", {}), "vau_public_keys")

    async def vau_handshake(self, m1: bytes) -> api.VauReply:
        result = await self._call("vau_handshake", {"m1": m1})
        return schema.decode_vau_reply(result, "vau_handshake")

    async def vau_finish(self, cid: str, m3: bytes) -> api.VauReply:
        result = await self._call("vau_finish", {"cid": cid, "m3": m3})
        return schema.decode_vau_reply(result, "vau_finish")

    async def vau_request(self, cid: str, message: bytes, context: api.VauContext) -> api.VauReply:
        args: dict[str, object] = {
            "cid": cid,
            "message": message,
            "context": schema.encode_vau_context(context),
        }
        return schema.decode_vau_reply(await self._call("vau_request", args), "vau_request")


def _batches(
    sealed: list[api.SealedPolicyholder],
) -> Iterator[list[api.SealedPolicyholder]]:
    """Consecutive batches of at most VERIFY_BATCH policyholders and about VERIFY_BATCH_BYTES."""
    batch: list[api.SealedPolicyholder] = []
    size = 0
    for item in sealed:
        item_size = _SIZE_SLACK + len(item.wrapped_key or b"") + len(item.kvnr_index)
        item_size += sum(len(r.ciphertext) + _SIZE_SLACK for r in item.records)
        item_size += sum(len(d) + _SIZE_SLACK for _, d in item.lookup_indexes)
        if batch and (len(batch) >= VERIFY_BATCH or size + item_size > VERIFY_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += item_size
    if batch:
        yield batch


def _retrieve(task: asyncio.Task[_Connection]) -> None:
    """Mark a failed connect as seen (its callers got the error, if any were still waiting)."""
    if not task.cancelled():
        task.exception()
