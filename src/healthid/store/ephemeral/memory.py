"""In-memory ephemeral store: the embedded default for a single host process.

State lives in one dict, so it is shared by the tasks and threads of one process only;
several host workers need :mod:`healthid.store.ephemeral.redis`. Each operation runs as
one critical section under a :class:`threading.Lock` with no ``await`` inside it, so it is
atomic with respect to other tasks and threads (CONVENTIONS 14: ``consume`` is get-and-
delete in one step).

Expiry is checked on every access against the injected monotonic clock. Every write also
evicts whatever has expired, in expiry order from a heap (amortised O(log n), so entries
nobody reads again do not pile up), and ``max_entries`` bounds the dict: when it is full of
live entries a new key meets :class:`EphemeralStoreFull` at O(1) cost instead of memory
growing without bound.
"""

from __future__ import annotations

import heapq
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from healthid.store.ephemeral.base import (
    MAX_COUNTER_VALUE,
    CounterValueError,
    EphemeralStoreFull,
    EphemeralStoreUnavailable,
    validate_amount,
    validate_key,
    validate_keys,
    validate_limits,
    validate_ttl,
    validate_value,
)

DEFAULT_MAX_ENTRIES = 100_000
"""Default bound on stored entries, expired ones not yet swept included."""
COMPACT_FACTOR = 2
"""The expiry heap is rebuilt when it holds this many times more items than there are
entries (replaced, consumed and deleted keys leave stale items behind)."""
COMPACT_MIN_INDEX = 1024
"""No rebuild below this many heap items: small stores never pay for compaction."""
_COUNTER_FORMAT = re.compile(rb"0|-?[1-9][0-9]{0,18}")
"""The integers Redis ``INCRBY`` accepts: canonical decimal, no sign '+', no padding."""


@dataclass(frozen=True, kw_only=True, slots=True)
class _Entry:
    value: bytes
    expires_at: float


def _parse_counter(value: bytes) -> int:
    """The counter in ``value``, refused like Redis refuses it (not a 64-bit integer)."""
    if _COUNTER_FORMAT.fullmatch(value) is None:
        raise CounterValueError("value is not an integer counter")
    count = int(value)
    if not -MAX_COUNTER_VALUE - 1 <= count <= MAX_COUNTER_VALUE:
        raise CounterValueError("value is not a 64-bit integer counter")
    return count


class MemoryEphemeralStore:
    """:class:`~healthid.store.ephemeral.base.EphemeralStore` in one process's memory."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = DEFAULT_MAX_ENTRIES,
    ) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int):
            raise TypeError("max_entries must be an int")
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._clock = clock
        self._max_entries = max_entries
        self._entries: dict[str, _Entry] = {}
        self._expiries: list[tuple[float, str]] = []
        self._lock = threading.RLock()  # incr_and_put holds it around incr and put
        self._closed = False

    def __len__(self) -> int:
        """Entries held, including expired ones not yet swept (a diagnostic)."""
        with self._lock:
            return len(self._entries)

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        """Store ``value`` for ``ttl`` seconds, replacing any earlier value."""
        validate_key(key)
        validate_value(value)
        validate_ttl(ttl)
        with self._lock:
            now = self._now()
            self._make_room(key, now)
            self._store(key, value, now + ttl)

    async def put_if_absent(self, key: str, value: bytes, ttl: float) -> bool:
        """First writer wins (replay caches, RFC 7523 §3): ``False`` if a live entry exists."""
        validate_key(key)
        validate_value(value)
        validate_ttl(ttl)
        with self._lock:
            now = self._now()
            if self._live(key, now) is not None:
                return False
            self._make_room(key, now)
            self._store(key, value, now + ttl)
            return True

    async def get(self, key: str) -> bytes | None:
        """The live value, or ``None``."""
        validate_key(key)
        with self._lock:
            entry = self._live(key, self._now())
            return None if entry is None else entry.value

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """Every key's live value (or ``None``), read under one lock."""
        validate_keys(keys)
        with self._lock:
            now = self._now()
            return [None if (e := self._live(k, now)) is None else e.value for k in keys]

    async def consume_and_get(
        self, key: str, others: Sequence[str]
    ) -> tuple[bytes | None, list[bytes | None]]:
        """Consume and read in one critical section."""
        validate_key(key)
        validate_keys(others)
        with self._lock:
            now = self._now()
            entry = self._live(key, now)
            if entry is not None:
                del self._entries[key]
            values = [None if (e := self._live(k, now)) is None else e.value for k in others]
            return (None if entry is None else entry.value), values

    async def consume(self, key: str) -> bytes | None:
        """Get and delete in one critical section (CONVENTIONS 14): one caller wins."""
        validate_key(key)
        with self._lock:
            entry = self._live(key, self._now())
            if entry is None:
                return None
            del self._entries[key]
            return entry.value

    async def delete(self, key: str) -> bool:
        """Remove ``key``; ``True`` when a live entry was removed."""
        validate_key(key)
        with self._lock:
            entry = self._live(key, self._now())
            if entry is None:
                return False
            del self._entries[key]
            return True

    async def incr(self, key: str, ttl: float, amount: int = 1) -> int:
        """Fixed-window counter: the TTL is set on creation and never extended."""
        validate_key(key)
        validate_ttl(ttl)
        validate_amount(amount)
        with self._lock:
            now = self._now()
            entry = self._live(key, now)
            count = amount if entry is None else _parse_counter(entry.value) + amount
            if count > MAX_COUNTER_VALUE:
                raise CounterValueError("increment would overflow the 64-bit counter")
            if entry is None:
                self._make_room(key, now)
                self._store(key, str(count).encode(), now + ttl)
            else:
                # Same expiry as before: the window is fixed when the counter is created.
                self._entries[key] = _Entry(value=str(count).encode(), expires_at=entry.expires_at)
            return count

    async def incr_and_put(
        self, counter: str, window: float, key: str, value: bytes, ttl: float
    ) -> int:
        """:meth:`incr` and :meth:`put` under one lock: nothing sees one without the other."""
        validate_key(key)
        validate_value(value)
        validate_ttl(ttl)
        with self._lock:  # re-entrant: incr and put take it again
            count = await self.incr(counter, window)
            await self.put(key, value, ttl)
            return count

    async def put_within_limits(
        self, limits: Sequence[tuple[str, float, int]], key: str, value: bytes, ttl: float
    ) -> int | None:
        """:meth:`incr` each counter until one goes over its limit, else :meth:`put`, under
        one lock."""
        validate_limits(limits)
        validate_key(key)
        validate_value(value)
        validate_ttl(ttl)
        with self._lock:  # re-entrant: incr and put take it again
            for index, (counter, window, limit) in enumerate(limits):
                if await self.incr(counter, window) > limit:
                    return index
            await self.put(key, value, ttl)
            return None

    async def consume_and_incr(
        self, key: str, counter: str, window: float
    ) -> tuple[bytes | None, int | None]:
        """:meth:`consume` and, if it returned a value, :meth:`incr`, under one lock."""
        validate_key(counter)
        validate_ttl(window)
        with self._lock:  # re-entrant: consume and incr take it again
            value = await self.consume(key)
            if value is None:
                return None, None
            return value, await self.incr(counter, window)

    async def ttl(self, key: str) -> float | None:
        """Seconds left, or ``None`` when absent or expired."""
        validate_key(key)
        with self._lock:
            now = self._now()
            entry = self._live(key, now)
            return None if entry is None else entry.expires_at - now

    async def ping(self) -> None:
        """Always answers while open."""
        with self._lock:
            self._now()

    async def aclose(self) -> None:
        """Drop every entry; later operations raise ``EphemeralStoreUnavailable``."""
        with self._lock:
            self._closed = True
            self._entries.clear()
            self._expiries.clear()

    # Helpers below run with self._lock held.

    def _now(self) -> float:
        if self._closed:
            raise EphemeralStoreUnavailable("the in-memory ephemeral store is closed")
        return self._clock()

    def _live(self, key: str, now: float) -> _Entry | None:
        """The entry under ``key`` unless expired; an expired entry is dropped on sight."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if now >= entry.expires_at:
            del self._entries[key]
            return None
        return entry

    def _store(self, key: str, value: bytes, expires_at: float) -> None:
        """Insert or replace ``key`` and index its expiry."""
        self._entries[key] = _Entry(value=value, expires_at=expires_at)
        heapq.heappush(self._expiries, (expires_at, key))
        if len(self._expiries) > COMPACT_FACTOR * max(len(self._entries), COMPACT_MIN_INDEX):
            self._compact()

    def _make_room(self, key: str, now: float) -> None:
        """Evict what has expired; refuse a new key when the store is still full."""
        self._evict_expired(now)
        if key in self._entries or len(self._entries) < self._max_entries:
            return
        raise EphemeralStoreFull(
            f"the in-memory ephemeral store holds its maximum of {self._max_entries} entries"
        )

    def _evict_expired(self, now: float) -> None:
        """Pop due expiries off the heap: amortised O(log n) per write, never a full scan."""
        while self._expiries and self._expiries[0][0] <= now:
            expires_at, key = heapq.heappop(self._expiries)
            entry = self._entries.get(key)
            # The heap item is stale when the key was replaced, consumed or deleted since.
            if entry is not None and entry.expires_at == expires_at:
                del self._entries[key]

    def _compact(self) -> None:
        """Rebuild the heap from live entries once stale items outnumber them."""
        self._expiries = [(entry.expires_at, key) for key, entry in self._entries.items()]
        heapq.heapify(self._expiries)
