"""Contract of the EphemeralStore port, run against every adapter.

Memory runs on an injected fake clock; Redis runs on the real server with a random key
prefix per test and real (short) TTLs, waited out in a bounded loop.
"""

from __future__ import annotations

import asyncio
import functools
import math
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import pytest

import healthid.store.ephemeral.redis as redis_store_module
from healthid.store.ephemeral import (
    MAX_COUNTER_VALUE,
    MAX_INCR_AMOUNT,
    MAX_KEY_LENGTH,
    MAX_LIMIT,
    MAX_LIMITS,
    MAX_TTL_SECONDS,
    MAX_VALUE_BYTES,
    CounterValueError,
    EphemeralStore,
    EphemeralStoreUnavailable,
    InvalidAmountError,
    InvalidKeyError,
    InvalidTTLError,
    InvalidValueError,
    MemoryEphemeralStore,
    RedisEphemeralStore,
)

RACERS = 50
"""Concurrent callers in every race test."""
REDIS_SHORT_TTL = 0.2
"""A real TTL short enough to wait out in a test."""
MEMORY_SHORT_TTL = 5.0
"""The fake clock makes any TTL cheap to wait out."""
EXPIRY_GRACE_SECONDS = 2.0
"""How long past its TTL a Redis key may take to disappear before the test fails."""
POLL_SECONDS = 0.02
THREAD_JOIN_SECONDS = 30.0
# The contract is about behaviour; test_ephemeral_redis holds the adapter to its deadlines (0.5 s
# to connect, 1 s per command). Fifty racers connecting at once, in tasks or in threads that
# share one GIL, took longer than that on a loaded two-core machine and failed as
# "unavailable".
CONTRACT_CONNECT_DEADLINE_SECONDS = 15.0
CONTRACT_COMMAND_DEADLINE_SECONDS = 15.0
LONG_TTL = 60.0


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(kw_only=True)
class Harness:
    """One adapter under test, with what the contract needs to drive it."""

    kind: str
    store: EphemeralStore
    short_ttl: float
    clock: FakeClock | None = None
    redis_url: str | None = None
    prefix: str | None = None

    async def let_expire(self, key: str, ttl: float) -> None:
        """Move past ``ttl``: the fake clock jumps; on Redis, wait (bounded) for expiry."""
        if self.clock is not None:
            self.clock.advance(ttl)
            return
        deadline = time.monotonic() + ttl + EXPIRY_GRACE_SECONDS
        while await self.store.get(key) is not None:
            if time.monotonic() > deadline:
                pytest.fail(f"key did not expire within {ttl + EXPIRY_GRACE_SECONDS} s")
            await asyncio.sleep(POLL_SECONDS)

    @asynccontextmanager
    async def racer(self) -> AsyncIterator[EphemeralStore]:
        """A handle for one racer: the shared memory store, or a new Redis connection."""
        if self.redis_url is None or self.prefix is None:
            yield self.store
            return
        store = RedisEphemeralStore.from_url(self.redis_url, prefix=self.prefix)
        try:
            await store.ping()  # connect before the start signal, so the race is real
            yield store
        finally:
            await store.aclose()


@pytest.fixture
async def memory_harness() -> AsyncIterator[Harness]:
    clock = FakeClock()
    store = MemoryEphemeralStore(clock=clock)
    yield Harness(kind="memory", store=store, short_ttl=MEMORY_SHORT_TTL, clock=clock)
    await store.aclose()


@pytest.fixture
async def redis_harness(
    redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Harness]:
    monkeypatch.setattr(
        redis_store_module, "SOCKET_CONNECT_TIMEOUT_SECONDS", CONTRACT_CONNECT_DEADLINE_SECONDS
    )
    monkeypatch.setattr(
        redis_store_module, "SOCKET_TIMEOUT_SECONDS", CONTRACT_COMMAND_DEADLINE_SECONDS
    )
    store = RedisEphemeralStore.from_url(redis_url, prefix=redis_prefix)
    yield Harness(
        kind="redis",
        store=store,
        short_ttl=REDIS_SHORT_TTL,
        redis_url=redis_url,
        prefix=redis_prefix,
    )
    await store.aclose()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def harness(request: pytest.FixtureRequest) -> Harness:
    """Every contract test runs once per adapter."""
    selected: Harness = request.getfixturevalue(f"{request.param}_harness")
    return selected


Operation = Callable[[EphemeralStore, int], Awaitable[object]]


async def race_in_tasks(harness: Harness, operation: Operation) -> list[object]:
    """RACERS tasks, each on its own connection, released together by one event."""
    async with AsyncExitStack() as stack:
        stores = [await stack.enter_async_context(harness.racer()) for _ in range(RACERS)]
        start = asyncio.Event()

        async def run(index: int, store: EphemeralStore) -> object:
            await start.wait()
            return await operation(store, index)

        tasks = [asyncio.create_task(run(i, store)) for i, store in enumerate(stores)]
        await asyncio.sleep(0)
        start.set()
        return list(await asyncio.gather(*tasks))


def race_in_threads(harness: Harness, operation: Operation) -> list[object]:
    """RACERS threads, each with its own event loop and connection, behind one barrier."""
    barrier = threading.Barrier(RACERS, timeout=THREAD_JOIN_SECONDS)
    results: list[object] = [None] * RACERS
    errors: list[BaseException] = []

    async def run(index: int) -> None:
        async with harness.racer() as store:
            barrier.wait()
            results[index] = await operation(store, index)

    def thread_main(index: int) -> None:
        try:
            asyncio.run(run(index))
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=thread_main, args=(i,)) for i in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(THREAD_JOIN_SECONDS)
    assert not any(thread.is_alive() for thread in threads)
    assert not errors, errors
    return results


async def race(harness: Harness, mode: str, operation: Operation) -> list[object]:
    if mode == "tasks":
        return await race_in_tasks(harness, operation)
    return await asyncio.to_thread(race_in_threads, harness, operation)


RACE_MODES = ["tasks", "threads"]


# --- put / get / delete ---------------------------------------------------------------


async def test_put_then_get_returns_the_value(harness: Harness) -> None:
    await harness.store.put("k", b"v1", LONG_TTL)
    assert await harness.store.get("k") == b"v1"
    await harness.store.put("k", b"v2", LONG_TTL)
    assert await harness.store.get("k") == b"v2"


async def test_get_of_missing_key_returns_none(harness: Harness) -> None:
    assert await harness.store.get("missing") is None


async def test_get_many_returns_values_in_order_with_none_for_missing(harness: Harness) -> None:
    await harness.store.put("many:a", b"1", 60)
    await harness.store.put("many:c", b"3", harness.short_ttl)
    await harness.let_expire("many:c", harness.short_ttl)
    got = await harness.store.get_many(["many:a", "many:b", "many:c", "many:a"])
    assert got == [b"1", None, None, b"1"]


async def test_consume_and_get_consumes_once_and_reads_the_others(harness: Harness) -> None:
    await harness.store.put("cg:challenge", b"c", 60)
    await harness.store.put("cg:counter", b"3", 60)
    first = await harness.store.consume_and_get("cg:challenge", ["cg:counter", "cg:none"])
    assert first == (b"c", [b"3", None])
    again = await harness.store.consume_and_get("cg:challenge", ["cg:counter"])
    assert again == (None, [b"3"])


async def test_consume_and_get_has_exactly_one_winner(harness: Harness) -> None:
    await harness.store.put("cg:race", b"once", 60)
    results = await asyncio.gather(
        *(harness.store.consume_and_get("cg:race", ["cg:x"]) for _ in range(RACERS))
    )
    assert [r[0] for r in results].count(b"once") == 1


async def test_incr_and_put_counts_and_stores_together(harness: Harness) -> None:
    counts = [
        await harness.store.incr_and_put("ip:counter", 60, f"ip:value{i}", b"v%d" % i, 30)
        for i in range(3)
    ]
    assert counts == [1, 2, 3]
    assert await harness.store.get_many(["ip:value0", "ip:value2", "ip:counter"]) == [
        b"v0",
        b"v2",
        b"3",
    ]
    counter_ttl = await harness.store.ttl("ip:counter")
    value_ttl = await harness.store.ttl("ip:value2")
    assert counter_ttl is not None and 30 < counter_ttl <= 60  # the window, not the value's
    assert value_ttl is not None and value_ttl <= 30
    with pytest.raises(InvalidValueError):
        await harness.store.incr_and_put("ip:counter", 60, "ip:bad", "not bytes", 30)  # type: ignore[arg-type]
    assert await harness.store.get("ip:counter") == b"3"  # refused before anything was written


async def test_consume_and_incr_counts_only_what_was_there(harness: Harness) -> None:
    await harness.store.put("ci:code1", b"one", 60)
    await harness.store.put("ci:code2", b"two", 60)
    assert await harness.store.consume_and_incr("ci:code1", "ci:client", 60) == (b"one", 1)
    assert await harness.store.consume_and_incr("ci:code1", "ci:client", 60) == (None, None)
    assert await harness.store.consume_and_incr("ci:nothing", "ci:client", 60) == (None, None)
    assert await harness.store.consume_and_incr("ci:code2", "ci:client", 60) == (b"two", 2)
    remaining = await harness.store.ttl("ci:client")
    assert remaining is not None and 0 < remaining <= 60  # a fixed window
    assert await harness.store.get("ci:client") == b"2"


async def test_consume_and_incr_has_exactly_one_winner(harness: Harness) -> None:
    await harness.store.put("ci:race", b"once", 60)
    results = await asyncio.gather(
        *(harness.store.consume_and_incr("ci:race", "ci:counter", 60) for _ in range(RACERS))
    )
    assert [r for r in results if r[0] is not None] == [(b"once", 1)]
    assert await harness.store.get("ci:counter") == b"1"


LIMITS = [("pw:ip", 60.0, 3), ("pw:client", 30.0, 2)]
LIMITS_KEYS = ["pw:ip", "pw:client", "pw:v1"]


async def test_put_within_limits_counts_every_counter_and_stores(harness: Harness) -> None:
    assert await harness.store.put_within_limits(LIMITS, "pw:v1", b"one", 20) is None
    assert await harness.store.get_many(["pw:v1", "pw:ip", "pw:client"]) == [b"one", b"1", b"1"]
    ip_ttl, client_ttl, value_ttl = [await harness.store.ttl(k) for k in LIMITS_KEYS]
    assert ip_ttl is not None and 30 < ip_ttl <= 60  # each counter its own window
    assert client_ttl is not None and 20 < client_ttl <= 30
    assert value_ttl is not None and value_ttl <= 20


async def test_put_within_limits_forbids_storing_over_a_later_limit(harness: Harness) -> None:
    # the client's limit (2) is reached first: the third attempt counts against the address
    # and the client, is refused by the client's counter (index 1) and stores nothing
    results = [
        await harness.store.put_within_limits(LIMITS, f"pw:v{i}", b"v", 20) for i in range(3)
    ]
    assert results == [None, None, 1]
    assert await harness.store.get_many(["pw:v0", "pw:v1", "pw:v2"]) == [b"v", b"v", None]
    assert await harness.store.get_many(["pw:ip", "pw:client"]) == [b"3", b"3"]


async def test_put_within_limits_forbids_counting_past_the_first_refusal(
    harness: Harness,
) -> None:
    await harness.store.put("pw:ip", b"3", 60)  # the address is at its limit
    assert await harness.store.put_within_limits(LIMITS, "pw:v", b"v", 20) == 0
    # refused by the address: counted there, the client's counter untouched, nothing stored
    assert await harness.store.get_many(["pw:ip", "pw:client", "pw:v"]) == [b"4", None, None]


async def test_put_within_limits_with_limit_zero_refuses_every_attempt(harness: Harness) -> None:
    assert await harness.store.put_within_limits([("pw:n", 60, 0)], "pw:v", b"v", 20) == 0
    assert await harness.store.get("pw:v") is None


async def test_put_within_limits_forbids_extending_a_window(harness: Harness) -> None:
    ttl = harness.short_ttl
    assert await harness.store.put_within_limits([("pw:n", ttl, 5)], "pw:v", b"v", 60) is None
    assert await harness.store.put_within_limits([("pw:n", LONG_TTL, 5)], "pw:v", b"v", 60) is None
    remaining = await harness.store.ttl("pw:n")
    assert remaining is not None and remaining <= ttl


async def test_put_within_limits_lets_exactly_the_limit_through_under_concurrency(
    harness: Harness,
) -> None:
    limit = RACERS // 2
    results = await asyncio.gather(
        *(
            harness.store.put_within_limits([("pw:race", 60, limit)], f"pw:v{i}", b"v", 60)
            for i in range(RACERS)
        )
    )
    assert results.count(None) == limit and results.count(0) == RACERS - limit
    stored = await harness.store.get_many([f"pw:v{i}" for i in range(RACERS)])
    assert [v is not None for v in stored] == [r is None for r in results]


async def test_put_within_limits_rejects_a_value_that_is_not_a_counter(harness: Harness) -> None:
    await harness.store.put("pw:client", b"abc", LONG_TTL)
    with pytest.raises(CounterValueError):
        await harness.store.put_within_limits(LIMITS, "pw:v", b"v", 20)
    assert await harness.store.get("pw:v") is None


@pytest.mark.parametrize(
    "limits",
    [
        [],
        [("pw:n", 60, 1)] * (MAX_LIMITS + 1),
        [("pw:n", 60, -1)],
        [("pw:n", 60, MAX_LIMIT + 1)],
        [("pw:n", 60, True)],
        [("pw:n", 60, 1.0)],
        [("pw:n", 0, 1)],
        [("", 60, 1)],
    ],
    ids=["empty", "too_many", "negative", "too_large", "bool", "float", "bad_window", "bad_key"],
)
async def test_put_within_limits_rejects_invalid_limits(harness: Harness, limits: object) -> None:
    with pytest.raises((InvalidKeyError, InvalidAmountError, InvalidTTLError)):
        await harness.store.put_within_limits(limits, "pw:v", b"v", 20)  # type: ignore[arg-type]
    assert await harness.store.get_many(["pw:v", "pw:n"]) == [None, None]


async def test_put_within_limits_accepts_the_most_counters(harness: Harness) -> None:
    limits = [(f"pw:n{i}", 60.0, MAX_LIMIT) for i in range(MAX_LIMITS)]
    assert await harness.store.put_within_limits(limits, "pw:v", b"v", 20) is None
    assert await harness.store.get(f"pw:n{MAX_LIMITS - 1}") == b"1"


async def test_get_many_rejects_empty_and_oversized_key_lists(harness: Harness) -> None:
    from healthid.store.ephemeral.base import MAX_MANY_KEYS, InvalidKeyError

    with pytest.raises(InvalidKeyError):
        await harness.store.get_many([])
    with pytest.raises(InvalidKeyError):
        await harness.store.get_many([f"k{i}" for i in range(MAX_MANY_KEYS + 1)])
    with pytest.raises(InvalidKeyError):
        await harness.store.get_many(["ok", "not ok"])


async def test_values_are_opaque_bytes(harness: Harness) -> None:
    binary = bytes(range(256))
    await harness.store.put("bin", binary, LONG_TTL)
    await harness.store.put("empty", b"", LONG_TTL)
    assert await harness.store.get("bin") == binary
    assert await harness.store.get("empty") == b""


async def test_delete_reports_whether_a_live_entry_was_removed(harness: Harness) -> None:
    await harness.store.put("k", b"v", LONG_TTL)
    assert await harness.store.delete("k") is True
    assert await harness.store.get("k") is None
    assert await harness.store.delete("k") is False


async def test_ping_answers(harness: Harness) -> None:
    await harness.store.ping()


async def test_closed_store_forbids_answers(harness: Harness) -> None:
    await harness.store.put("k", b"v", LONG_TTL)
    await harness.store.aclose()
    with pytest.raises(EphemeralStoreUnavailable):
        await harness.store.get("k")
    with pytest.raises(EphemeralStoreUnavailable):
        await harness.store.ping()


# --- TTL ------------------------------------------------------------------------------


async def test_entry_expires_after_its_ttl(harness: Harness) -> None:
    ttl = harness.short_ttl
    await harness.store.put("k", b"v", ttl)
    assert await harness.store.get("k") == b"v"
    await harness.let_expire("k", ttl)
    assert await harness.store.get("k") is None
    assert await harness.store.ttl("k") is None
    assert await harness.store.consume("k") is None
    assert await harness.store.delete("k") is False


async def test_ttl_reports_the_remaining_lifetime(harness: Harness) -> None:
    await harness.store.put("k", b"v", LONG_TTL)
    remaining = await harness.store.ttl("k")
    assert remaining is not None
    assert LONG_TTL - 5 < remaining <= LONG_TTL
    assert await harness.store.ttl("missing") is None


async def test_put_replaces_the_ttl(harness: Harness) -> None:
    await harness.store.put("k", b"v", harness.short_ttl)
    await harness.store.put("k", b"v", LONG_TTL)
    remaining = await harness.store.ttl("k")
    assert remaining is not None
    assert remaining > harness.short_ttl


# --- consume: one-time artefacts ------------------------------------------------------


async def test_consume_returns_the_value_once(harness: Harness) -> None:
    await harness.store.put("code", b"grant", LONG_TTL)
    assert await harness.store.consume("code") == b"grant"
    assert await harness.store.consume("code") is None
    assert await harness.store.get("code") is None


async def test_consume_of_missing_key_returns_none(harness: Harness) -> None:
    assert await harness.store.consume("missing") is None


@pytest.mark.parametrize("mode", RACE_MODES)
async def test_consume_forbids_two_winners_under_concurrency(harness: Harness, mode: str) -> None:
    await harness.store.put("code", b"grant", LONG_TTL)

    async def consume(store: EphemeralStore, _index: int) -> object:
        return await store.consume("code")

    results = await race(harness, mode, consume)
    assert len(results) == RACERS
    assert [r for r in results if r is not None] == [b"grant"]
    assert await harness.store.get("code") is None


# --- put_if_absent: replay caches -----------------------------------------------------


async def test_put_if_absent_first_writer_wins(harness: Harness) -> None:
    assert await harness.store.put_if_absent("jti", b"first", LONG_TTL) is True
    assert await harness.store.put_if_absent("jti", b"second", LONG_TTL * 2) is False
    assert await harness.store.get("jti") == b"first"
    remaining = await harness.store.ttl("jti")
    assert remaining is not None
    assert remaining <= LONG_TTL


async def test_put_if_absent_succeeds_again_after_expiry(harness: Harness) -> None:
    ttl = harness.short_ttl
    assert await harness.store.put_if_absent("nonce", b"a", ttl) is True
    await harness.let_expire("nonce", ttl)
    assert await harness.store.put_if_absent("nonce", b"b", LONG_TTL) is True
    assert await harness.store.get("nonce") == b"b"


@pytest.mark.parametrize("mode", RACE_MODES)
async def test_put_if_absent_forbids_two_winners_under_concurrency(
    harness: Harness, mode: str
) -> None:
    async def claim(store: EphemeralStore, index: int) -> object:
        return await store.put_if_absent("jti", f"w{index}".encode(), LONG_TTL)

    results = await race(harness, mode, claim)
    winners = [index for index, won in enumerate(results) if won is True]
    assert len(winners) == 1
    assert results.count(False) == RACERS - 1
    assert await harness.store.get("jti") == f"w{winners[0]}".encode()


# --- incr: fixed-window counters ------------------------------------------------------


async def test_incr_counts(harness: Harness) -> None:
    assert await harness.store.incr("n", LONG_TTL) == 1
    assert await harness.store.incr("n", LONG_TTL) == 2
    assert await harness.store.incr("n", LONG_TTL, amount=3) == 5
    assert await harness.store.get("n") == b"5"


async def test_incr_forbids_extending_the_window(harness: Harness) -> None:
    ttl = harness.short_ttl
    assert await harness.store.incr("n", ttl) == 1
    assert await harness.store.incr("n", MAX_TTL_SECONDS) == 2
    remaining = await harness.store.ttl("n")
    assert remaining is not None
    assert remaining <= ttl
    await harness.let_expire("n", ttl)
    assert await harness.store.incr("n", LONG_TTL) == 1
    remaining = await harness.store.ttl("n")
    assert remaining is not None
    assert remaining > ttl


@pytest.mark.parametrize("mode", RACE_MODES)
async def test_incr_forbids_lost_updates_under_concurrency(harness: Harness, mode: str) -> None:
    async def bump(store: EphemeralStore, _index: int) -> object:
        return await store.incr("n", LONG_TTL)

    results = await race(harness, mode, bump)
    assert sorted(r for r in results if isinstance(r, int)) == list(range(1, RACERS + 1))
    assert await harness.store.get("n") == str(RACERS).encode()


async def test_incr_rejects_a_value_that_is_not_a_counter(harness: Harness) -> None:
    await harness.store.put("n", b"abc", LONG_TTL)
    with pytest.raises(CounterValueError):
        await harness.store.incr("n", LONG_TTL)
    assert await harness.store.get("n") == b"abc"


async def test_incr_rejects_counter_overflow(harness: Harness) -> None:
    await harness.store.put("n", str(MAX_COUNTER_VALUE).encode(), LONG_TTL)
    with pytest.raises(CounterValueError):
        await harness.store.incr("n", LONG_TTL)
    assert await harness.store.get("n") == str(MAX_COUNTER_VALUE).encode()


# --- input bounds ---------------------------------------------------------------------

KeyOperation = Callable[[EphemeralStore, str], Awaitable[object]]
KEY_OPERATIONS: dict[str, KeyOperation] = {
    "put": lambda s, k: s.put(k, b"v", LONG_TTL),
    "put_if_absent": lambda s, k: s.put_if_absent(k, b"v", LONG_TTL),
    "get": lambda s, k: s.get(k),
    "consume": lambda s, k: s.consume(k),
    "delete": lambda s, k: s.delete(k),
    "incr": lambda s, k: s.incr(k, LONG_TTL),
    "ttl": lambda s, k: s.ttl(k),
    "put_within_limits_counter": lambda s, k: s.put_within_limits([(k, LONG_TTL, 1)], "v", b"v", 9),
    "put_within_limits_key": lambda s, k: s.put_within_limits([("n", LONG_TTL, 1)], k, b"v", 9),
}
BAD_KEYS = {
    "empty": "",
    "too_long": "k" * (MAX_KEY_LENGTH + 1),
    "space": "a b",
    "tab": "a\tb",
    "newline": "a\nb",
    "nul": "a\x00b",
    "del": "a\x7fb",
    "non_ascii": "grün",
    "bytes": b"key",
}


@pytest.mark.parametrize("operation", list(KEY_OPERATIONS))
@pytest.mark.parametrize("case", list(BAD_KEYS))
async def test_store_rejects_invalid_key(harness: Harness, operation: str, case: str) -> None:
    with pytest.raises(InvalidKeyError):
        await KEY_OPERATIONS[operation](harness.store, BAD_KEYS[case])  # type: ignore[arg-type]


async def test_store_accepts_longest_key_of_every_printable_character(harness: Harness) -> None:
    printable = "".join(chr(c) for c in range(0x21, 0x7F))
    longest = (printable * 3)[:MAX_KEY_LENGTH]
    await harness.store.put(longest, b"v", LONG_TTL)
    assert await harness.store.get(longest) == b"v"


@pytest.mark.parametrize(
    "value",
    [b"x" * (MAX_VALUE_BYTES + 1), "text", bytearray(b"v"), memoryview(b"v"), None],
    ids=["oversized", "str", "bytearray", "memoryview", "none"],
)
@pytest.mark.parametrize("operation", ["put", "put_if_absent", "put_within_limits"])
async def test_store_rejects_invalid_value(harness: Harness, operation: str, value: object) -> None:
    write = getattr(harness.store, operation)
    if operation == "put_within_limits":
        write = functools.partial(write, [("n", LONG_TTL, 1)])
    with pytest.raises(InvalidValueError):
        await write("k", value, LONG_TTL)
    assert await harness.store.get_many(["k", "n"]) == [None, None]


async def test_store_accepts_largest_value(harness: Harness) -> None:
    value = b"v" * MAX_VALUE_BYTES
    await harness.store.put("k", value, LONG_TTL)
    assert await harness.store.get("k") == value


BAD_TTLS = {
    "zero": 0,
    "negative": -1.0,
    "nan": math.nan,
    "infinite": math.inf,
    "too_long": MAX_TTL_SECONDS + 1,
    "bool": True,
    "str": "60",
    "none": None,
}
TTL_OPERATIONS: dict[str, Callable[[EphemeralStore, object], Awaitable[object]]] = {
    "put": lambda s, t: s.put("k", b"v", t),  # type: ignore[arg-type]
    "put_if_absent": lambda s, t: s.put_if_absent("k", b"v", t),  # type: ignore[arg-type]
    "incr": lambda s, t: s.incr("k", t),  # type: ignore[arg-type]
    "put_within_limits_value": lambda s, t: s.put_within_limits([("n", 60, 1)], "k", b"v", t),  # type: ignore[arg-type]
    "put_within_limits_window": lambda s, t: s.put_within_limits([("k", t, 1)], "v", b"v", 60),  # type: ignore[list-item]
}


@pytest.mark.parametrize("operation", list(TTL_OPERATIONS))
@pytest.mark.parametrize("case", list(BAD_TTLS))
async def test_store_rejects_invalid_ttl(harness: Harness, operation: str, case: str) -> None:
    with pytest.raises(InvalidTTLError):
        await TTL_OPERATIONS[operation](harness.store, BAD_TTLS[case])
    assert await harness.store.get("k") is None


async def test_store_accepts_longest_ttl(harness: Harness) -> None:
    await harness.store.put("k", b"v", MAX_TTL_SECONDS)
    remaining = await harness.store.ttl("k")
    assert remaining is not None
    assert MAX_TTL_SECONDS - 5 < remaining <= MAX_TTL_SECONDS


@pytest.mark.parametrize(
    "amount",
    [0, -1, MAX_INCR_AMOUNT + 1, True, 1.0, "1"],
    ids=["zero", "negative", "too_large", "bool", "float", "str"],
)
async def test_incr_rejects_invalid_amount(harness: Harness, amount: object) -> None:
    with pytest.raises(InvalidAmountError):
        await harness.store.incr("n", LONG_TTL, amount)  # type: ignore[arg-type]
    assert await harness.store.get("n") is None


async def test_incr_accepts_largest_amount(harness: Harness) -> None:
    assert await harness.store.incr("n", LONG_TTL, MAX_INCR_AMOUNT) == MAX_INCR_AMOUNT
