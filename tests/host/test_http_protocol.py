"""healthid.host.http_protocol: under a real uvicorn server, each response's head goes out in
one transport write with its body, and everything else behaves as uvicorn's own protocol."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from healthid.host import http_protocol
from healthid.host.http_protocol import HeadCoalescingHttpToolsProtocol
from healthid.runtime import build_app
from healthid.settings import load_settings

WAIT = 10.0  # seconds: the longest any step of a test waits


class _RecordingTransport:
    """The real transport, keeping every write (before it is made, so that a client that
    has read a response finds its write recorded)."""

    def __init__(self, transport: asyncio.Transport, writes: list[bytes]) -> None:
        self._transport = transport
        self.writes = writes

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self._transport.write(data)

    def writelines(self, data: Any) -> None:  # would be one write too; recorded as one
        self.writes.append(b"".join(data))
        self._transport.writelines(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class RecordingProtocol(HeadCoalescingHttpToolsProtocol):
    """Records each connection's transport writes (one list per connection, in order of
    connection) and how often the transport asked to pause writing."""

    connections: ClassVar[list[list[bytes]]] = []
    pauses: ClassVar[int] = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        writes: list[bytes] = []
        RecordingProtocol.connections.append(writes)
        super().connection_made(_RecordingTransport(transport, writes))  # type: ignore[arg-type]

    def pause_writing(self) -> None:
        RecordingProtocol.pauses += 1
        super().pause_writing()


# --- a small ASGI app -------------------------------------------------------------------

JSON_BODY = b'{"ok": true}'
CHUNKS = [b"first", b"second", b"third"]
BIG_CHUNK = b"x" * (1 << 20)
BIG_CHUNKS = 8
BIG_SIZE = len(BIG_CHUNK) * BIG_CHUNKS
stream_gate = threading.Event()  # the stream's second chunk waits for it
waiting_for_disconnect = threading.Event()
disconnect_seen = threading.Event()


async def _read_body(receive: Callable[[], Any]) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return body


async def _start(send: Callable[[Any], Any], status: int, headers: list[Any]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    path = scope["path"]
    length = [(b"content-type", b"application/json"), (b"content-length", b"12")]
    if path == "/json":
        await _start(send, 200, length)
        await send({"type": "http.response.body", "body": JSON_BODY})
    elif path == "/echo":
        body = await _read_body(receive)
        await _start(send, 200, [(b"content-length", str(len(body)).encode())])
        await send({"type": "http.response.body", "body": body})
    elif path == "/stream":  # no content-length: chunked
        await _start(send, 200, [(b"content-type", b"text/plain")])
        for i, chunk in enumerate(CHUNKS):
            if i == 1:  # the client has the head and the first chunk before this one exists
                await asyncio.to_thread(stream_gate.wait, WAIT)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/big":
        size = str(BIG_SIZE).encode()
        await _start(send, 200, [(b"content-length", size)])
        for i in range(BIG_CHUNKS):
            more = i < BIG_CHUNKS - 1
            await send({"type": "http.response.body", "body": BIG_CHUNK, "more_body": more})
    elif path == "/empty":
        await _start(send, 200, [(b"content-length", b"0")])
        await send({"type": "http.response.body", "body": b""})
    elif path in ("/204", "/304"):
        await _start(send, int(path[1:]), [])
        await send({"type": "http.response.body", "body": b""})
    elif path == "/raise-after-start":
        await _start(send, 200, length)
        raise RuntimeError("boom after start")
    elif path == "/return-after-start":
        await _start(send, 200, length)
    elif path == "/wait-for-disconnect":
        await _start(send, 200, length)
        waiting_for_disconnect.set()
        while (await receive())["type"] != "http.disconnect":
            pass
        await send({"type": "http.response.body", "body": JSON_BODY})  # uvicorn drops it
        disconnect_seen.set()
    else:
        await _start(send, 404, [(b"content-length", b"0")])
        await send({"type": "http.response.body", "body": b""})


# --- server and client helpers ----------------------------------------------------------


@contextmanager
def serving(app: Any, loop: str = "uvloop", lifespan: str = "off") -> Iterator[int]:
    """A uvicorn server with RecordingProtocol on 127.0.0.1 in a thread; yields its port."""
    RecordingProtocol.connections.clear()
    RecordingProtocol.pauses = 0
    stream_gate.clear()
    waiting_for_disconnect.clear()
    disconnect_seen.clear()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app,
        http=RecordingProtocol,
        loop=loop,
        lifespan=lifespan,
        log_level="warning",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT
    while not server.started:
        assert thread.is_alive(), "uvicorn did not start"
        assert time.monotonic() < deadline, "uvicorn did not start in time"
        time.sleep(0.01)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(WAIT)
        sock.close()
        assert not thread.is_alive(), "uvicorn did not stop"


@pytest.fixture(params=["uvloop", "asyncio"])
def port(request: pytest.FixtureRequest) -> Iterator[int]:
    with serving(asgi_app, loop=request.param) as bound:
        yield bound


@contextmanager
def connect(port: int) -> Iterator[tuple[socket.socket, BinaryIO]]:
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        with sock.makefile("rb") as reader:
            yield sock, reader


def request(method: str, path: str, body: bytes = b"", **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: test"]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def read_response(reader: BinaryIO, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
    """One response: status, headers (lower-case names), body (chunked framing removed)."""
    status_line = reader.readline()
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, value = line.decode().split(":", 1)
        headers[name.strip().lower()] = value.strip()
    body = b""
    if head_only or status in (204, 304) or status < 200:
        pass
    elif "content-length" in headers:
        body = reader.read(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        while size := int(reader.readline().strip(), 16):
            body += reader.read(size)
            assert reader.readline() == b"\r\n"
        assert reader.readline() == b"\r\n"
    return status, headers, body


def writes() -> list[bytes]:
    """The one connection's writes."""
    assert len(RecordingProtocol.connections) == 1, RecordingProtocol.connections
    return RecordingProtocol.connections[0]


def wait_closed(reader: BinaryIO) -> bytes:
    """What the server still sends before it closes the connection (bounded by the timeout)."""
    return reader.read()


# --- tests ------------------------------------------------------------------------------


def test_json_response_is_one_write_of_head_and_body(port: int) -> None:
    with connect(port) as (sock, reader):
        sock.sendall(request("GET", "/json"))
        status, headers, body = read_response(reader)
    assert (status, body) == (200, JSON_BODY)
    assert headers["content-length"] == "12"
    [only] = writes()
    assert only.startswith(b"HTTP/1.1 200 OK\r\n") and only.endswith(b"\r\n\r\n" + JSON_BODY)


def test_streaming_chunks_arrive_in_order_head_with_the_first(port: int) -> None:
    with connect(port) as (sock, reader):
        sock.sendall(request("GET", "/stream"))
        assert reader.readline() == b"HTTP/1.1 200 OK\r\n"
        while reader.readline() != b"\r\n":
            pass
        # the first chunk is here before the app makes the second: only the head is held
        assert reader.readline() == b"5\r\n" and reader.read(7) == b"first\r\n"
        stream_gate.set()
        rest = b"6\r\nsecond\r\n5\r\nthird\r\n0\r\n\r\n"
        assert reader.read(len(rest)) == rest
    first, *others = writes()
    assert first.startswith(b"HTTP/1.1 200 OK\r\n") and b"transfer-encoding: chunked" in first
    assert first.endswith(b"\r\n\r\n5\r\nfirst\r\n")
    assert others == [b"6\r\nsecond\r\n", b"5\r\nthird\r\n", b"0\r\n\r\n"]


@pytest.mark.parametrize(
    ("method", "path", "status", "length"),
    [("HEAD", "/json", 200, "12"), ("GET", "/empty", 200, "0"), ("GET", "/204", 204, None)],
)
def test_head_request_empty_body_and_204(
    port: int, method: str, path: str, status: int, length: str | None
) -> None:
    """Each: the head in one write, then (same connection) a JSON response after it."""
    with connect(port) as (sock, reader):
        sock.sendall(request(method, path))
        got, headers, body = read_response(reader, head_only=method == "HEAD")
        assert (got, body, headers.get("content-length")) == (status, b"", length)
        assert "transfer-encoding" not in headers
        sock.sendall(request("GET", "/json"))
        assert read_response(reader)[::2] == (200, JSON_BODY)
    head, second = writes()
    assert head.startswith(f"HTTP/1.1 {status} ".encode()) and head.endswith(b"\r\n\r\n")
    assert second.endswith(b"\r\n\r\n" + JSON_BODY)


def test_100_continue_is_sent_before_the_body_is_read(port: int) -> None:
    with connect(port) as (sock, reader):
        head = request("POST", "/echo", b"hello", Expect="100-continue")
        sock.sendall(head[: -len(b"hello")])  # headers only: the client waits
        assert reader.readline() == b"HTTP/1.1 100 Continue\r\n"
        assert reader.readline() == b"\r\n"
        assert writes() == [b"HTTP/1.1 100 Continue\r\n\r\n"]  # not held
        sock.sendall(b"hello")
        assert read_response(reader)[::2] == (200, b"hello")
    interim, final = writes()
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert final.startswith(b"HTTP/1.1 200 OK\r\n") and final.endswith(b"\r\n\r\nhello")


@pytest.mark.parametrize("path", ["/raise-after-start", "/return-after-start"])
def test_app_failing_after_start_closes_with_the_head_delivered(port: int, path: str) -> None:
    with connect(port) as (sock, reader):
        sock.sendall(request("GET", path))
        status, headers, _ = read_response(reader, head_only=True)
        assert (status, headers["content-length"]) == (200, "12")
        assert wait_closed(reader) == b""  # the body never comes: uvicorn closed
    [head] = writes()
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"\r\n\r\n")


def test_client_disconnect_after_start(port: int) -> None:
    """The head is held when the client goes; uvicorn drops the body, nothing is written,
    and the server serves the next connection."""
    with connect(port) as (sock, _reader):
        sock.sendall(request("GET", "/wait-for-disconnect"))
        assert waiting_for_disconnect.wait(WAIT)  # the app has started the response
    assert disconnect_seen.wait(WAIT)
    assert RecordingProtocol.connections == [[]]
    with connect(port) as (sock, reader):
        sock.sendall(request("GET", "/json"))
        assert read_response(reader)[::2] == (200, JSON_BODY)


def test_keep_alive_three_requests_on_one_connection(port: int) -> None:
    with connect(port) as (sock, reader):
        sock.sendall(request("GET", "/json"))
        assert read_response(reader)[::2] == (200, JSON_BODY)
        sock.sendall(request("POST", "/echo", b"abc"))
        assert read_response(reader)[::2] == (200, b"abc")
        sock.sendall(request("GET", "/nope"))
        assert read_response(reader)[::2] == (404, b"")
    assert [w.split(b"\r\n", 1)[0] for w in writes()] == [
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 404 Not Found",
    ]
    assert writes()[1].endswith(b"\r\n\r\nabc")


def test_pipelined_requests_answer_in_order(port: int) -> None:
    with connect(port) as (sock, reader):
        sock.sendall(
            request("GET", "/json")
            + request("HEAD", "/json")
            + request("POST", "/echo", b"xyz")
            + request("GET", "/204")
        )
        assert read_response(reader)[::2] == (200, JSON_BODY)
        assert read_response(reader, head_only=True)[::2] == (200, b"")
        assert read_response(reader)[::2] == (200, b"xyz")
        assert read_response(reader)[::2] == (204, b"")
    assert len(writes()) == 4


def test_connection_close_closes(port: int) -> None:
    with connect(port) as (sock, reader):
        sock.sendall(request("GET", "/json", Connection="close"))
        status, headers, body = read_response(reader)
        assert (status, body, headers["connection"]) == (200, JSON_BODY, "close")
        assert wait_closed(reader) == b""
    [only] = writes()
    assert only.endswith(b"\r\n\r\n" + JSON_BODY)


def test_unparseable_request_gets_uvicorns_400(port: int) -> None:
    with connect(port) as (sock, reader):
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        status, _, body = read_response(reader)
        assert (status, body) == (400, b"Invalid HTTP request received.")
        assert wait_closed(reader) == b""
    [only] = writes()
    assert only.startswith(b"HTTP/1.1 400 Bad Request\r\n")


def test_flow_control_with_a_slow_reader(port: int) -> None:
    """8 MiB the client does not read at first: the transport pauses the writer, and the
    bytes and the pipelined response after them arrive complete."""
    with connect(port) as (sock, reader):
        sock.sendall(request("GET", "/big") + request("GET", "/json"))
        deadline = time.monotonic() + WAIT
        while not RecordingProtocol.pauses:
            assert time.monotonic() < deadline, "the writer never paused"
            time.sleep(0.01)
        status, _, body = read_response(reader)
        assert (status, len(body), set(body)) == (200, BIG_SIZE, {ord("x")})
        assert read_response(reader)[::2] == (200, JSON_BODY)
    first, *_, last = writes()
    assert first.startswith(b"HTTP/1.1 200 OK\r\n") and first.endswith(b"\r\n\r\n" + BIG_CHUNK)
    assert last.endswith(b"\r\n\r\n" + JSON_BODY)


def test_the_import_check_notices_a_changed_uvicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    """If uvicorn wrote the head in two writes, the check (run at import) says so."""
    original = RequestResponseCycle.send

    async def head_in_two_writes(self: RequestResponseCycle, message: Any) -> None:
        if message["type"] == "http.response.start":
            self.transport.write(b"HTTP/1.1 ")
        await original(self, message)

    monkeypatch.setattr(RequestResponseCycle, "send", head_in_two_writes)
    with pytest.raises(RuntimeError, match="writes differently"):
        http_protocol._check_uvicorn()


def test_healthid_app_responses_are_one_write_each(tmp_path: Path, clean_env: None) -> None:
    app = build_app(load_settings(data_dir=tmp_path, enclave_workers=1))
    with serving(app, lifespan="on") as bound, connect(bound) as (sock, reader):
        sock.sendall(request("GET", "/healthz"))
        status, _, health = read_response(reader)
        assert (status, json.loads(health)) == (200, {"status": "ok"})
        payload = json.dumps({"challenge_id": "nope", "device_id": "nope"}).encode()
        sock.sendall(
            request("POST", "/wallet/v1/auth/assertions", payload, Content_Type="application/json")
        )
        status, headers, error = read_response(reader)
        assert 400 <= status < 500 and headers["content-type"].startswith("application/")
        assert isinstance(json.loads(error), dict)
    first, second = writes()
    assert first.startswith(b"HTTP/1.1 200 OK\r\n") and first.endswith(b"\r\n\r\n" + health)
    assert second.startswith(f"HTTP/1.1 {status} ".encode()) and second.endswith(error)
