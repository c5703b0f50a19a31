"""A lean HTTP/1.1 load generator for the benchmarks (keep-alive, one request per connection
at a time, Content-Length bodies only).

httpx costs more CPU per request than the server under test, so with two cores it would
measure itself. This client does the minimum a load generator like wrk does: write the
request, read the status line, the headers and exactly Content-Length bytes. It refuses
chunked or close-delimited responses instead of guessing.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> Any:
        return json.loads(self.body)


class LoadClient:
    """Requests to one origin over a pool of keep-alive connections."""

    def __init__(self, base: str, *, connections: int) -> None:
        parts = urlsplit(base)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        self._authority = f"{self._host}:{self._port}".encode()
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._slots = asyncio.Semaphore(connections)

    async def __aenter__(self) -> LoadClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for _, writer in self._idle:
            writer.close()
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
            body = json.dumps(json_body).encode()
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
            reader, writer = conn
            writer.write(raw)
            status_line = await reader.readuntil(b"\r\n")
            header_block = await reader.readuntil(b"\r\n\r\n")
            status = int(status_line.split(b" ", 2)[1])
            fields: dict[str, str] = {}
            for line in header_block.decode("latin-1").split("\r\n"):
                if line:
                    name, _, value = line.partition(":")
                    fields[name.strip().lower()] = value.strip()
            if "content-length" not in fields:
                writer.close()
                raise RuntimeError(f"{method} {path}: response without Content-Length")
            payload = await reader.readexactly(int(fields["content-length"]))
            if fields.get("connection", "").lower() == "close":
                writer.close()
            else:
                self._idle.append(conn)
        return Reply(status=status, headers=fields, body=payload)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(self._host, self._port)
