"""The enclave's RPC server: an asyncio Unix-socket server in front of the enclave service.

Every host worker holds its own connection; each connection may carry many requests at once
(at most :data:`MAX_INFLIGHT` being served; reading pauses beyond). A connection is an asyncio
protocol that cuts frames out of what arrives, without a stream reader and its wake-ups per
frame. A request is checked against the allow-list and its limits, decoded field by field and
handed to the enclave under its method's time limit (one sweep for all requests checks the
limits, not a timer per request); whatever goes wrong becomes an error response. A frame too
large to read closes its connection (the stream cannot be resynchronised); nothing a client
sends ends the server. The server keeps no state of its own between requests (no caches of
anything decrypted): each request's data key is unwrapped by the enclave for that request.

The socket file is created with mode 0600 (the enclave user only). A stale socket file left
by a crashed enclave is replaced; a live one (another enclave serving) is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
from pathlib import Path
from types import TracebackType
from typing import Final

from healthid.enclave import api
from healthid.enclave.rpc import cbor
from healthid.enclave.rpc.codec import (
    HEADER_SIZE,
    MAX_FRAME,
    encode_error,
    encode_ok,
    frame_length,
    parse_request,
    request_id_of,
)
from healthid.enclave.rpc.errors import (
    CODE_INTERNAL,
    CODE_TIMEOUT,
    CodecError,
    FrameTooLarge,
    UnknownMethod,
    error_code,
)
from healthid.enclave.rpc.methods import METHODS, Method, Session
from healthid.enclave.rpc.schema import Fields

MAX_INFLIGHT: Final = 64  # requests served at once per connection; the next frame waits
SOCKET_MODE: Final = 0o600
# A request over its method's time is answered "did not finish in time" at most this share of
# its limit late (the sweep runs at this share of the shortest limit, at most once a second).
SWEEP_SHARE: Final = 0.25
MAX_SWEEP_INTERVAL: Final = 1.0
_log = logging.getLogger(__name__)


LOOPBACK: Final = "127.0.0.1"  # the TCP listener never binds another address


class EnclaveServerError(Exception):
    """The server cannot listen on its socket."""


class EnclaveServer:
    """Serves an :class:`~healthid.enclave.api.EnclaveClient` on a Unix socket (mode 0600), or
    on a TCP port of the loopback address (``port``: under Gramine, whose Unix sockets do not
    reach the host; anyone on the machine can connect, so run it where only healthid runs)."""

    def __init__(
        self,
        enclave: api.EnclaveClient,
        socket_path: Path | None = None,
        *,
        port: int | None = None,
        methods: dict[str, Method] = METHODS,
        max_inflight: int = MAX_INFLIGHT,
    ) -> None:
        if (socket_path is None) == (port is None):
            raise ValueError("give a socket path or a loopback port")
        self._enclave = enclave
        self._path = None if socket_path is None else Path(socket_path)
        self._port = port
        self._methods = methods
        self._max_inflight = max_inflight
        self._server: asyncio.Server | None = None
        self._inode: tuple[int, int] | None = None
        self._connections: set[_Connection] = set()
        # the requests being served and when each must have finished (loop time); the sweep
        # cancels those over it and marks them, so that they answer "did not finish in time"
        self._deadlines: dict[asyncio.Task[None], float] = {}
        self._overdue: set[asyncio.Task[None]] = set()
        self._sweep_every = min(
            MAX_SWEEP_INTERVAL, SWEEP_SHARE * min(m.timeout for m in methods.values())
        )
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def socket_path(self) -> Path | None:
        return self._path

    @property
    def port(self) -> int | None:
        """The TCP port listened on (the one the system chose, when started with port 0)."""
        return self._port

    @property
    def address(self) -> str:
        return str(self._path) if self._path is not None else f"{LOOPBACK}:{self._port}"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self._path is None:
            try:
                self._server = await loop.create_server(
                    self._new_connection, host=LOOPBACK, port=self._port
                )
            except OSError as exc:
                raise EnclaveServerError(
                    f"cannot listen on {LOOPBACK}:{self._port}: {exc.strerror or exc}"
                ) from exc
            self._port = int(self._server.sockets[0].getsockname()[1])
        else:
            sock = _bind(self._path)
            st = os.stat(self._path)
            self._inode = (st.st_dev, st.st_ino)
            self._server = await loop.create_unix_server(self._new_connection, sock=sock)
        self._sweeper = asyncio.create_task(self._sweep())

    async def aclose(self) -> None:
        """Stop listening, end every connection, remove the socket file."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.cancel()
        tasks = [t for connection in self._connections for t in connection.tasks]
        for connection in list(self._connections):
            connection.close()
        await asyncio.gather(*tasks, *([sweeper] if sweeper else []), return_exceptions=True)
        if server is not None:
            await server.wait_closed()
        if self._path is not None:
            self._unlink()

    async def __aenter__(self) -> EnclaveServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _unlink(self) -> None:
        """Remove the socket file if it is still ours (not one a successor bound)."""
        path = self._path
        if path is None:
            return
        with contextlib.suppress(OSError):
            st = os.lstat(path)
            if (st.st_dev, st.st_ino) == self._inode:
                path.unlink()

    # -- connections and deadlines --------------------------------------------------------
    def _new_connection(self) -> _Connection:
        return _Connection(self, Session(self._enclave), self._max_inflight)

    async def _sweep(self) -> None:
        """Cancel each request that is over its time (see _respond)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._sweep_every)
            if not self._deadlines:
                continue
            now = loop.time()
            for task, deadline in list(self._deadlines.items()):
                if deadline <= now and task not in self._overdue:
                    self._overdue.add(task)
                    task.cancel()

    async def _respond(self, session: Session, payload: bytes) -> bytes:
        request_id: int | None = None
        name = "request"
        try:
            message = cbor.decode(payload)
            request_id = request_id_of(message)
            request = parse_request(message)
            answered = request.id
            method = self._methods.get(request.method)
            if method is None:
                raise UnknownMethod(f"unknown method {request.method!r}")
            name = method.name
            if len(payload) > method.max_request:
                raise FrameTooLarge(
                    f"{name}: request of {len(payload)} bytes exceeds {method.max_request}"
                )
            args = Fields(request.args, name, method.args)
            me = asyncio.current_task()
            assert me is not None  # noqa: S101 - every request is served in a task of its own
            self._deadlines[me] = me.get_loop().time() + method.timeout
            try:
                result = await method.handler(session, args)
            except asyncio.CancelledError:
                if me not in self._overdue:
                    raise
                if me.uncancel() > 0:  # cancelled for another reason too: the server closes
                    raise
                raise TimeoutError from None
            finally:
                del self._deadlines[me]
                self._overdue.discard(me)
        except TimeoutError:
            _log.warning("enclave rpc: %s (request %s) timed out", name, request_id)
            return encode_error(request_id, CODE_TIMEOUT, f"{name} did not finish in time")
        except Exception as exc:
            return _error(request_id, name, exc)
        try:
            response = encode_ok(answered, result)
        except CodecError as exc:
            _log.error("enclave rpc: %s result cannot be encoded: %s", name, exc)
            return encode_error(request_id, CODE_INTERNAL, f"{name}: internal enclave error")
        if len(response) > MAX_FRAME:
            return encode_error(request_id, FrameTooLarge.code, f"{name}: result too large")
        return response


def _error(request_id: int | None, name: str, exc: Exception) -> bytes:
    code = error_code(exc)
    if code is None:
        # Its message may carry request data: log and answer the type only (rule 15).
        _log.error("enclave rpc: %s failed with %s", name, type(exc).__name__)
        return encode_error(
            request_id, CODE_INTERNAL, f"{name}: internal enclave error ({type(exc).__name__})"
        )
    return encode_error(request_id, code, str(exc))


class _Connection(asyncio.Protocol):
    """One client connection: frames are cut out of the bytes as they arrive, and each request
    is served in a task of its own (at most ``max_inflight`` at once: beyond that no frame is
    taken and reading pauses). Each answer is written whole, in one write; while the client
    reads slower than we answer, the tasks that wrote wait. A frame over MAX_FRAME is answered
    with an error and closes the connection (the stream cannot be resynchronised); the end
    of the connection cancels its requests."""

    def __init__(self, server: EnclaveServer, session: Session, max_inflight: int) -> None:
        self._server = server
        self._session = session
        self._max_inflight = max_inflight
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._reading = True
        self._writable: asyncio.Future[None] | None = None  # while the client's buffer is full
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # noqa: S101 - a stream server's
        self._transport = transport
        self._server._connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self._transport is None:
            return  # closed: what still arrives is dropped
        self._buffer += data
        self._take_frames()

    def _take_frames(self) -> None:
        transport = self._transport
        if transport is None:
            return
        buffer, tasks = self._buffer, self.tasks
        while len(tasks) < self._max_inflight and len(buffer) >= HEADER_SIZE:
            try:
                length = frame_length(buffer, max_size=MAX_FRAME)
            except FrameTooLarge as exc:
                transport.write(encode_error(None, exc.code, str(exc)))
                self.close()
                return
            end = HEADER_SIZE + length
            if len(buffer) < end:
                break
            payload = bytes(buffer[HEADER_SIZE:end])
            del buffer[:end]
            task = asyncio.get_running_loop().create_task(self._answer(payload))
            tasks.add(task)
            task.add_done_callback(self._finished)
        full = len(tasks) >= self._max_inflight
        if full == self._reading:  # reading pauses while every slot is taken
            self._reading = not full
            if full:
                transport.pause_reading()
            else:
                transport.resume_reading()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not self._reading or self._buffer:
            self._take_frames()

    async def _answer(self, payload: bytes) -> None:
        response = await self._server._respond(self._session, payload)
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        transport.write(response)
        if self._writable is not None:
            await self._writable

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        waiter, self._writable = self._writable, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self) -> None:
        """End the connection (what was written is still sent) and its requests."""
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()
        self._end()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._end()

    def _end(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        self.resume_writing()
        self._buffer.clear()
        self._session.close()
        self._server._connections.discard(self)


def _bind(path: Path) -> socket.socket:
    """A listening socket at ``path``, mode 0600 from the start (umask), stale file replaced."""
    _remove_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        raise EnclaveServerError(f"cannot listen on {path}: {exc.strerror or exc}") from exc
    finally:
        os.umask(old_umask)
    os.chmod(path, SOCKET_MODE)
    sock.setblocking(False)
    return sock


def _remove_stale(path: Path) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise EnclaveServerError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        path.unlink(missing_ok=True)  # left by an enclave that is gone
        return
    finally:
        probe.close()
    raise EnclaveServerError(f"another enclave is serving on {path}")


async def serve(enclave: api.EnclaveClient, socket_path: Path, stop: asyncio.Event) -> None:
    """Serve ``enclave`` on ``socket_path`` until ``stop`` is set."""
    async with EnclaveServer(enclave, socket_path=socket_path):
        await stop.wait()
