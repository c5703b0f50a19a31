"""The benchmarks' load generator (bench/loadgen.py) against a scripted HTTP server on loopback:
replies split at any byte, keep-alive reuse, and every reply it must refuse."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import parse_qs

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import loadgen

Script = Callable[[bytes], list[bytes]]  # a request -> the chunks to send back


@asynccontextmanager
async def scripted_server(
    script: Script, *, close_after_reply: bool = False
) -> AsyncIterator[tuple[str, list[bytes], list[int]]]:
    """A server that answers each request with the chunks ``script`` returns, flushing each
    chunk apart (and closes after it, with ``close_after_reply``); yields its base URL, the
    requests it saw and the ports they came from."""
    seen: list[bytes] = []
    peers: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for _ in range(50):  # bounded: a test sends only a few requests per connection
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.decode("latin-1").split("\r\n"):
                    if line.lower().startswith("content-length:"):
                        length = int(line.split(":", 1)[1])
                request = head + await reader.readexactly(length)
                seen.append(request)
                peers.append(writer.get_extra_info("peername")[1])
                for chunk in script(request):
                    writer.write(chunk)
                    await writer.drain()
                    await asyncio.sleep(0)
                if close_after_reply:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", seen, peers
    finally:
        server.close()
        await server.wait_closed()


def ok(body: bytes, *extra: bytes) -> bytes:
    head = [b"HTTP/1.1 200 OK", b"Content-Length: " + str(len(body)).encode(), *extra]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


async def test_a_reply_split_at_every_byte_is_read_whole_and_the_connection_reused() -> None:
    async with scripted_server(lambda _: bytewise(ok(b'{"a": [1, 2]}'))) as (base, seen, peers):
        async with loadgen.LoadClient(base, connections=1) as http:
            first = await http.post("/x", json_body={"k": "v"})
            second = await http.get("/y", params={"q": "a b&c"})
    assert first.status == 200 and first.json() == {"a": [1, 2]}
    assert second.json() == {"a": [1, 2]}
    assert seen[0].startswith(b"POST /x HTTP/1.1\r\n") and seen[0].endswith(b'{"k":"v"}')
    assert seen[1].startswith(b"GET /y?q=a+b%26c HTTP/1.1\r\n")
    assert peers[0] == peers[1]  # one keep-alive connection


async def test_two_replies_in_one_segment_are_not_mixed_up() -> None:
    # the server answers the first request with its reply and stray bytes of a second one
    replies = iter([[ok(b"one") + ok(b"stray")], [ok(b"two")]])
    async with scripted_server(lambda _: next(replies)) as (base, _, _peers):
        async with loadgen.LoadClient(base, connections=1) as http:
            assert (await http.get("/1")).body == b"one"
            with pytest.raises(loadgen.ReplyError, match="no request asked for"):
                await http.get("/2")


async def test_forms_are_encoded_like_urlencode() -> None:
    form = {"client_id": "https://rp.example/x?y", "scope": "openid urn:a", "ä": "€ &="}
    async with scripted_server(lambda _: [ok(b"")]) as (base, seen, _peers):
        async with loadgen.LoadClient(base, connections=1) as http:
            await http.post("/f", data=form)
            await http.post("/f", data=form)  # the escaped values come from the cache
    for request in seen:
        body = request.split(b"\r\n\r\n", 1)[1].decode()
        assert {k: v[0] for k, v in parse_qs(body).items()} == form
        assert b"content-type: application/x-www-form-urlencoded" in request


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", "Length"),
        (b"SPDY/3 200 OK\r\nContent-Length: 0\r\n\r\n", "status line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", "ended"),  # then closed
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * (loadgen.MAX_HEAD_BYTES + 10), "too long"),
    ],
)
async def test_replies_it_cannot_read_are_refused(reply: bytes, message: str) -> None:
    async with scripted_server(lambda _: [reply], close_after_reply=True) as (base, _, _peers):
        async with loadgen.LoadClient(base, connections=1) as http:
            with pytest.raises(loadgen.ReplyError, match=message):
                await asyncio.wait_for(http.get("/"), 5)


async def test_connection_close_is_honoured() -> None:
    async with scripted_server(lambda _: [ok(b"a", b"Connection: close")]) as (base, _, peers):
        async with loadgen.LoadClient(base, connections=1) as http:
            await http.get("/1")
            await http.get("/2")
    assert peers[0] != peers[1]  # a new connection for the second request
