"""RedisEphemeralStore specifics: namespacing, millisecond TTLs, failure mapping, processes."""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import hiredis
import pytest
import redis.asyncio as aioredis

from healthid.store.ephemeral import (
    EphemeralStore,
    EphemeralStoreError,
    EphemeralStoreUnavailable,
    RedisEphemeralStore,
    open_ephemeral_store,
)
from healthid.store.ephemeral.redis import (
    COMMAND_RETRIES,
    SOCKET_CONNECT_TIMEOUT_SECONDS,
    SOCKET_TIMEOUT_SECONDS,
    require_server_version,
    ttl_to_ms,
)

LONG_TTL = 60.0
RACE_PROCESSES = 8
PROCESS_READY_SECONDS = 30.0
WORKER = Path(__file__).with_name("_ephemeral_race_worker.py")
TIMEOUT_SLACK_SECONDS = 1.5


@pytest.fixture
async def store(redis_url: str, redis_prefix: str) -> AsyncIterator[RedisEphemeralStore]:
    redis_store = RedisEphemeralStore.from_url(redis_url, prefix=redis_prefix)
    yield redis_store
    await redis_store.aclose()


def closed_port() -> int:
    """A port on 127.0.0.1 that was just free: nothing listens there."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# --- namespacing and TTL units --------------------------------------------------------


@pytest.mark.redis
async def test_every_key_is_namespaced_by_the_prefix(
    store: RedisEphemeralStore, raw_redis: aioredis.Redis, redis_prefix: str
) -> None:
    await store.put("k", b"v", LONG_TTL)
    await store.incr("n", LONG_TTL)
    assert await raw_redis.get(f"{redis_prefix}k") == b"v"
    assert await raw_redis.get(f"{redis_prefix}n") == b"1"
    assert await raw_redis.exists("k", "n") == 0


@pytest.mark.redis
async def test_prefixes_forbid_reading_another_namespace(
    store: RedisEphemeralStore, redis_url: str, redis_prefix: str
) -> None:
    other = RedisEphemeralStore.from_url(redis_url, prefix=f"{redis_prefix}other:")
    try:
        await store.put("k", b"v", LONG_TTL)
        assert await other.get("k") is None
        assert await other.consume("k") is None
    finally:
        await other.aclose()
    assert await store.get("k") == b"v"


@pytest.mark.redis
async def test_ttl_is_sent_in_milliseconds(
    store: RedisEphemeralStore, raw_redis: aioredis.Redis, redis_prefix: str
) -> None:
    await store.put("k", b"v", 90.0)
    assert 89_000 < await raw_redis.pttl(f"{redis_prefix}k") <= 90_000


def test_ttl_rounds_up_to_whole_milliseconds() -> None:
    assert ttl_to_ms(90.0) == 90_000
    assert ttl_to_ms(1.0001) == 1001
    assert ttl_to_ms(0.0001) == 1


@pytest.mark.redis
async def test_incr_forbids_a_counter_without_expiry(
    store: RedisEphemeralStore, raw_redis: aioredis.Redis, redis_prefix: str
) -> None:
    await raw_redis.set(f"{redis_prefix}n", b"5")
    assert await store.incr("n", LONG_TTL) == 6
    assert 0 < await raw_redis.pttl(f"{redis_prefix}n") <= LONG_TTL * 1000


@pytest.mark.redis
async def test_ttl_refuses_a_key_without_expiry(
    store: RedisEphemeralStore, raw_redis: aioredis.Redis, redis_prefix: str
) -> None:
    await raw_redis.set(f"{redis_prefix}k", b"v")
    with pytest.raises(EphemeralStoreError):
        await store.ttl("k")


# --- construction ---------------------------------------------------------------------


def test_from_url_sets_small_timeouts_and_no_retries() -> None:
    redis_store = RedisEphemeralStore.from_url("redis://127.0.0.1:6379/15")
    kwargs = redis_store._client.connection_pool.connection_kwargs
    assert kwargs["socket_connect_timeout"] == SOCKET_CONNECT_TIMEOUT_SECONDS
    assert kwargs["socket_timeout"] == SOCKET_TIMEOUT_SECONDS
    assert kwargs["retry"].get_retries() == COMMAND_RETRIES == 0


def test_store_rejects_a_client_that_decodes_responses() -> None:
    client = aioredis.Redis.from_url("redis://127.0.0.1:6379/15", decode_responses=True)
    with pytest.raises(ValueError, match="decode"):
        RedisEphemeralStore(client)


@pytest.mark.parametrize("prefix", ["", "has space", "ü:", "p" * 65, "tab\t"])
def test_store_rejects_invalid_prefix(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        RedisEphemeralStore.from_url("redis://127.0.0.1:6379/15", prefix=prefix)


def test_factory_with_redis_url_opens_the_redis_store() -> None:
    opened = open_ephemeral_store("redis://127.0.0.1:6379/15", prefix="app:")
    assert isinstance(opened, RedisEphemeralStore)
    assert opened.prefix == "app:"


@pytest.mark.parametrize("version", ["6.0.16", "5.0.14", "2.8.0", "garbage", ""])
def test_server_version_check_rejects_servers_without_getdel(version: str) -> None:
    with pytest.raises(EphemeralStoreError):
        require_server_version(version)


@pytest.mark.parametrize("version", ["6.2.0", "7.0.15", "7.2.4", "8.0.0"])
def test_server_version_check_accepts_servers_with_getdel(version: str) -> None:
    require_server_version(version)


# --- backend failures: fail closed, never "not found" ---------------------------------

OPERATIONS = {
    "put": lambda s: s.put("k", b"v", LONG_TTL),
    "put_if_absent": lambda s: s.put_if_absent("k", b"v", LONG_TTL),
    "get": lambda s: s.get("k"),
    "consume": lambda s: s.consume("k"),
    "delete": lambda s: s.delete("k"),
    "incr": lambda s: s.incr("k", LONG_TTL),
    "ttl": lambda s: s.ttl("k"),
    "ping": lambda s: s.ping(),
}


@pytest.mark.parametrize("operation", list(OPERATIONS))
async def test_redis_store_forbids_not_found_when_backend_is_down(operation: str) -> None:
    redis_store: EphemeralStore = RedisEphemeralStore.from_url(
        f"redis://127.0.0.1:{closed_port()}/0", prefix="down:"
    )
    try:
        with pytest.raises(EphemeralStoreUnavailable):
            await OPERATIONS[operation](redis_store)
    finally:
        await redis_store.aclose()


@pytest.mark.both_event_loops
async def test_redis_store_forbids_waiting_on_a_silent_server() -> None:
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accept and never answer
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    redis_store = RedisEphemeralStore.from_url(f"redis://127.0.0.1:{port}/0", prefix="mute:")
    started = time.monotonic()
    try:
        with pytest.raises(EphemeralStoreUnavailable):
            await redis_store.consume("k")
    finally:
        await redis_store.aclose()
        server.close()
        await server.wait_closed()
    assert time.monotonic() - started < SOCKET_TIMEOUT_SECONDS + TIMEOUT_SLACK_SECONDS


class FakeRedis:
    """A RESP server for the failure cases a real Redis does not stage on demand: it answers
    redis-py's handshake and hands every other command to ``answer`` (connection number,
    command) -> the reply bytes, or None to close the connection without a reply."""

    def __init__(
        self,
        answer: Callable[[int, list[bytes]], Awaitable[bytes | None]],
        *,
        trickle: bool = False,
    ) -> None:
        """``trickle``: every reply is written a byte at a time, each byte its own segment."""
        self.answer = answer
        self.trickle = trickle
        self.seen: list[tuple[int, list[bytes]]] = []
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"redis://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/0"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = self.connections
        self.connections += 1
        parser = hiredis.Reader()
        try:
            while data := await reader.read(65536):
                parser.feed(data)
                while (command := parser.gets()) is not False:
                    if command[0].upper() == b"CLIENT":  # redis-py's CLIENT SETINFO
                        writer.write(b"+OK\r\n")
                        continue
                    self.seen.append((number, command))
                    reply = await self.answer(number, command)
                    if reply is None:
                        return
                    if not self.trickle:
                        writer.write(reply)
                        continue
                    for i in range(len(reply)):
                        writer.write(reply[i : i + 1])
                        await writer.drain()
                        await asyncio.sleep(0.001)
        finally:
            writer.close()


@pytest.mark.both_event_loops
@pytest.mark.parametrize(
    "first_reply",
    [
        None,  # the connection closes without a reply
        b"?what\r\n",  # not RESP
        b"-ERR max number of clients reached\r\n",  # redis-py's ConnectionError reply
    ],
)
async def test_a_command_whose_connection_is_lost_fails_closed_and_is_not_sent_again(
    first_reply: bytes | None,
) -> None:
    async def answer(connection: int, command: list[bytes]) -> bytes | None:
        return first_reply if connection == 0 else b"$1\r\nv\r\n"

    fake = FakeRedis(answer)
    async with fake as url:
        redis_store = RedisEphemeralStore.from_url(url, prefix="lost:")
        try:
            with pytest.raises(EphemeralStoreUnavailable):
                await redis_store.get("k")
            assert await redis_store.get("k") == b"v"  # the next one connects anew
        finally:
            await redis_store.aclose()
    assert fake.seen == [(0, [b"GET", b"lost:k"]), (1, [b"GET", b"lost:k"])]


@pytest.mark.both_event_loops
async def test_a_lost_connection_fails_its_callers_at_once_not_at_the_deadline() -> None:
    """The server closing the connection is seen when it happens (the end of the stream),
    not when the reply's deadline passes."""

    async def answer(connection: int, command: list[bytes]) -> bytes | None:
        await asyncio.sleep(0.05)  # everything sent is read: the close is an orderly end
        return None  # close without a reply

    async with FakeRedis(answer) as url:
        redis_store = RedisEphemeralStore.from_url(url, prefix="eof:")
        try:
            started = time.monotonic()
            with pytest.raises(EphemeralStoreUnavailable):
                await redis_store.get("k")
            elapsed = time.monotonic() - started
        finally:
            await redis_store.aclose()
    assert elapsed < SOCKET_TIMEOUT_SECONDS / 2


@pytest.mark.both_event_loops
async def test_replies_that_arrive_a_byte_at_a_time_reach_their_callers_in_order() -> None:
    async def answer(connection: int, command: list[bytes]) -> bytes | None:
        if command[0] == b"GET":
            key = command[1]
            return b"$%d\r\n%b\r\n" % (len(key), key)
        return b":42\r\n" if command[0] == b"DEL" else b"-ERR wrong kind of value\r\n"

    async with FakeRedis(answer, trickle=True) as url:
        redis_store = RedisEphemeralStore.from_url(url, prefix="t:")
        try:
            replies = await asyncio.gather(*(redis_store.get(f"k{i}") for i in range(4)))
            assert replies == [f"t:k{i}".encode() for i in range(4)]
            assert await redis_store.delete("k") is True
            with pytest.raises(EphemeralStoreError):  # an error reply, read whole
                await redis_store.ttl("k")
            assert await redis_store.get("again") == b"t:again"  # still in step
        finally:
            await redis_store.aclose()


@pytest.mark.both_event_loops
async def test_a_cancelled_caller_forbids_its_reply_reaching_the_next() -> None:
    async def answer(connection: int, command: list[bytes]) -> bytes | None:
        key = command[1]
        if key == b"c:first":
            await asyncio.sleep(0.05)  # late: its caller gives up before the reply comes
        return b"$%d\r\n%b\r\n" % (len(key), key)

    async with FakeRedis(answer) as url:
        redis_store = RedisEphemeralStore.from_url(url, prefix="c:")
        try:
            first = asyncio.create_task(redis_store.get("first"))
            await asyncio.sleep(0.01)  # sent, its reply owed
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
            assert await redis_store.get("second") == b"c:second"
            replies = await asyncio.gather(*(redis_store.get(f"k{i}") for i in range(20)))
            assert replies == [f"c:k{i}".encode() for i in range(20)]
        finally:
            await redis_store.aclose()


@pytest.mark.both_event_loops
async def test_pipelined_commands_fail_together_when_the_server_stops_answering() -> None:
    async def answer(connection: int, command: list[bytes]) -> bytes | None:
        await asyncio.sleep(3600)  # never
        return None

    async with FakeRedis(answer) as url:
        redis_store = RedisEphemeralStore.from_url(url, prefix="mute:")
        started = time.monotonic()
        try:
            results = await asyncio.gather(
                *(redis_store.get(f"k{i}") for i in range(10)), return_exceptions=True
            )
        finally:
            await redis_store.aclose()
    assert all(isinstance(r, EphemeralStoreUnavailable) for r in results)
    assert time.monotonic() - started < SOCKET_TIMEOUT_SECONDS + TIMEOUT_SLACK_SECONDS


@pytest.mark.redis
async def test_scripts_survive_a_server_that_forgot_them(
    store: RedisEphemeralStore, raw_redis: aioredis.Redis
) -> None:
    assert await store.incr("n", LONG_TTL) == 1
    await raw_redis.script_flush()  # as after a restart or a failover
    assert await store.incr("n", LONG_TTL) == 2
    assert await store.put_within_limits([("m", LONG_TTL, 5)], "k", b"v", LONG_TTL) is None
    assert await store.get_many(["n", "m", "k"]) == [b"2", b"1", b"v"]


def test_store_rejects_a_lane_count_below_one() -> None:
    client = aioredis.Redis.from_url("redis://127.0.0.1:6379/15")
    with pytest.raises(ValueError, match="lanes"):
        RedisEphemeralStore(client, lanes=0)


# --- races between processes ----------------------------------------------------------


async def race_in_processes(
    redis_url: str, redis_prefix: str, key: str, operation: str
) -> list[str]:
    """RACE_PROCESSES interpreters, each connected, released by one line on stdin."""
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            redis_url,
            redis_prefix,
            key,
            operation,
            str(index),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for index in range(RACE_PROCESSES)
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None
            line = await asyncio.wait_for(worker.stdout.readline(), PROCESS_READY_SECONDS)
            assert line == b"ready\n"
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write(b"go\n")
        await asyncio.gather(*(w.stdin.drain() for w in workers if w.stdin is not None))
        outputs = [await asyncio.wait_for(w.communicate(), PROCESS_READY_SECONDS) for w in workers]
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()
    assert all(w.returncode == 0 for w in workers)
    return [stdout.decode().strip() for stdout, _ in outputs]


@pytest.mark.redis
@pytest.mark.slow
async def test_consume_forbids_two_winners_across_processes(
    store: RedisEphemeralStore, redis_url: str, redis_prefix: str
) -> None:
    await store.put("code", b"grant", LONG_TTL)
    results = await race_in_processes(redis_url, redis_prefix, "code", "consume")
    assert sorted(results) == ["result None"] * (RACE_PROCESSES - 1) + ["result b'grant'"]


@pytest.mark.redis
@pytest.mark.slow
async def test_put_if_absent_forbids_two_winners_across_processes(
    store: RedisEphemeralStore, redis_url: str, redis_prefix: str
) -> None:
    results = await race_in_processes(redis_url, redis_prefix, "jti", "put_if_absent")
    assert results.count("result True") == 1
    assert results.count("result False") == RACE_PROCESSES - 1
    winner = results.index("result True")
    assert await store.get("jti") == f"w{winner}".encode()
