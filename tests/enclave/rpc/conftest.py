"""Fixtures of the enclave RPC tests: settings, a socket directory, a server task."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from rpc_testlib import enclave_settings, in_process, short_socket_dir

from healthid.enclave.rpc import cbor
from healthid.enclave.rpc.codec import Response, frame, parse_response, read_frame
from healthid.enclave.rpc.methods import METHODS, Method
from healthid.enclave.rpc.server import EnclaveServer
from healthid.enclave.service import Enclave
from healthid.settings import Settings


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in list(os.environ):
        if name.startswith("HEALTHID_"):
            monkeypatch.delenv(name)
    return enclave_settings(tmp_path / "data")


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    with short_socket_dir() as directory:
        yield directory


@dataclass
class Served:
    enclave: Enclave
    socket_path: Path
    server: EnclaveServer


@pytest.fixture
async def served(settings: Settings, socket_dir: Path) -> AsyncIterator[Served]:
    """The real in-process enclave behind a server task on a temporary socket."""
    enclave = in_process(settings)
    server = EnclaveServer(enclave, socket_dir / "enclave.sock")
    await server.start()
    yield Served(enclave=enclave, socket_path=server.socket_path, server=server)
    await server.aclose()
    enclave.close()


async def serve_stub(
    stub: object, path: Path, methods: dict[str, Method] | None = None
) -> EnclaveServer:
    """A server in front of a stand-in enclave (only the methods a test calls)."""
    server = EnclaveServer(stub, path, methods=methods or METHODS)  # type: ignore[arg-type]
    await server.start()
    return server


class RawConnection:
    """A client that speaks frames directly (to send what RemoteEnclave never would)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, path: Path) -> RawConnection:
        reader, writer = await asyncio.open_unix_connection(str(path))
        return cls(reader, writer)

    async def send_bytes(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send(self, message: object) -> None:
        await self.send_bytes(frame(cbor.encode(message)))

    async def receive(self) -> Response:
        async with asyncio.timeout(10):
            return parse_response(cbor.decode(await read_frame(self.reader)))

    async def call(self, request_id: int, method: str, args: dict[str, object]) -> Response:
        await self.send({"id": request_id, "method": method, "args": args})
        return await self.receive()

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()
