"""The ephemeral store port: TTL'd flow state, single-use artefacts and counters.

It holds what lives for seconds to hours and is shared by every host worker: PAR
``request_uri`` entries (RFC 9126 §2.2), authorization codes (RFC 6749 §4.1.2, §10.5),
sessions, nonces, ``jti`` replay caches (RFC 7523 §3, RFC 9449 §11.1) and fixed-window
rate-limit counters. Values are opaque bytes: callers serialise and, where the content
is personal, encrypt them before they reach the store.

Failure semantics: when the backend cannot be reached an operation raises
:class:`EphemeralStoreUnavailable`; it never answers "not found". Callers fail closed on it.

Keys appear in the backend's own diagnostics (Redis ``MONITOR``, ``SLOWLOG``), so they must
carry only random handles, hashes or pseudonyms, never personal data (CONVENTIONS 15).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Final, Protocol

# CONVENTIONS 6: every bound is a named constant next to the code that enforces it.
MAX_KEY_LENGTH = 256
"""Longest key in characters (all printable ASCII, so also bytes), without the adapter's prefix."""
MIN_KEY_CHAR = 0x21
"""Lowest code point allowed in a key: ``!`` (space and control characters are refused)."""
MAX_KEY_CHAR = 0x7E
"""Highest code point allowed in a key: ``~`` (DEL and non-ASCII are refused)."""
MAX_VALUE_BYTES = 64 * 1024
"""Largest value in bytes: flow state is small; a larger value is a bug or an attack."""
MAX_TTL_SECONDS = 24 * 60 * 60.0
"""Longest TTL: anything that must outlive a day belongs in the durable SQL store."""
MAX_INCR_AMOUNT = 1_000_000
"""Largest single increment of a counter; counters only count up (fixed-window limits)."""
MAX_COUNTER_VALUE = 2**63 - 1
"""Largest counter value: the signed 64-bit range of Redis ``INCRBY``, on every adapter."""
MAX_LIMITS = 8
"""Most counters one :meth:`EphemeralStore.put_within_limits` counts."""
MAX_LIMIT = 2**53
"""Largest limit of a counter: exact in the double-precision numbers of Redis's Lua."""


class EphemeralStoreError(Exception):
    """Base of every ephemeral store error; the classes below are its direct children."""


class EphemeralStoreUnavailable(EphemeralStoreError):  # noqa: N818 - the name says the state
    """The backend cannot be reached, timed out or is closed: callers must fail closed."""


class EphemeralStoreFull(EphemeralStoreError):  # noqa: N818 - the name says the state
    """The store refuses a new entry because it reached its capacity bound."""


class CounterValueError(EphemeralStoreError):
    """``incr`` met a value that is not a 64-bit integer, or would overflow one."""


class InvalidKeyError(EphemeralStoreError, ValueError):
    """A key is empty, too long, or has characters outside printable ASCII without space."""


class InvalidValueError(EphemeralStoreError, ValueError):
    """A value is not ``bytes`` or is larger than :data:`MAX_VALUE_BYTES`."""


class InvalidTTLError(EphemeralStoreError, ValueError):
    """A TTL is not a finite number in ``(0, MAX_TTL_SECONDS]``."""


class InvalidAmountError(EphemeralStoreError, ValueError):
    """An increment is not an ``int`` in ``[1, MAX_INCR_AMOUNT]``."""


class EphemeralStore(Protocol):
    """Async key-value store with mandatory TTLs, shared by every host worker.

    Every entry has a TTL; there is no way to store something forever. All operations
    are atomic with respect to each other, across tasks, threads and (for shared
    backends) processes and hosts.
    """

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds, replacing any earlier value."""
        ...

    async def put_if_absent(self, key: str, value: bytes, ttl: float) -> bool:
        """Store only if ``key`` holds nothing; ``True`` for the one writer that won.

        The replay cache primitive for nonces and ``jti`` values (RFC 7523 §3): a second
        writer of the same key gets ``False`` and the earlier value and TTL are untouched.
        """
        ...

    async def get(self, key: str) -> bytes | None:
        """The value under ``key``, or ``None`` when it is absent or expired."""
        ...

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """:meth:`get` for several keys in one round trip (at most MAX_MANY_KEYS)."""
        ...

    async def consume_and_get(
        self, key: str, others: Sequence[str]
    ) -> tuple[bytes | None, list[bytes | None]]:
        """:meth:`consume` ``key`` and :meth:`get_many` ``others``, atomically, in one round
        trip (a login consumes its challenge and reads its rate counters together)."""
        ...

    async def incr_and_put(
        self, counter: str, window: float, key: str, value: bytes, ttl: float
    ) -> int:
        """:meth:`incr` ``counter`` (fixed window) and :meth:`put` ``key``, atomically, in one
        round trip (a login challenge counts against its address as it is stored)."""
        ...

    async def consume_and_incr(
        self, key: str, counter: str, window: float
    ) -> tuple[bytes | None, int | None]:
        """:meth:`consume` ``key`` and, only if it was there, :meth:`incr` ``counter`` (fixed
        window), atomically, in one round trip (a code redeemed counts against its client)."""
        ...

    async def put_within_limits(
        self, limits: Sequence[tuple[str, float, int]], key: str, value: bytes, ttl: float
    ) -> int | None:
        """Count one attempt against each ``(counter, window, limit)`` in order, as
        :meth:`incr` counts (fixed windows), and :meth:`put` ``key`` if every counter stays
        within its limit; atomically, in one round trip (a PAR counts against its address and
        its client as it is stored).

        ``None`` when stored; else the index of the first counter that went over its limit:
        it was counted, the counters after it were not, and nothing was stored (a refused
        attempt still counts where it was refused, as with :meth:`incr`).
        """
        ...

    async def consume(self, key: str) -> bytes | None:
        """Atomically return and delete the value: exactly one caller ever gets it.

        CONVENTIONS 14 and RFC 6749 §4.1.2 (a code is used once): this is the only way to
        redeem a one-time artefact; never ``get`` followed by ``delete``.
        """
        ...

    async def delete(self, key: str) -> bool:
        """Remove ``key``; ``True`` when a live entry was removed."""
        ...

    async def incr(self, key: str, ttl: float, amount: int = 1) -> int:
        """Add ``amount`` to the counter under ``key`` and return the new count.

        A missing counter is created at zero with ``ttl``; later increments never extend
        that TTL, so the counter describes one fixed window (rate limits).
        """
        ...

    async def ttl(self, key: str) -> float | None:
        """Seconds until ``key`` expires, or ``None`` when it is absent or expired."""
        ...

    async def ping(self) -> None:
        """Check that the backend answers; raise :class:`EphemeralStoreUnavailable` if not."""
        ...

    async def aclose(self) -> None:
        """Release the backend; every later operation raises ``EphemeralStoreUnavailable``."""
        ...


MAX_MANY_KEYS: Final = 64
"""Most keys one get_many may ask for."""


def validate_keys(keys: Sequence[str]) -> None:
    """Refuse a key list that is empty, too long, or holds an invalid key."""
    if not 1 <= len(keys) <= MAX_MANY_KEYS:
        raise InvalidKeyError(f"get_many takes 1 to {MAX_MANY_KEYS} keys")
    for key in keys:
        validate_key(key)


_KEY_CHARS = re.compile(f"[{re.escape(chr(MIN_KEY_CHAR))}-{re.escape(chr(MAX_KEY_CHAR))}]+")


def validate_key(key: str) -> None:
    """Refuse keys that are not 1..MAX_KEY_LENGTH printable ASCII characters without space."""
    if not isinstance(key, str):
        raise InvalidKeyError("key must be a str")
    if not key:
        raise InvalidKeyError("key must not be empty")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidKeyError(f"key is longer than {MAX_KEY_LENGTH} characters")
    if not _KEY_CHARS.fullmatch(key):
        raise InvalidKeyError("key must be printable ASCII without spaces or control characters")


def validate_value(value: bytes) -> None:
    """Refuse values that are not ``bytes`` of at most MAX_VALUE_BYTES."""
    if not isinstance(value, bytes):
        raise InvalidValueError("value must be bytes")
    if len(value) > MAX_VALUE_BYTES:
        raise InvalidValueError(f"value is larger than {MAX_VALUE_BYTES} bytes")


def validate_ttl(ttl: float) -> None:
    """Refuse TTLs that are not finite numbers in (0, MAX_TTL_SECONDS]."""
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise InvalidTTLError("ttl must be a number of seconds")
    if not math.isfinite(ttl):
        raise InvalidTTLError("ttl must be finite")
    if ttl <= 0:
        raise InvalidTTLError("ttl must be greater than zero")
    if ttl > MAX_TTL_SECONDS:
        raise InvalidTTLError(f"ttl is longer than {MAX_TTL_SECONDS:g} seconds")


def validate_limits(limits: Sequence[tuple[str, float, int]]) -> None:
    """Refuse a limit list that is empty or too long, or a bad counter key, window or limit."""
    if not 1 <= len(limits) <= MAX_LIMITS:
        raise InvalidKeyError(f"put_within_limits takes 1 to {MAX_LIMITS} counters")
    for counter, window, limit in limits:
        validate_key(counter)
        validate_ttl(window)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= MAX_LIMIT:
            raise InvalidAmountError(f"a limit must be an int in [0, {MAX_LIMIT}]")


def validate_amount(amount: int) -> None:
    """Refuse increments that are not ints in [1, MAX_INCR_AMOUNT]."""
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise InvalidAmountError("amount must be an int")
    if amount < 1:
        raise InvalidAmountError("amount must be at least 1")
    if amount > MAX_INCR_AMOUNT:
        raise InvalidAmountError(f"amount is larger than {MAX_INCR_AMOUNT}")
