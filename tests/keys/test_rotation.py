"""Key rotation: the next key is published before it signs; the old one stays published until
everything it signed has expired, then it is pruned from the ring and the store."""

from __future__ import annotations

from pathlib import Path

import pytest
from keys_testlib import FakeClock, verify_es256

from healthid.keys.base import KeyInfo
from healthid.keys.file import FileKeyStore
from healthid.keys.rotation import (
    FEDERATION_CACHE_MAX,
    PUBLISH_LEAD,
    DuplicateKey,
    InMemoryKeyRingRepository,
    KeyRecord,
    KeyRing,
    NoActiveKey,
    RotationPending,
    active_key,
    plan_rotation,
    published_keys,
)

LIFETIME = 24 * 60 * 60  # longest lifetime of anything signed (e.g. an entity statement)
PURPOSE = "federation"
KID_A = "A" * 43
KID_B = "B" * 43


def _record(
    kid: str,
    *,
    created_at: int = 0,
    activate_at: int = 0,
    retire_at: int | None = None,
    expires_at: int | None = None,
) -> KeyRecord:
    return KeyRecord(
        kid=kid,
        purpose=PURPOSE,
        backend="file",
        public_jwk={"kty": "EC", "kid": kid},
        created_at=created_at,
        activate_at=activate_at,
        retire_at=retire_at,
        expires_at=expires_at,
    )


@pytest.fixture
def store(tmp_path: Path) -> FileKeyStore:
    return FileKeyStore(tmp_path / "keys")


@pytest.fixture
def repository() -> InMemoryKeyRingRepository:
    return InMemoryKeyRingRepository()


@pytest.fixture
def ring(store: FileKeyStore, repository: InMemoryKeyRingRepository, clock: FakeClock) -> KeyRing:
    return KeyRing(store=store, repository=repository, clock=clock, max_signed_lifetime=LIFETIME)


def test_publish_lead_exceeds_federation_cache_time() -> None:
    assert PUBLISH_LEAD > FEDERATION_CACHE_MAX >= 2 * 60 * 60


async def test_first_key_is_active_immediately(ring: KeyRing, clock: FakeClock) -> None:
    first = await ring.ensure(PURPOSE)
    assert first is not None
    assert first.created_at == first.activate_at == clock.now
    assert (await ring.active(PURPOSE)).kid == first.kid
    assert await ring.ensure(PURPOSE) is None  # idempotent


async def test_rotation_timeline(
    ring: KeyRing, store: FileKeyStore, repository: InMemoryKeyRingRepository, clock: FakeClock
) -> None:
    old = await ring.ensure(PURPOSE)
    assert old is not None
    clock.advance(3600)
    rotated_at = clock.now
    new = await ring.rotate(PURPOSE)
    switch_at = rotated_at + PUBLISH_LEAD
    assert new.created_at == rotated_at
    assert new.activate_at == switch_at

    # Published at once, but the old key keeps signing until the switch.
    assert [r.kid for r in await ring.published(PURPOSE)] == [old.kid, new.kid]
    clock.now = switch_at - 1
    kid, signature = await ring.sign(PURPOSE, b"statement")
    assert kid == old.kid
    assert verify_es256(dict(old.public_jwk), b"statement", signature)

    # At the switch the new key signs; the old one is retired but still published.
    clock.now = switch_at
    kid, signature = await ring.sign(PURPOSE, b"statement")
    assert kid == new.kid
    assert verify_es256(dict(new.public_jwk), b"statement", signature)
    retired = next(r for r in await repository.list(PURPOSE) if r.kid == old.kid)
    assert retired.retire_at == switch_at
    assert retired.expires_at == switch_at + LIFETIME
    jwks = await ring.jwks(PURPOSE)
    assert [k["kid"] for k in jwks["keys"]] == [old.kid, new.kid]

    # Until everything it signed has expired, it is neither unpublished nor pruned.
    clock.now = switch_at + LIFETIME - 1
    assert old.kid in [r.kid for r in await ring.published(PURPOSE)]
    assert await ring.prune(PURPOSE) == []
    assert old.kid in store.list_kids()

    # Then it leaves the JWKS, the ring and the key store.
    clock.now = switch_at + LIFETIME
    assert [r.kid for r in await ring.published(PURPOSE)] == [new.kid]
    assert await ring.prune(PURPOSE) == [old.kid]
    assert [r.kid for r in await repository.list(PURPOSE)] == [new.kid]
    assert store.list_kids() == [new.kid]
    assert await ring.prune(PURPOSE) == []


async def test_rotation_honours_a_custom_publish_lead(
    store: FileKeyStore, repository: InMemoryKeyRingRepository, clock: FakeClock
) -> None:
    ring = KeyRing(
        store=store,
        repository=repository,
        clock=clock,
        max_signed_lifetime=LIFETIME,
        publish_lead=10,
    )
    await ring.ensure(PURPOSE)
    new = await ring.rotate(PURPOSE)
    assert new.activate_at == clock.now + 10


async def test_rotate_refuses_while_next_key_is_pending(ring: KeyRing, clock: FakeClock) -> None:
    await ring.ensure(PURPOSE)
    await ring.rotate(PURPOSE)
    with pytest.raises(RotationPending):
        await ring.rotate(PURPOSE)
    clock.advance(PUBLISH_LEAD)
    await ring.rotate(PURPOSE)  # the pending key is active now; the next rotation may start


async def test_rotate_on_empty_purpose_creates_the_first_key(ring: KeyRing) -> None:
    first = await ring.rotate(PURPOSE)
    assert (await ring.active(PURPOSE)).kid == first.kid


async def test_signing_without_any_key_is_refused(ring: KeyRing) -> None:
    with pytest.raises(NoActiveKey, match="no signing key"):
        await ring.sign(PURPOSE, b"x")


async def test_signing_does_not_fall_back_to_a_retired_key(
    ring: KeyRing, repository: InMemoryKeyRingRepository, clock: FakeClock
) -> None:
    await ring.ensure(PURPOSE)
    new = await ring.rotate(PURPOSE)
    await repository.remove(new.kid)  # the successor vanished
    clock.advance(PUBLISH_LEAD)
    with pytest.raises(NoActiveKey, match="not yet activated or already retired"):
        await ring.sign(PURPOSE, b"x")


def test_active_key_does_not_fall_back_to_a_key_not_yet_active() -> None:
    with pytest.raises(NoActiveKey):
        active_key([_record(KID_A, created_at=0, activate_at=100)], now=50)


def test_active_key_is_the_latest_activated() -> None:
    old = _record(KID_A, activate_at=0)
    new = _record(KID_B, activate_at=10)
    assert active_key([new, old], now=10).kid == KID_B
    assert active_key([new, old], now=9).kid == KID_A


def test_published_keys_exclude_future_and_expired_keys() -> None:
    future = _record(KID_A, created_at=100, activate_at=100)
    expired = _record(KID_B, retire_at=10, expires_at=20)
    assert published_keys([future, expired], now=19) == [expired]
    assert published_keys([future, expired], now=20) == []
    assert published_keys([future, expired], now=100) == [future]


def test_plan_rotation_is_pure() -> None:
    current = _record(KID_A)
    info = KeyInfo(kid=KID_B, purpose=PURPOSE, backend="file", public_jwk={"kid": KID_B})
    successor, retiring = plan_rotation(
        info=info, current=current, now=1000, publish_lead=50, max_signed_lifetime=7
    )
    assert (successor.created_at, successor.activate_at, successor.retire_at) == (1000, 1050, None)
    assert (retiring.retire_at, retiring.expires_at) == (1050, 1057)
    assert current.retire_at is None


@pytest.mark.parametrize(
    ("times", "message"),
    [
        ({"created_at": 10, "activate_at": 5}, "activate before"),
        ({"activate_at": 10, "retire_at": 5}, "retire before"),
        ({"retire_at": 10, "expires_at": 5}, "expire before"),
        ({"expires_at": 5}, "never retires"),
    ],
)
def test_key_record_rejects_inconsistent_schedules(times: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _record(KID_A, **times)


def test_key_record_rejects_jwk_of_another_kid() -> None:
    with pytest.raises(ValueError, match="kid"):
        KeyRecord(
            kid=KID_A,
            purpose=PURPOSE,
            backend="file",
            public_jwk={"kid": KID_B},
            created_at=0,
            activate_at=0,
        )


def test_key_ring_rejects_nonpositive_signed_lifetime(
    store: FileKeyStore, repository: InMemoryKeyRingRepository, clock: FakeClock
) -> None:
    with pytest.raises(ValueError, match="max_signed_lifetime"):
        KeyRing(store=store, repository=repository, clock=clock, max_signed_lifetime=0)


async def test_purposes_rotate_independently(ring: KeyRing) -> None:
    fed = await ring.ensure("federation")
    idt = await ring.ensure("id-token")
    assert fed is not None and idt is not None
    await ring.rotate("federation")
    assert (await ring.active("id-token")).kid == idt.kid
    assert [r.kid for r in await ring.published("id-token")] == [idt.kid]


class _FailingRepository(InMemoryKeyRingRepository):
    async def add(self, record: KeyRecord) -> None:
        raise DuplicateKey("simulated")


async def test_key_is_destroyed_when_it_cannot_be_recorded(
    store: FileKeyStore, clock: FakeClock
) -> None:
    ring = KeyRing(
        store=store, repository=_FailingRepository(), clock=clock, max_signed_lifetime=LIFETIME
    )
    with pytest.raises(DuplicateKey):
        await ring.ensure(PURPOSE)
    assert store.list_kids() == []


async def test_a_cached_ring_still_switches_to_the_next_key_on_time(
    store: FileKeyStore, repository: InMemoryKeyRingRepository, clock: FakeClock
) -> None:
    """A worker that cached the ring (short, below the publish lead) signs with the next key
    exactly at its activation time, and sees a rotation by another process within the cache
    time at the latest."""
    worker = KeyRing(
        store=store,
        repository=repository,
        clock=clock,
        max_signed_lifetime=LIFETIME,
        cache_seconds=3600,
    )
    other = KeyRing(store=store, repository=repository, clock=clock, max_signed_lifetime=LIFETIME)
    old = await other.ensure(PURPOSE)
    assert old is not None and (await worker.active(PURPOSE)).kid == old.kid
    new = await other.rotate(PURPOSE)  # another process: the worker's cache is now stale
    await repository.remove(old.kid)  # (a key removed by hand, to show the cache is used)
    assert (await worker.active(PURPOSE)).kid == old.kid  # served from the cache
    worker._cache.clear()  # the cache time has passed
    clock.now = new.activate_at - 1
    with pytest.raises(NoActiveKey):
        await worker.active(PURPOSE)  # only the next key is left, and it is not active yet
    clock.now = new.activate_at
    assert (await worker.active(PURPOSE)).kid == new.kid  # on time, from the cached ring


def test_ring_cache_must_stay_below_the_publish_lead(
    store: FileKeyStore, repository: InMemoryKeyRingRepository, clock: FakeClock
) -> None:
    with pytest.raises(ValueError, match="cache_seconds"):
        KeyRing(
            store=store,
            repository=repository,
            clock=clock,
            max_signed_lifetime=LIFETIME,
            publish_lead=10,
            cache_seconds=10,
        )
