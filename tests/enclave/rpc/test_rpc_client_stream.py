"""The host's enclave client reads the answers as they arrive (a protocol, no reader task):
frames split anywhere or packed together, and every way an enclave's stream can go wrong, as
a hand-written enclave sends them."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from healthid.enclave import api
from healthid.enclave.rpc import cbor
from healthid.enclave.rpc.client import RemoteEnclave
from healthid.enclave.rpc.codec import (
    HEADER_SIZE,
    MAX_FRAME,
    encode_error,
    encode_ok,
    frame,
    frame_length,
    parse_request,
)

pytestmark = pytest.mark.both_event_loops  # the host runs on uvloop

STATUS = {"tee": "simulated", "root_key_id": "k1", "version": "1", "warning": None}

# what the stand-in sends for the requests of one connection: (connection number, request
# ids read so far) -> the bytes to write, or None to close the connection
Script = Callable[[int, list[int]], Awaitable[bytes | None]]


class StandIn:
    """An enclave socket that reads request frames and answers as ``script`` says."""

    def __init__(self, path: Path, script: Script) -> None:
        self.path = path
        self.script = script
        self.connections = 0
        self.server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> StandIn:
        self.server = await asyncio.start_unix_server(self._serve, str(self.path))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = self.connections
        self.connections += 1
        ids: list[int] = []
        try:
            while True:
                try:
                    header = await reader.readexactly(HEADER_SIZE)
                    payload = await reader.readexactly(frame_length(header))
                except asyncio.IncompleteReadError:
                    return
                ids.append(parse_request(cbor.decode(payload)).id)
                reply = await self.script(number, ids)
                if reply is None:
                    return
                writer.write(reply)
                await writer.drain()
        finally:
            writer.close()


@pytest.fixture
async def client(socket_dir: Path) -> AsyncIterator[RemoteEnclave]:
    remote = RemoteEnclave(socket_dir / "standin.sock", timeout=2.0)
    yield remote
    await remote.aclose()


def ok(request_id: int) -> bytes:
    return encode_ok(request_id, STATUS)


async def test_answers_split_anywhere_or_packed_together_reach_their_callers(
    socket_dir: Path, client: RemoteEnclave
) -> None:
    held: list[int] = []

    async def script(connection: int, ids: list[int]) -> bytes | None:
        held.append(ids[-1])
        if len(held) < 3:
            return b""  # the first two answers wait for the third
        packed = b"".join(ok(i) for i in reversed(held))  # answered out of order, in one go
        held.clear()
        return packed

    async with StandIn(socket_dir / "standin.sock", script):
        answers = await asyncio.gather(*(client.status() for _ in range(3)))
        assert all(a.root_key_id == "k1" for a in answers)

    async def one_byte_at_a_time(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        header = await reader.readexactly(HEADER_SIZE)
        request = parse_request(cbor.decode(await reader.readexactly(frame_length(header))))
        for byte in ok(request.id):
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.001)
        await reader.read()
        writer.close()

    path = socket_dir / "trickle.sock"
    server = await asyncio.start_unix_server(one_byte_at_a_time, str(path))
    remote = RemoteEnclave(path, timeout=5.0)
    try:
        assert (await remote.status()).version == "1"
    finally:
        await remote.aclose()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("reply", "error", "message"),
    [
        (frame(b"\xff\x00"), api.EnclaveUnavailable, "malformed response"),  # not CBOR
        (struct.pack(">I", MAX_FRAME + 1), api.EnclaveUnavailable, "malformed response"),
        (frame(cbor.encode({"id": 1})), api.EnclaveUnavailable, "malformed response"),
        (encode_error(None, "bad_request", "cannot read"), api.EnclaveError, "cannot read"),
    ],
)
async def test_a_broken_answer_fails_the_open_calls_and_the_next_call_connects_anew(
    socket_dir: Path,
    client: RemoteEnclave,
    reply: bytes,
    error: type[Exception],
    message: str,
) -> None:
    async def script(connection: int, ids: list[int]) -> bytes | None:
        return reply if connection == 0 else ok(ids[-1])

    async with StandIn(socket_dir / "standin.sock", script) as standin:
        with pytest.raises(error, match=message):
            await client.status()
        assert (await client.status()).tee == "simulated"
        assert standin.connections == 2


async def test_an_enclave_that_closes_mid_answer_fails_the_call_at_once(
    socket_dir: Path, client: RemoteEnclave
) -> None:
    async def script(connection: int, ids: list[int]) -> bytes | None:
        return ok(ids[-1])  # the connections after the first

    class Closing(StandIn):
        async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if self.connections == 0:
                self.connections += 1
                header = await reader.readexactly(HEADER_SIZE)
                request = parse_request(cbor.decode(await reader.readexactly(frame_length(header))))
                writer.write(ok(request.id)[:7])  # the header and a little, then the end
                await writer.drain()
                writer.close()
                return
            await super()._serve(reader, writer)

    async with Closing(socket_dir / "standin.sock", script):
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(api.EnclaveUnavailable, match="lost"):
            await client.status()
        assert loop.time() - started < 1.0  # not the call's 2 s limit
        assert (await client.status()).root_key_id == "k1"


async def test_a_large_request_waits_while_the_enclave_reads_slowly(
    socket_dir: Path,
) -> None:
    """The client writes a frame bigger than the socket's buffers while the enclave does not
    read: the call waits (flow control), then completes when the enclave reads."""
    path = socket_dir / "slow.sock"
    sizes: list[int] = []

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.3)  # the client's writes pile up meanwhile
        header = await reader.readexactly(HEADER_SIZE)
        payload = await reader.readexactly(frame_length(header))
        sizes.append(len(payload))
        writer.write(encode_ok(parse_request(cbor.decode(payload)).id, []))
        await writer.drain()
        await reader.read()
        writer.close()

    server = await asyncio.start_unix_server(slow, str(path))
    remote = RemoteEnclave(path, timeout=10.0)
    try:
        assert await remote.verify_policyholders([_sealed(i) for i in range(200)]) == []
        assert sizes and sizes[0] > 200 * 1000
    finally:
        await remote.aclose()
        server.close()
        await server.wait_closed()


def _sealed(i: int) -> api.SealedPolicyholder:
    return api.SealedPolicyholder(
        pseudonym=f"{i:032x}",
        kvnr_index=b"i" * 32,
        root_key_id="k1",
        wrapped_key=b"w" * 60,
        records=(api.SealedRecord(record_type="master", version=1, ciphertext=b"c" * 4000),),
    )
