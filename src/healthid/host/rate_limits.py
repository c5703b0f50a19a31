"""Rate limits against attackers, on the ephemeral store (fixed windows; issue #3 item 7,
issue #7 item 4). The defaults are documented in README "Limits against attackers".

Why our own counters and not the ``limits`` library: a ``limits`` hit is one Lua call per
(limit, key) on its own Redis client, and it cannot be folded into the operation that
stores or consumes the flow's state. Here a login challenge is counted and stored in one
round trip (:meth:`RateLimiter.take_and_put` on ``put_within_limits``), a login reads its
failure counters while it consumes its challenge (``consume_and_get``), and an accepted PAR
is counted against its address and its client as it is stored
(:meth:`RateLimiter.take_all_and_put`). A counter costs about what a round trip costs
(~20 µs of CPU, measured), so what counts is the number of round trips.

Failures count against the attacker's address (and, with a high bar and a short window,
against a device), so an attacker without the device key cannot lock its owner out.
Counters live in the shared store: when it is down, every limited request fails closed with
:class:`~healthid.store.ephemeral.EphemeralStoreUnavailable` (HTTP 503), never unlimited.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from healthid.host.wallet_errors import TooManyRequests
from healthid.store.ephemeral import EphemeralStore


@dataclass(frozen=True, kw_only=True)
class RateLimit:
    """At most ``limit`` events per ``window`` seconds (a fixed window: across a window's
    boundary up to twice ``limit`` can pass within ``window`` seconds)."""

    limit: int
    window: int


@dataclass(frozen=True, kw_only=True)
class WalletLimits:
    """Documented defaults; see README "Limits against attackers"."""

    enrolments_per_ip: RateLimit = RateLimit(limit=30, window=3600)
    failed_proofs_per_ip: RateLimit = RateLimit(limit=10, window=3600)
    failed_proofs_per_person: RateLimit = RateLimit(limit=10, window=3600)
    challenges_per_ip: RateLimit = RateLimit(limit=600, window=60)
    failed_auth_per_ip: RateLimit = RateLimit(limit=30, window=600)
    failed_auth_per_device_ip: RateLimit = RateLimit(limit=5, window=600)
    # Across all IPs a device is only slowed down, with a high bar: an attacker without the
    # key cannot keep its owner out for long (the window is short).
    failed_auth_per_device: RateLimit = RateLimit(limit=100, window=300)


@dataclass(frozen=True, kw_only=True)
class OidcLimits:
    """Limits of the relying parties' endpoints (PAR and token, spec §2 steps 2 and 6).

    Ceilings above the platform's capacity target (400 flows/s): they stop a runaway or
    hijacked client and a flood from one address, not a relying party's normal peak.
    """

    # every PAR from one address (the TLS terminator's X-Forwarded-For), counted before the
    # relying party is resolved: a flood of unauthenticated PARs stops here
    par_per_ip: RateLimit = RateLimit(limit=10_000, window=10)
    # accepted PARs per relying party: counted only once its client certificate matched, so
    # nobody else can spend a client's budget
    par_per_client: RateLimit = RateLimit(limit=10_000, window=10)
    # token requests per relying party, counted once the client and its code checked out and
    # before the enclave builds the ID token (the code is spent by then)
    token_per_client: RateLimit = RateLimit(limit=10_000, window=10)


Check = tuple[str, str, RateLimit]  # (counter name, subject, rule)


def counter_key(name: str, subject: str) -> str:
    return f"rl:{name}:{subject}"


class RateLimiter:
    """Counters per (name, subject) with fixed windows."""

    def __init__(self, store: EphemeralStore) -> None:
        self._store = store

    async def _refuse(self, key: str, rule: RateLimit, what: str) -> None:
        ttl = await self._store.ttl(key)
        raise TooManyRequests(f"too many {what}; try again later", int(ttl or rule.window) + 1)

    async def check(self, name: str, subject: str, rule: RateLimit) -> None:
        """Refuse when the counter is already at its limit (does not count this attempt)."""
        await self.check_counts(
            [(name, subject, rule)], await self._store.get_many([counter_key(name, subject)])
        )

    async def check_counts(self, checks: Sequence[Check], counts: Sequence[bytes | None]) -> None:
        """Refuse when any of ``counts`` (read by the caller in one round trip) is at its limit."""
        for (name, subject, rule), count in zip(checks, counts, strict=True):
            if count is not None and int(count) >= rule.limit:
                await self._refuse(counter_key(name, subject), rule, "attempts")

    async def count(self, name: str, subject: str, rule: RateLimit) -> None:
        await self._store.incr(counter_key(name, subject), rule.window)

    async def take_and_put(
        self, name: str, subject: str, rule: RateLimit, key: str, value: bytes, ttl: float
    ) -> None:
        """:meth:`take`, storing ``key`` in the same round trip (refused, nothing is stored)."""
        await self.take_all_and_put([(name, subject, rule)], key, value, ttl)

    async def take_all_and_put(
        self, checks: Sequence[Check], key: str, value: bytes, ttl: float
    ) -> None:
        """Count this attempt against each check in order and store ``key``, in one round
        trip; refused by the first check over its limit (the checks after it are not counted
        and nothing is stored)."""
        refused = await self._store.put_within_limits(
            [
                (counter_key(name, subject), rule.window, rule.limit)
                for name, subject, rule in checks
            ],
            key,
            value,
            ttl,
        )
        if refused is not None:
            name, subject, rule = checks[refused]
            await self._refuse(counter_key(name, subject), rule, "requests")

    async def take(self, name: str, subject: str, rule: RateLimit) -> None:
        """Count this attempt and refuse it when it is over the limit (one round trip)."""
        key = counter_key(name, subject)
        if await self._store.incr(key, rule.window) > rule.limit:
            await self._refuse(key, rule, "requests")
