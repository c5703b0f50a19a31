"""Signing key rotation: publish the next key before it signs, keep the old one until
everything it signed has expired.

Timeline of one rotation at time ``t`` with lead ``L`` and longest signed lifetime ``M``::

    new key:  created_at = t (published)   activate_at = t + L (signs from here)
    old key:  retire_at  = t + L (stops signing)   expires_at = t + L + M (unpublished, pruned)

``L`` (``PUBLISH_LEAD``) exceeds the time relying parties may cache our JWKS or entity
statement (up to 2 h in the gematik TI federation), so every relying party knows the new key
before it sees a signature by it. ``M`` is the longest lifetime of anything the key signs
(e.g. entity statements); add the verifiers' clock skew to it. The very first key of a
purpose is active immediately: nobody can hold a stale key set for a purpose that had no keys.
Otherwise there is no fallback: when no key is active, signing fails (``NoActiveKey``).

Times are Unix seconds. The module's functions are pure (``now`` in); ``KeyRing`` reads its
injected clock and drives the key store and the repository.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Final, Protocol

from healthid.keys.base import (
    KeyInfo,
    KeyNotFound,
    KeyStoreError,
    SigningKeyStore,
    check_kid,
    check_purpose,
)

# Relying parties in the TI federation may cache our JWKS / entity statement for up to 2 h.
FEDERATION_CACHE_MAX: Final = 2 * 60 * 60
# Margin on top of the cache time for clock skew and fetch jitter.
PUBLISH_MARGIN: Final = 15 * 60
# How long a new key is published before it signs.
PUBLISH_LEAD: Final = FEDERATION_CACHE_MAX + PUBLISH_MARGIN

Clock = Callable[[], int]


class NoActiveKey(KeyStoreError):  # noqa: N818 - the name says the state
    """No key of the purpose may sign now (none exists, or none is active yet)."""


class RotationPending(KeyStoreError):  # noqa: N818 - the name says the state
    """A next key is already published and waiting to activate; rotate again after it."""


class DuplicateKey(KeyStoreError):  # noqa: N818 - the name says the state
    """The repository already holds a key with this kid."""


@dataclass(frozen=True, kw_only=True)
class KeyRecord:
    """One key of the ring: its public half and its schedule (Unix seconds).

    Published from ``created_at`` until ``expires_at`` (``None``: no end yet); signs from
    ``activate_at`` until ``retire_at`` (``None``: no end yet).
    """

    kid: str
    purpose: str
    backend: str
    public_jwk: Mapping[str, str]
    created_at: int
    activate_at: int
    retire_at: int | None = None
    expires_at: int | None = None

    def __post_init__(self) -> None:
        check_kid(self.kid)
        check_purpose(self.purpose)
        object.__setattr__(self, "public_jwk", MappingProxyType(dict(self.public_jwk)))
        if self.public_jwk.get("kid", self.kid) != self.kid:
            raise ValueError("public_jwk kid differs from the record's kid")
        if self.activate_at < self.created_at:
            raise ValueError("a key cannot activate before it is published")
        if self.retire_at is not None and self.retire_at < self.activate_at:
            raise ValueError("a key cannot retire before it activates")
        if self.expires_at is not None and self.retire_at is None:
            raise ValueError("a key that never retires cannot expire")
        if self.expires_at is not None and self.retire_at is not None:
            if self.expires_at < self.retire_at:
                raise ValueError("a key cannot expire before it retires")

    def is_active(self, now: int) -> bool:
        return self.activate_at <= now and (self.retire_at is None or now < self.retire_at)

    def is_published(self, now: int) -> bool:
        return self.created_at <= now and (self.expires_at is None or now < self.expires_at)

    def is_expired(self, now: int) -> bool:
        return self.expires_at is not None and self.expires_at <= now


class KeyRingRepository(Protocol):
    """Durable key ring (public halves and schedules; private halves stay in the store).

    ``update`` changes the schedule only (``activate_at``, ``retire_at``, ``expires_at``).
    """

    async def add(self, record: KeyRecord) -> None: ...

    async def list(self, purpose: str) -> builtins.list[KeyRecord]: ...

    async def update(self, record: KeyRecord) -> None: ...

    async def remove(self, kid: str) -> None: ...


class InMemoryKeyRingRepository:
    """``KeyRingRepository`` in a dict; for tests and single-process development."""

    def __init__(self) -> None:
        self._records: dict[str, KeyRecord] = {}

    async def add(self, record: KeyRecord) -> None:
        if record.kid in self._records:
            raise DuplicateKey(f"key {record.kid} is already in the ring")
        self._records[record.kid] = record

    async def list(self, purpose: str) -> builtins.list[KeyRecord]:
        return sort_records(r for r in self._records.values() if r.purpose == purpose)

    async def update(self, record: KeyRecord) -> None:
        old = self._records.get(record.kid)
        if old is None or old.purpose != record.purpose:
            raise KeyNotFound(f"no key {record.kid} for purpose {record.purpose}")
        self._records[record.kid] = replace(
            old,
            activate_at=record.activate_at,
            retire_at=record.retire_at,
            expires_at=record.expires_at,
        )

    async def remove(self, kid: str) -> None:
        if self._records.pop(kid, None) is None:
            raise KeyNotFound(f"no key {kid}")


# -- pure schedule functions ---------------------------------------------------------------


def sort_records(records: Iterable[KeyRecord]) -> list[KeyRecord]:
    """Oldest first: by ``activate_at``, then ``created_at``, then kid."""
    return sorted(records, key=lambda r: (r.activate_at, r.created_at, r.kid))


def active_key(records: Iterable[KeyRecord], now: int) -> KeyRecord:
    """The key to sign with: the latest-activated key that is active at ``now``; no fallback."""
    records = list(records)
    if not records:
        raise NoActiveKey("the purpose has no signing key; create one first (ensure)")
    active = [r for r in records if r.is_active(now)]
    if not active:
        raise NoActiveKey(
            "no signing key of this purpose is active now; refusing to sign with a key "
            "that is not yet activated or already retired"
        )
    return sort_records(active)[-1]


def published_keys(records: Iterable[KeyRecord], now: int) -> list[KeyRecord]:
    """Every key whose public half must be in the JWKS at ``now``."""
    return sort_records(r for r in records if r.is_published(now))


def expired_keys(records: Iterable[KeyRecord], now: int) -> list[KeyRecord]:
    """Keys whose signatures have all expired: unpublished and ready to be destroyed."""
    return sort_records(r for r in records if r.is_expired(now))


def first_record(info: KeyInfo, now: int) -> KeyRecord:
    """The first key of a purpose: published and active at once."""
    return KeyRecord(
        kid=info.kid,
        purpose=info.purpose,
        backend=info.backend,
        public_jwk=info.public_jwk,
        created_at=now,
        activate_at=now,
    )


def plan_rotation(
    *,
    info: KeyInfo,
    current: KeyRecord,
    now: int,
    publish_lead: int,
    max_signed_lifetime: int,
) -> tuple[KeyRecord, KeyRecord]:
    """The next key (published now, active after the lead) and ``current`` rescheduled to
    retire when the next key activates and to expire once all it signed has expired."""
    switch_at = now + publish_lead
    successor = replace(first_record(info, now), activate_at=switch_at)
    retiring = replace(current, retire_at=switch_at, expires_at=switch_at + max_signed_lifetime)
    return successor, retiring


def jwks(records: Iterable[KeyRecord]) -> dict[str, list[dict[str, str]]]:
    """RFC 7517 §5 JWK Set of ``records`` (pass ``published_keys``)."""
    return {"keys": [dict(r.public_jwk) for r in records]}


# -- the service ---------------------------------------------------------------------------


class KeyRing:
    """Keys per purpose: creation, rotation, selection for signing, publication, pruning."""

    def __init__(
        self,
        *,
        store: SigningKeyStore,
        repository: KeyRingRepository,
        clock: Clock,
        max_signed_lifetime: int,
        publish_lead: int = PUBLISH_LEAD,
        cache_seconds: float = 0,
    ) -> None:
        """``cache_seconds``: how long a process may reuse the ring it read to find the
        active key (the hot path asks on every token; publication always reads afresh). It
        must stay below ``publish_lead``: a key is in the ring that long before it signs, so
        a cached ring still activates it on time; a key removed by hand stops signing at
        most ``cache_seconds`` later."""
        if max_signed_lifetime <= 0:
            raise ValueError("max_signed_lifetime must be positive")
        if publish_lead < 0:
            raise ValueError("publish_lead must not be negative")
        if cache_seconds < 0 or (cache_seconds and cache_seconds >= publish_lead):
            raise ValueError("cache_seconds must be non-negative and below publish_lead")
        self._store = store
        self._repository = repository
        self._clock = clock
        self._max_signed_lifetime = max_signed_lifetime
        self._publish_lead = publish_lead
        self._cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, builtins.list[KeyRecord]]] = {}

    async def _records(self, purpose: str) -> builtins.list[KeyRecord]:
        """The ring of ``purpose``, from the repository or the short-lived process cache."""
        if not self._cache_seconds:
            return await self._repository.list(purpose)
        now = time.monotonic()
        hit = self._cache.get(purpose)
        if hit is not None and now - hit[0] < self._cache_seconds:
            return hit[1]
        records = await self._repository.list(purpose)
        self._cache[purpose] = (now, records)
        return records

    async def _generate(self, purpose: str) -> KeyInfo:
        info = await asyncio.to_thread(self._store.generate, purpose)
        if info.purpose != purpose or info.backend != self._store.backend:
            raise KeyStoreError("key store returned a key for another purpose or backend")
        return info

    async def _add_or_discard(self, record: KeyRecord) -> None:
        """Record a freshly generated key; if that fails, destroy it again."""
        try:
            self._cache.clear()
            await self._repository.add(record)
        except BaseException:
            with contextlib.suppress(KeyStoreError):
                await asyncio.to_thread(self._store.delete, record.kid)
            raise

    async def ensure(self, purpose: str) -> KeyRecord | None:
        """Create the first key of ``purpose`` (active at once); ``None`` if it has keys."""
        check_purpose(purpose)
        if await self._repository.list(purpose):
            return None
        return await self._create_first(purpose)

    async def _create_first(self, purpose: str) -> KeyRecord:
        record = first_record(await self._generate(purpose), self._clock())
        await self._add_or_discard(record)
        return record

    async def rotate(self, purpose: str) -> KeyRecord:
        """Generate and publish the next key; it signs after ``publish_lead`` seconds.

        The new record is stored before the current one is rescheduled, so a failure in
        between leaves the current key signing (never a gap without an active key).
        """
        check_purpose(purpose)
        now = self._clock()
        records = await self._repository.list(purpose)
        if not records:
            return await self._create_first(purpose)
        if any(r.activate_at > now for r in records):
            raise RotationPending(f"a next {purpose} key is already waiting to activate")
        current = active_key(records, now)
        successor, retiring = plan_rotation(
            info=await self._generate(purpose),
            current=current,
            now=now,
            publish_lead=self._publish_lead,
            max_signed_lifetime=self._max_signed_lifetime,
        )
        await self._add_or_discard(successor)
        await self._repository.update(retiring)
        self._cache.clear()
        return successor

    async def active(self, purpose: str) -> KeyRecord:
        """The key that signs for ``purpose`` now (``NoActiveKey`` if none may)."""
        return active_key(await self._records(purpose), self._clock())

    async def published(self, purpose: str) -> list[KeyRecord]:
        """The keys to publish for ``purpose`` now (the next one included)."""
        return published_keys(await self._repository.list(purpose), self._clock())

    async def jwks(self, purpose: str) -> dict[str, list[dict[str, str]]]:
        """The JWK Set to publish for ``purpose`` now."""
        return jwks(await self.published(purpose))

    async def sign(self, purpose: str, data: bytes) -> tuple[str, bytes]:
        """Sign ``data`` with the active key of ``purpose``: ``(kid, ES256 signature)``."""
        record = await self.active(purpose)
        signature = await asyncio.to_thread(self._store.sign, record.kid, data)
        return record.kid, signature

    async def prune(self, purpose: str) -> list[str]:
        """Destroy expired keys in the store and drop them from the ring; their kids."""
        pruned: list[str] = []
        for record in expired_keys(await self._repository.list(purpose), self._clock()):
            if record.backend == self._store.backend:
                try:
                    await asyncio.to_thread(self._store.delete, record.kid)
                except KeyNotFound:
                    pass  # already destroyed by an earlier, interrupted prune
            try:
                await self._repository.remove(record.kid)
                self._cache.clear()
            except KeyNotFound:
                pass  # pruned concurrently
            pruned.append(record.kid)
        return pruned
