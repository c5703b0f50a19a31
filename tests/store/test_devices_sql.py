"""The device repository on SQLite and PostgreSQL: an enrolment is stored whole or not at all."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from healthid.store.sql.devices import DeviceRecord, DeviceRepository, HistoryEntry
from healthid.store.sql.engine import create_engine, upgrade
from healthid.store.sql.schema import devices, history

PSEUDONYM = "a" * 32


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(db_url)
    await upgrade(eng)
    yield eng
    await eng.dispose()


def device(device_id: str) -> DeviceRecord:
    return DeviceRecord(
        device_id=device_id,
        pseudonym=PSEUDONYM,
        key_class="software",
        attestation_format="healthid-software",
        public_key=b"\x04" * 65,
        sign_count=0,
        proofing_method="egk",
        proofed_at=1,
        created_at=1,
    )


async def counts(engine: AsyncEngine) -> tuple[int, int]:
    async with engine.connect() as conn:
        n_devices = (await conn.execute(select(func.count()).select_from(devices))).scalar_one()
        n_history = (await conn.execute(select(func.count()).select_from(history))).scalar_one()
    return int(n_devices), int(n_history)


async def test_the_device_and_its_history_events_are_stored_together(engine: AsyncEngine) -> None:
    repo = DeviceRepository(engine)
    entries = [HistoryEntry(event_id=f"e{i}", created_at=i, ciphertext=b"c") for i in range(3)]
    await repo.add(device("d" * 32), history_entries=entries)
    assert await counts(engine) == (1, 3)


async def test_a_failed_history_insert_leaves_no_device_behind(engine: AsyncEngine) -> None:
    repo = DeviceRepository(engine)
    twice = [HistoryEntry(event_id="same", created_at=1, ciphertext=b"c")] * 2  # a duplicate key
    with pytest.raises(IntegrityError):
        await repo.add(device("e" * 32), history_entries=twice)
    assert await counts(engine) == (0, 0)  # no half-stored enrolment
