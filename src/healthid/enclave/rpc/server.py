"""The enclave's RPC server: an asyncio Unix-socket server in front of the enclave service.

Every host worker holds its own connection; each connection may carry many requests at once
(at most :data:`MAX_INFLIGHT` being served). A request is read, checked against the allow-list
and its limits, decoded field by field and handed to the enclave under a timeout; whatever
goes wrong becomes an error response. A frame too large to read closes its connection (the
stream cannot be resynchronised); nothing a client sends ends the server. The server keeps no
state of its own between requests (no caches of anything decrypted): each request's data key
is unwrapped by the enclave for that request.

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
    MAX_FRAME,
    MIB,
    encode_error,
    encode_ok,
    parse_request,
    read_frame,
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
STREAM_BUFFER: Final = MIB  # StreamReader buffer limit per connection
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
        self._connections: set[asyncio.Task[None]] = set()

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
        if self._path is None:
            try:
                self._server = await asyncio.start_server(
                    self._connection, host=LOOPBACK, port=self._port, limit=STREAM_BUFFER
                )
            except OSError as exc:
                raise EnclaveServerError(
                    f"cannot listen on {LOOPBACK}:{self._port}: {exc.strerror or exc}"
                ) from exc
            self._port = int(self._server.sockets[0].getsockname()[1])
            return
        sock = _bind(self._path)
        st = os.stat(self._path)
        self._inode = (st.st_dev, st.st_ino)
        self._server = await asyncio.start_unix_server(
            self._connection, sock=sock, limit=STREAM_BUFFER
        )

    async def aclose(self) -> None:
        """Stop listening, end every connection, remove the socket file."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
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

    # -- one connection -------------------------------------------------------------------
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        me = asyncio.current_task()
        if me is not None:
            self._connections.add(me)
        session = Session(self._enclave)
        lock = asyncio.Lock()
        slots = asyncio.Semaphore(self._max_inflight)
        tasks: set[asyncio.Task[None]] = set()

        def finished(task: asyncio.Task[None]) -> None:
            tasks.discard(task)
            slots.release()

        try:
            while True:
                try:
                    payload = await read_frame(reader, max_size=MAX_FRAME)
                except FrameTooLarge as exc:
                    await _send(writer, lock, encode_error(None, exc.code, str(exc)))
                    return
                except (asyncio.IncompleteReadError, OSError):
                    return
                await slots.acquire()
                task = asyncio.create_task(self._answer(session, payload, writer, lock))
                tasks.add(task)
                task.add_done_callback(finished)
        except asyncio.CancelledError:
            # the server is closing: end this handler quietly (asyncio 3.11's stream callback
            # would report a cancelled handler as an unhandled error at every shutdown)
            return
        finally:
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            session.close()
            writer.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await writer.wait_closed()
            if me is not None:
                self._connections.discard(me)

    async def _answer(
        self,
        session: Session,
        payload: bytes,
        writer: asyncio.StreamWriter,
        lock: asyncio.Lock,
    ) -> None:
        response = await self._respond(session, payload)
        with contextlib.suppress(OSError):
            await _send(writer, lock, response)

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
            async with asyncio.timeout(method.timeout):
                result = await method.handler(session, args)
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


async def _send(writer: asyncio.StreamWriter, lock: asyncio.Lock, data: bytes) -> None:
    async with lock:
        writer.write(data)
        await writer.drain()


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
