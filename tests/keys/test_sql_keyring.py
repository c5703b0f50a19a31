"""SqlKeyRingRepository on SQLite and PostgreSQL, against the same contract as the in-memory
repository, and the rotation timeline on top of it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from keys_testlib import FakeClock
from sqlalchemy import text

from healthid.keys.base import KeyNotFound, KeyStoreError
from healthid.keys.file import FileKeyStore
from healthid.keys.rotation import (
    PUBLISH_LEAD,
    DuplicateKey,
    InMemoryKeyRingRepository,
    KeyRecord,
    KeyRing,
    KeyRingRepository,
)
from healthid.store.sql.engine import create_engine, upgrade
from healthid.store.sql.keyring import SqlKeyRingRepository

KID_A = "A" * 43
KID_B = "B" * 43
KID_C = "C" * 43
JWK = {"kty": "EC", "crv": "P-256", "x": "x", "y": "y", "alg": "ES256", "use": "sig"}


def _record(
    kid: str,
    purpose: str = "federation",
    *,
    created_at: int = 100,
    activate_at: int = 100,
    retire_at: int | None = None,
    expires_at: int | None = None,
) -> KeyRecord:
    return KeyRecord(
        kid=kid,
        purpose=purpose,
        backend="pkcs11",
        public_jwk={**JWK, "kid": kid},
        created_at=created_at,
        activate_at=activate_at,
        retire_at=retire_at,
        expires_at=expires_at,
    )


async def _sql_repository(url: str) -> AsyncIterator[SqlKeyRingRepository]:
    engine = create_engine(url)
    try:
        await upgrade(engine)
        yield SqlKeyRingRepository(engine)
    finally:
        await engine.dispose()


@pytest.fixture
async def sqlite_repository(tmp_path: Path) -> AsyncIterator[SqlKeyRingRepository]:
    async for repository in _sql_repository(f"sqlite+aiosqlite:///{tmp_path / 'ring.sqlite3'}"):
        yield repository


@pytest.fixture
async def postgres_repository(pg_url: str) -> AsyncIterator[SqlKeyRingRepository]:
    async for repository in _sql_repository(pg_url):
        yield repository


@pytest.fixture
def memory_repository() -> InMemoryKeyRingRepository:
    return InMemoryKeyRingRepository()


@pytest.fixture(
    params=[
        "memory_repository",
        "sqlite_repository",
        pytest.param("postgres_repository", marks=pytest.mark.postgres),
    ]
)
def repository(request: pytest.FixtureRequest) -> KeyRingRepository:
    """The same contract for every implementation (sync, so the async fixtures are set up
    by pytest-asyncio on the test's loop)."""
    chosen: KeyRingRepository = request.getfixturevalue(request.param)
    return chosen


async def test_repository_round_trips_records(repository: KeyRingRepository) -> None:
    a = _record(KID_A)
    b = _record(KID_B, created_at=200, activate_at=300)
    await repository.add(b)
    await repository.add(a)
    await repository.add(_record(KID_C, purpose="id-token"))
    assert await repository.list("federation") == [a, b]  # oldest activation first
    assert [r.kid for r in await repository.list("id-token")] == [KID_C]
    assert await repository.list("other") == []


async def test_repository_refuses_duplicate_kid(repository: KeyRingRepository) -> None:
    await repository.add(_record(KID_A))
    with pytest.raises(DuplicateKey):
        await repository.add(_record(KID_A, purpose="id-token"))


async def test_repository_update_changes_the_schedule_only(
    repository: KeyRingRepository,
) -> None:
    a = _record(KID_A)
    await repository.add(a)
    changed = KeyRecord(
        kid=KID_A,
        purpose="federation",
        backend="file",  # not a schedule field: ignored
        public_jwk={"kid": KID_A},  # not a schedule field: ignored
        created_at=50,  # not a schedule field: ignored
        activate_at=100,
        retire_at=500,
        expires_at=900,
    )
    await repository.update(changed)
    (stored,) = await repository.list("federation")
    assert (stored.retire_at, stored.expires_at) == (500, 900)
    assert (stored.backend, stored.created_at, dict(stored.public_jwk)) == (
        "pkcs11",
        100,
        {**JWK, "kid": KID_A},
    )


async def test_repository_update_refuses_unknown_or_other_purpose(
    repository: KeyRingRepository,
) -> None:
    await repository.add(_record(KID_A))
    with pytest.raises(KeyNotFound):
        await repository.update(_record(KID_B, retire_at=200, expires_at=300))
    with pytest.raises(KeyNotFound):
        await repository.update(_record(KID_A, purpose="id-token", retire_at=200))


async def test_repository_remove(repository: KeyRingRepository) -> None:
    await repository.add(_record(KID_A))
    await repository.add(_record(KID_B))
    await repository.remove(KID_A)
    assert [r.kid for r in await repository.list("federation")] == [KID_B]
    with pytest.raises(KeyNotFound):
        await repository.remove(KID_A)


async def test_rotation_timeline_on_repository(
    repository: KeyRingRepository, tmp_path: Path, clock: FakeClock
) -> None:
    store = FileKeyStore(tmp_path / "keys")
    ring = KeyRing(store=store, repository=repository, clock=clock, max_signed_lifetime=600)
    old = await ring.ensure("federation")
    assert old is not None
    new = await ring.rotate("federation")
    assert (await ring.active("federation")).kid == old.kid
    clock.advance(PUBLISH_LEAD)
    assert (await ring.active("federation")).kid == new.kid
    assert [r.kid for r in await ring.published("federation")] == [old.kid, new.kid]
    clock.advance(600)
    assert await ring.prune("federation") == [old.kid]
    assert [r.kid for r in await repository.list("federation")] == [new.kid]
    assert store.list_kids() == [new.kid]


async def test_sql_repository_refuses_corrupt_jwk(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'healthid.sqlite3'}")
    try:
        await upgrade(engine)
        repository = SqlKeyRingRepository(engine)
        await repository.add(_record(KID_A))
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE signing_keys SET public_jwk = '[1]'"))
        with pytest.raises(KeyStoreError, match="JSON object"):
            await repository.list("federation")
    finally:
        await engine.dispose()
