"""Ephemeral store: TTL'd flow state, single-use artefacts and counters.

The port is :class:`EphemeralStore`; :func:`open_ephemeral_store` picks the adapter:
in-memory for the embedded single-process host, Redis for several workers or hosts.
"""

from __future__ import annotations

from healthid.store.ephemeral.base import (
    MAX_COUNTER_VALUE,
    MAX_INCR_AMOUNT,
    MAX_KEY_LENGTH,
    MAX_LIMIT,
    MAX_LIMITS,
    MAX_TTL_SECONDS,
    MAX_VALUE_BYTES,
    CounterValueError,
    EphemeralStore,
    EphemeralStoreError,
    EphemeralStoreFull,
    EphemeralStoreUnavailable,
    InvalidAmountError,
    InvalidKeyError,
    InvalidTTLError,
    InvalidValueError,
)
from healthid.store.ephemeral.memory import MemoryEphemeralStore
from healthid.store.ephemeral.redis import DEFAULT_PREFIX, RedisEphemeralStore

__all__ = [
    "DEFAULT_PREFIX",
    "MAX_COUNTER_VALUE",
    "MAX_INCR_AMOUNT",
    "MAX_KEY_LENGTH",
    "MAX_LIMIT",
    "MAX_LIMITS",
    "MAX_TTL_SECONDS",
    "MAX_VALUE_BYTES",
    "CounterValueError",
    "EphemeralStore",
    "EphemeralStoreError",
    "EphemeralStoreFull",
    "EphemeralStoreUnavailable",
    "InvalidAmountError",
    "InvalidKeyError",
    "InvalidTTLError",
    "InvalidValueError",
    "MemoryEphemeralStore",
    "RedisEphemeralStore",
    "open_ephemeral_store",
]


def open_ephemeral_store(redis_url: str | None, *, prefix: str = DEFAULT_PREFIX) -> EphemeralStore:
    """The Redis store for ``redis_url``, or the in-memory store when it is ``None``.

    Opening connects lazily; call ``await store.ping()`` at start-up to fail fast
    (CONVENTIONS 7) and to check the Redis server version.
    """
    if redis_url is None:
        return MemoryEphemeralStore()
    return RedisEphemeralStore.from_url(redis_url, prefix=prefix)
