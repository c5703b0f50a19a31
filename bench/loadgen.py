"""A lean HTTP/1.1 load generator for the benchmarks (keep-alive, one request per connection
at a time, Content-Length bodies only).

httpx costs more CPU per request than the server under test, so with two cores it would
measure itself. This client does the minimum a load generator like wrk does: write the
request, read the status line, the headers and exactly Content-Length bytes. It refuses
chunked or close-delimited responses instead of guessing.

Each connection is an :class:`asyncio.Protocol`: the reply is cut out of the bytes in the
transport's callback, without a ``StreamReader`` and its awaits per line (this client shares
the two cores with the server it measures, so what it spends is taken from the server).
Form values that repeat (client id, redirect URI, scopes) are escaped once.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import quote_plus, urlsplit

import orjson

MAX_HEAD_BYTES = 64 * 1024  # a longer status line and header block is refused


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> Any:
        return orjson.loads(self.body)


class ReplyError(RuntimeError):
    """The server's answer is not one this client reads (or the connection ended)."""


@functools.lru_cache(maxsize=4096)
def _quoted(text: str) -> str:
    return quote_plus(text)


def urlencode(fields: dict[str, str]) -> str:
    """``urllib.parse.urlencode`` for text values, with repeated values escaped once."""
    return "&".join(f"{_quoted(name)}={_quoted(value)}" for name, value in fields.items())


class _Connection(asyncio.Protocol):
    """One keep-alive connection; :meth:`exchange` sends a request and waits for its reply."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[Reply] | None = None
        self._head: tuple[int, dict[str, str], int, int] | None = None  # status, fields, at, len
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._waiter is not None and not self._waiter.done():
            try:
                reply = self._take()
            except ReplyError as exc:
                self.abort(exc)
                return
            if reply is not None:
                self._waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.abort(ReplyError(f"the connection ended before the reply: {exc}"))

    def abort(self, exc: Exception) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)

    def _take(self) -> Reply | None:
        """The reply, once all of it is in the buffer; None until then."""
        buffer = self._buffer
        if self._head is None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD_BYTES:
                    raise ReplyError("the reply's head is too long")
                return None
            lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
            parts = lines[0].split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
                raise ReplyError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
            fields: dict[str, str] = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                fields[name.strip().lower()] = value.strip()
            declared = fields.get("content-length", "")
            if not declared.isdigit():
                raise ReplyError("response without Content-Length")
            self._head = (int(parts[1]), fields, end + 4, int(declared))
        status, fields, start, length = self._head
        if len(buffer) < start + length:
            return None
        body = bytes(buffer[start : start + length])
        del buffer[: start + length]
        self._head = None
        return Reply(status=status, headers=fields, body=body)

    async def exchange(self, raw: bytes) -> Reply:
        if self.closed or self.transport is None:
            raise ReplyError("the connection is closed")
        if self._buffer:
            raise ReplyError("bytes arrived that no request asked for")
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        try:
            return await self._waiter
        finally:
            self._waiter = None


class LoadClient:
    """Requests to one origin over a pool of keep-alive connections."""

    def __init__(self, base: str, *, connections: int) -> None:
        parts = urlsplit(base)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        self._authority = f"{self._host}:{self._port}".encode()
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(connections)

    async def __aenter__(self) -> LoadClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for conn in self._idle:
            if conn.transport is not None:
                conn.transport.close()
        self._idle.clear()

    async def get(
        self,
        path: str,
        *,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        if params:
            path = f"{path}?{urlencode(params)}"
        return await self.request("GET", path, headers=headers)

    async def post(
        self,
        path: str,
        *,
        data: dict[str, str] | None = None,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        extra = dict(headers or {})
        if data is not None:
            body = urlencode(data).encode()
            extra["content-type"] = "application/x-www-form-urlencoded"
        else:
            body = orjson.dumps(json_body)
            extra["content-type"] = "application/json"
        return await self.request("POST", path, body=body, headers=extra)

    async def request(
        self, method: str, path: str, *, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> Reply:
        head = [f"{method} {path} HTTP/1.1".encode(), b"host: " + self._authority]
        for name, value in (headers or {}).items():
            head.append(f"{name}: {value}".encode())
        if body or method == "POST":
            head.append(b"content-length: " + str(len(body)).encode())
        raw = b"\r\n".join(head) + b"\r\n\r\n" + body
        async with self._slots:
            conn = self._idle.pop() if self._idle else await self._connect()
            try:
                reply = await conn.exchange(raw)
            except BaseException:
                conn.abort(ReplyError("the request was abandoned"))
                raise
            if reply.headers.get("connection", "").lower() == "close":
                conn.abort(ReplyError("closed by the server"))
            else:
                self._idle.append(conn)
        return reply

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(_Connection, self._host, self._port)
        return conn
