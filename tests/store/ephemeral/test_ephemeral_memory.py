"""MemoryEphemeralStore specifics: expiry boundary, the entry bound, eviction, compaction."""

from __future__ import annotations

import pytest

from healthid.store.ephemeral import (
    EphemeralStoreFull,
    MemoryEphemeralStore,
    open_ephemeral_store,
)
from healthid.store.ephemeral.memory import COMPACT_FACTOR, COMPACT_MIN_INDEX

TTL = 10.0
EPSILON = 1e-6


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def test_entry_lives_until_exactly_its_ttl(clock: FakeClock) -> None:
    store = MemoryEphemeralStore(clock=clock)
    await store.put("k", b"v", TTL)
    clock.advance(TTL - EPSILON)
    assert await store.get("k") == b"v"
    assert await store.ttl("k") == pytest.approx(EPSILON)
    clock.advance(EPSILON)
    assert await store.get("k") is None


async def test_full_store_refuses_new_keys_rather_than_growing(clock: FakeClock) -> None:
    store = MemoryEphemeralStore(clock=clock, max_entries=3)
    for key in ("a", "b", "c"):
        await store.put(key, b"v", TTL)
    with pytest.raises(EphemeralStoreFull):
        await store.put("d", b"v", TTL)
    with pytest.raises(EphemeralStoreFull):
        await store.put_if_absent("d", b"v", TTL)
    with pytest.raises(EphemeralStoreFull):
        await store.incr("d", TTL)
    assert len(store) == 3
    assert await store.get("d") is None


async def test_full_store_still_replaces_existing_keys(clock: FakeClock) -> None:
    store = MemoryEphemeralStore(clock=clock, max_entries=2)
    await store.put("a", b"v", TTL)
    await store.incr("n", TTL)
    await store.put("a", b"w", TTL)
    assert await store.incr("n", TTL) == 2
    assert await store.get("a") == b"w"


async def test_full_store_evicts_expired_entries_before_refusing(clock: FakeClock) -> None:
    store = MemoryEphemeralStore(clock=clock, max_entries=2)
    await store.put("short", b"v", 1.0)
    await store.put("long", b"v", TTL)
    clock.advance(1.0)
    await store.put("new", b"v", TTL)
    assert len(store) == 2
    assert await store.get("long") == b"v"
    assert await store.get("new") == b"v"


async def test_unread_expired_entries_do_not_pile_up(clock: FakeClock) -> None:
    store = MemoryEphemeralStore(clock=clock)
    for index in range(500):
        await store.put(f"k{index}", b"v", 1.0)
    clock.advance(1.0)
    await store.put("trigger", b"v", TTL)
    assert len(store) == 1


async def test_expiry_index_is_compacted_when_a_key_is_rewritten(clock: FakeClock) -> None:
    store = MemoryEphemeralStore(clock=clock)
    for _ in range(10 * COMPACT_MIN_INDEX):
        await store.put("session", b"v", TTL)
    assert len(store) == 1
    assert len(store._expiries) <= COMPACT_FACTOR * COMPACT_MIN_INDEX + 1


async def test_replaced_key_is_not_evicted_by_its_stale_expiry(clock: FakeClock) -> None:
    store = MemoryEphemeralStore(clock=clock)
    await store.put("k", b"old", 1.0)
    await store.put("k", b"new", TTL)
    clock.advance(1.0)
    await store.put("other", b"v", TTL)  # a write runs eviction
    assert await store.get("k") == b"new"


@pytest.mark.parametrize("bad", [0, -1, True, 1.5])
def test_memory_store_rejects_invalid_max_entries(bad: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        MemoryEphemeralStore(max_entries=bad)  # type: ignore[arg-type]


def test_factory_without_redis_url_opens_the_memory_store() -> None:
    assert isinstance(open_ephemeral_store(None), MemoryEphemeralStore)
