"""Redis ephemeral store: the production adapter, shared by every host worker and host.

Each operation is one Redis command or one Lua script, so Redis itself makes it atomic:

* ``consume`` is ``GETDEL`` (CONVENTIONS 14; Redis >= 6.2.0);
* ``put_if_absent`` is ``SET key value NX PX ttl`` (first writer wins, RFC 7523 §3);
* ``incr`` is the Lua script :data:`INCR_SCRIPT`, not ``SET NX PX`` + ``INCRBY`` in
  ``MULTI``: a script is one round trip, and Redis freezes its clock for the whole script,
  so the counter cannot expire between creating it and incrementing it. Before Redis 7.0 a
  ``MULTI`` block sampled the clock per command; ``INCRBY`` could then recreate an
  expired counter *without* a TTL, a rate limit that never resets.

TTLs are sent in milliseconds, rounded up so an entry never lives shorter than asked (a
replay cache errs on the side of remembering). Every key gets the adapter's prefix.

Connection errors, timeouts and a read-only replica (failover) raise
:class:`EphemeralStoreUnavailable`, never "not found". Nothing is ever sent again
(:data:`COMMAND_RETRIES`): a ``GETDEL`` or ``SET NX`` whose reply was lost must not be
silently repeated, the caller fails closed instead.

Commands travel pipelined on :data:`LANES` connections per store
(:class:`~healthid.store.ephemeral.pipeline.PipelinedConnection`): the commands of one turn
of the event loop leave in one write, and their replies come back in order, often in one
read. redis-py's ``Connection`` connects, authenticates, selects the database (TLS too) and
parses the replies; the command path around it is this store's own: redis-py's client takes
a lock twice per command, adds retry and callback machinery, observability hooks and a task
per socket write (``asyncio.wait_for``), together more CPU than the command itself, and one
command at a time per connection costs a write and a read each.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    ConnectionError as RedisConnectionError,
)
from redis.exceptions import (
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
)
from redis.exceptions import (
    TimeoutError as RedisTimeoutError,
)

from healthid.store.ephemeral.base import (
    MAX_KEY_CHAR,
    MIN_KEY_CHAR,
    CounterValueError,
    EphemeralStoreError,
    EphemeralStoreFull,
    EphemeralStoreUnavailable,
    validate_amount,
    validate_key,
    validate_keys,
    validate_limits,
    validate_ttl,
    validate_value,
)
from healthid.store.ephemeral.pipeline import PipelinedConnection, pack

DEFAULT_PREFIX: Final = "healthid:"
"""Namespace of every key this adapter writes."""
MAX_PREFIX_LENGTH: Final = 64
"""Longest prefix in characters (printable ASCII without space, like keys)."""
SOCKET_CONNECT_TIMEOUT_SECONDS: Final = 0.5
"""TCP connect timeout: Redis sits next to the host; a slow connect means it is down."""
SOCKET_TIMEOUT_SECONDS: Final = 1.0
"""Deadline of one command (its connect, send and reply): every command here is O(1) on
the server."""
LANES: Final = 1
"""Connections per store that carry the commands, pipelined: one lets the most commands share
a write and a read (measured: half the CPU per command of one-at-a-time connections at 16
commands in flight)."""
COMMAND_RETRIES: Final = 0
"""No automatic resend: a lost reply to GETDEL / SET NX must fail closed, not repeat."""
MIN_REDIS_VERSION: Final = (6, 2, 0)
"""GETDEL needs Redis 6.2.0; everything else here (SET NX PX, EVALSHA) is older."""
MS_PER_SECOND: Final = 1000
_PTTL_NO_KEY: Final = -2
"""``PTTL`` reply for a missing key (``-1`` means a key without expiry)."""

INCR_SCRIPT: Final = """
-- KEYS[1]: counter; ARGV[1]: increment; ARGV[2]: TTL in milliseconds.
-- Create at 0 with the TTL only if absent: later calls never extend the window.
redis.call('SET', KEYS[1], '0', 'NX', 'PX', ARGV[2])
local count = redis.call('INCRBY', KEYS[1], ARGV[1])
-- Invariant repair: a counter without expiry would block forever; give it the window.
if redis.call('PTTL', KEYS[1]) == -1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return count
"""
"""Fixed-window counter, atomic because Redis runs a script as one unit."""

INCR_AND_SET_SCRIPT: Final = (
    INCR_SCRIPT.replace("return count\n", "")
    + """-- KEYS[2]: value key; ARGV[3]: value; ARGV[4]: its TTL in milliseconds.
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
return count
"""
)
""":data:`INCR_SCRIPT` and a ``SET`` in one atomic unit and one round trip."""

CONSUME_AND_INCR_SCRIPT: Final = """
-- KEYS[1]: consumed (GETDEL); KEYS[2]: counter, counted only if KEYS[1] was there;
-- ARGV[1]: increment; ARGV[2]: the counter's TTL in milliseconds (set on creation only).
local v = redis.call('GET', KEYS[1])
if not v then return {false, false} end
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], '0', 'NX', 'PX', ARGV[2])
local count = redis.call('INCRBY', KEYS[2], ARGV[1])
if redis.call('PTTL', KEYS[2]) == -1 then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return {v, count}
"""
""":meth:`RedisEphemeralStore.consume_and_incr`: ``GETDEL`` and a counter, atomically."""

CONSUME_AND_GET_SCRIPT: Final = """
-- KEYS[1]: consumed (GETDEL); KEYS[2..]: read. Absent values come back as false.
local out = {redis.call('GET', KEYS[1])}
if out[1] then redis.call('DEL', KEYS[1]) end
for i = 2, #KEYS do out[i] = redis.call('GET', KEYS[i]) end
return out
"""
""":meth:`RedisEphemeralStore.consume_and_get`: ``GETDEL`` and reads, atomically."""

PUT_WITHIN_LIMITS_SCRIPT: Final = """
-- KEYS[1..n]: counters; KEYS[n+1]: the value's key. ARGV[2i-1], ARGV[2i]: counter i's
-- window in milliseconds (its TTL, set on creation only) and its limit; ARGV[2n+1],
-- ARGV[2n+2]: the value and its TTL in milliseconds. Each counter counts as INCR_SCRIPT
-- does; the first one over its limit refuses: its position comes back, the counters after
-- it are not counted and nothing is stored. 0: every counter within its limit, stored.
local n = #KEYS - 1
for i = 1, n do
  local window = ARGV[2 * i - 1]
  redis.call('SET', KEYS[i], '0', 'NX', 'PX', window)
  local count = redis.call('INCRBY', KEYS[i], 1)
  if redis.call('PTTL', KEYS[i]) == -1 then
    redis.call('PEXPIRE', KEYS[i], window)
  end
  if count > tonumber(ARGV[2 * i]) then return i end
end
redis.call('SET', KEYS[n + 1], ARGV[2 * n + 1], 'PX', ARGV[2 * n + 2])
return 0
"""
""":meth:`RedisEphemeralStore.put_within_limits`: counters with limits and a ``SET``."""

_UNAVAILABLE: Final = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OSError)
"""Errors meaning the backend cannot serve us now (ReadOnlyError: failover in progress)."""


def validate_prefix(prefix: str) -> None:
    """Refuse prefixes that are empty, long, or not printable ASCII without space."""
    if not isinstance(prefix, str) or not prefix:
        raise ValueError("prefix must be a non-empty str")
    if len(prefix) > MAX_PREFIX_LENGTH:
        raise ValueError(f"prefix is longer than {MAX_PREFIX_LENGTH} characters")
    if not all(MIN_KEY_CHAR <= ord(char) <= MAX_KEY_CHAR for char in prefix):
        raise ValueError("prefix must be printable ASCII without spaces or control characters")


def require_server_version(version: str) -> None:
    """Refuse a Redis server older than :data:`MIN_REDIS_VERSION` (``INFO server``)."""
    try:
        found = tuple(int(part) for part in version.split(".")[:3])
    except ValueError:
        raise EphemeralStoreError("cannot parse the Redis server version") from None
    if found < MIN_REDIS_VERSION:
        wanted = ".".join(map(str, MIN_REDIS_VERSION))
        raise EphemeralStoreError(f"Redis {version} is too old: GETDEL needs {wanted}")


def ttl_to_ms(ttl: float) -> int:
    """Milliseconds for ``PX``, rounded up and at least 1."""
    return max(1, math.ceil(ttl * MS_PER_SECOND))


@contextmanager
def _backend_errors() -> Iterator[None]:
    """Map redis-py errors to the store's hierarchy, in one place (CONVENTIONS 4)."""
    try:
        yield
    except _UNAVAILABLE as exc:
        raise EphemeralStoreUnavailable(
            f"the Redis ephemeral store is unavailable ({type(exc).__name__})"
        ) from exc
    except OutOfMemoryError as exc:
        raise EphemeralStoreFull("the Redis ephemeral store is out of memory") from exc
    except RedisError as exc:
        raise EphemeralStoreError(
            f"the Redis ephemeral store failed ({type(exc).__name__})"
        ) from exc


def _as_bytes(value: bytes | str | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    raise EphemeralStoreError("the Redis client decodes responses; values must stay bytes")


class _Script:
    """A Lua script sent as ``EVALSHA`` (its SHA-1), as ``EVAL`` once if the server lacks it."""

    __slots__ = ("body", "sha")

    def __init__(self, body: str) -> None:
        self.body = body.encode()
        self.sha = hashlib.sha1(self.body, usedforsecurity=False).hexdigest().encode()


class RedisEphemeralStore:
    """:class:`~healthid.store.ephemeral.base.EphemeralStore` on Redis >= 6.2.

    Pass a ``redis.asyncio.Redis`` client made with ``decode_responses=False`` (the caller
    keeps owning it), or use :meth:`from_url`, which sets the timeouts and retry policy of
    this module and closes the client in :meth:`aclose`. The client answers :meth:`ping`;
    the commands go over ``lanes`` connections of the store's own, made with the client's
    connection settings (address, credentials, database, TLS) and closed in :meth:`aclose`.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        owns_client: bool = False,
        lanes: int = LANES,
    ) -> None:
        validate_prefix(prefix)
        pool = client.connection_pool
        if pool.connection_kwargs.get("decode_responses"):
            raise ValueError("the Redis client must not decode responses: values are bytes")
        if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 1:
            raise ValueError("lanes must be a positive int")
        self._client = client
        # redis-py's own per-read and per-write timeouts are off on the lanes: each reply has
        # a deadline of SOCKET_TIMEOUT_SECONDS (PipelinedConnection) instead. RESP2, whatever
        # redis-py's default: the replies are read here, as RESP2 types (Lua false is nil).
        settings = {**pool.connection_kwargs, "socket_timeout": None, "protocol": 2}
        connection_class = pool.connection_class
        self._lanes = tuple(
            PipelinedConnection(
                lambda: connection_class(**settings), reply_timeout=SOCKET_TIMEOUT_SECONDS
            )
            for _ in range(lanes)
        )
        self._next_lane = itertools.cycle(self._lanes).__next__
        self._prefix = prefix
        self._raw_prefix = prefix.encode("ascii")
        self._owns_client = owns_client
        self._version_checked = False
        self._closed = False

    @classmethod
    def from_url(cls, url: str, prefix: str = DEFAULT_PREFIX) -> RedisEphemeralStore:
        """A store on a new client for ``url`` (``redis://`` or ``rediss://``)."""
        validate_prefix(prefix)
        client = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=SOCKET_CONNECT_TIMEOUT_SECONDS,
            socket_timeout=SOCKET_TIMEOUT_SECONDS,
            retry=Retry(NoBackoff(), COMMAND_RETRIES),
            decode_responses=False,
        )
        return cls(client, prefix=prefix, owns_client=True)

    @property
    def prefix(self) -> str:
        """The namespace in front of every key."""
        return self._prefix

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        """``SET key value PX ttl``."""
        validate_value(value)
        validate_ttl(ttl)
        name = self._name(key)
        await self._call(b"SET", name, value, b"PX", b"%d" % ttl_to_ms(ttl))

    async def put_if_absent(self, key: str, value: bytes, ttl: float) -> bool:
        """``SET key value NX PX ttl``: first writer wins (RFC 7523 §3 replay cache)."""
        validate_value(value)
        validate_ttl(ttl)
        name = self._name(key)
        reply = await self._call(b"SET", name, value, b"NX", b"PX", b"%d" % ttl_to_ms(ttl))
        stored: bool = reply == b"OK"  # nil: another writer was first
        return stored

    async def get(self, key: str) -> bytes | None:
        """``GET key``."""
        return _as_bytes(await self._call(b"GET", self._name(key)))

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """``MGET``: one round trip."""
        validate_keys(keys)
        values = await self._call(b"MGET", *[self._name(k) for k in keys])
        if not isinstance(values, list) or len(values) != len(keys):
            raise EphemeralStoreError("MGET returned an unexpected reply")
        return [_as_bytes(v) for v in values]

    async def consume_and_get(
        self, key: str, others: Sequence[str]
    ) -> tuple[bytes | None, list[bytes | None]]:
        """:data:`CONSUME_AND_GET_SCRIPT`: atomic, one round trip (a script, not ``MULTI``:
        redis-py's transactions cost several times the commands)."""
        validate_keys(others)
        names = [self._name(key), *(self._name(k) for k in others)]
        result = await self._script(_CONSUME_AND_GET, names)
        if not isinstance(result, list) or len(result) != len(names):
            raise EphemeralStoreError("the consume script returned an unexpected reply")
        consumed, *values = (_as_bytes(v) for v in result)
        return consumed, values

    async def consume_and_incr(
        self, key: str, counter: str, window: float
    ) -> tuple[bytes | None, int | None]:
        """:data:`CONSUME_AND_INCR_SCRIPT`: atomic, one round trip."""
        validate_ttl(window)
        names = [self._name(key), self._name(counter)]
        result = await self._counting_script(
            _CONSUME_AND_INCR, names, b"1", b"%d" % ttl_to_ms(window)
        )
        if not isinstance(result, list) or len(result) != 2:
            raise EphemeralStoreError("the consume script returned an unexpected reply")
        value, count = result
        if value is None:
            return None, None
        if not isinstance(count, int):
            raise EphemeralStoreError("the counter script returned a non-integer")
        return _as_bytes(value), count

    async def consume(self, key: str) -> bytes | None:
        """``GETDEL key``: one atomic command, so one caller wins (CONVENTIONS 14)."""
        return _as_bytes(await self._call(b"GETDEL", self._name(key)))

    async def delete(self, key: str) -> bool:
        """``DEL key``; expired keys count as absent."""
        removed = await self._call(b"DEL", self._name(key))
        if not isinstance(removed, int):
            raise EphemeralStoreError("DEL returned a non-integer")
        return removed > 0

    async def incr(self, key: str, ttl: float, amount: int = 1) -> int:
        """:data:`INCR_SCRIPT`: create with ``ttl`` if absent, then ``INCRBY amount``."""
        validate_ttl(ttl)
        validate_amount(amount)
        name = self._name(key)
        count = await self._counting_script(_INCR, [name], b"%d" % amount, b"%d" % ttl_to_ms(ttl))
        if not isinstance(count, int):
            raise EphemeralStoreError("the counter script returned a non-integer")
        return count

    async def incr_and_put(
        self, counter: str, window: float, key: str, value: bytes, ttl: float
    ) -> int:
        """:data:`INCR_AND_SET_SCRIPT`: the counter as :meth:`incr`, then ``SET key``."""
        validate_ttl(window)
        validate_value(value)
        validate_ttl(ttl)
        names = [self._name(counter), self._name(key)]
        count = await self._counting_script(
            _INCR_AND_SET,
            names,
            b"1",
            b"%d" % ttl_to_ms(window),
            value,
            b"%d" % ttl_to_ms(ttl),
        )
        if not isinstance(count, int):
            raise EphemeralStoreError("the counter script returned a non-integer")
        return count

    async def put_within_limits(
        self, limits: Sequence[tuple[str, float, int]], key: str, value: bytes, ttl: float
    ) -> int | None:
        """:data:`PUT_WITHIN_LIMITS_SCRIPT`: atomic, one round trip."""
        validate_limits(limits)
        validate_value(value)
        validate_ttl(ttl)
        names = [*(self._name(counter) for counter, _, _ in limits), self._name(key)]
        args = [b"%d" % n for _, window, limit in limits for n in (ttl_to_ms(window), limit)]
        refused = await self._counting_script(
            _PUT_WITHIN_LIMITS, names, *args, value, b"%d" % ttl_to_ms(ttl)
        )
        if not isinstance(refused, int) or not 0 <= refused <= len(limits):
            raise EphemeralStoreError("the limits script returned an unexpected reply")
        return None if refused == 0 else refused - 1

    async def ttl(self, key: str) -> float | None:
        """``PTTL key`` in seconds; a key without expiry breaks the store's invariant."""
        remaining_ms = await self._call(b"PTTL", self._name(key))
        if not isinstance(remaining_ms, int):
            raise EphemeralStoreError("PTTL returned a non-integer")
        if remaining_ms == _PTTL_NO_KEY:
            return None
        if remaining_ms < 0:
            raise EphemeralStoreError("an ephemeral key has no expiry")
        return remaining_ms / MS_PER_SECOND

    async def ping(self) -> None:
        """``PING``; the first successful ping also checks :data:`MIN_REDIS_VERSION`."""
        self._check_open()
        with _backend_errors():
            await self._client.ping()
            if self._version_checked:
                return
            info = await self._client.info("server")
        require_server_version(str(info.get("redis_version", "")))
        self._version_checked = True

    async def aclose(self) -> None:
        """Close the lanes, and the client if this store made it; later operations are
        unavailable."""
        if self._closed:
            return
        self._closed = True
        with _backend_errors():
            for lane in self._lanes:
                await lane.aclose()
            if self._owns_client:
                await self._client.aclose()

    async def _call(self, *command: bytes) -> Any:
        """One command on the next lane (a busy lane queues it behind its lock)."""
        with _backend_errors():
            return await self._next_lane().call(pack(*command))

    async def _script(self, script: _Script, keys: Sequence[bytes], *args: bytes) -> Any:
        """``EVALSHA``; the script body once if the server does not know it (a restarted or
        flushed server), which also caches it there. The whole script ran, or none of it."""
        count = b"%d" % len(keys)
        with _backend_errors():
            lane = self._next_lane()
            try:
                return await lane.call(pack(b"EVALSHA", script.sha, count, *keys, *args))
            except NoScriptError:
                return await lane.call(pack(b"EVAL", script.body, count, *keys, *args))

    async def _counting_script(self, script: _Script, keys: Sequence[bytes], *args: bytes) -> Any:
        """:meth:`_script` for the scripts that ``INCRBY``: Redis refusing the stored value
        (not an integer, or it would overflow) is a :class:`CounterValueError`."""
        try:
            return await self._script(script, keys, *args)
        except EphemeralStoreError as exc:
            if type(exc.__cause__) is not ResponseError:  # read-only, OOM, ACL: as mapped
                raise
            raise CounterValueError("value is not a 64-bit integer counter") from exc.__cause__

    def _name(self, key: str) -> bytes:
        """The Redis key: the prefix plus a validated key (checked before any I/O)."""
        validate_key(key)
        self._check_open()
        return self._raw_prefix + key.encode("ascii")

    def _check_open(self) -> None:
        if self._closed:
            raise EphemeralStoreUnavailable("the Redis ephemeral store is closed")


_INCR: Final = _Script(INCR_SCRIPT)
_INCR_AND_SET: Final = _Script(INCR_AND_SET_SCRIPT)
_CONSUME_AND_GET: Final = _Script(CONSUME_AND_GET_SCRIPT)
_CONSUME_AND_INCR: Final = _Script(CONSUME_AND_INCR_SCRIPT)
_PUT_WITHIN_LIMITS: Final = _Script(PUT_WITHIN_LIMITS_SCRIPT)
