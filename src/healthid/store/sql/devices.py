"""Bound devices and the sealed history (host side: public keys, pseudonyms, ciphertext)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncEngine

from healthid.store.sql.engine import autocommit, driver_connection, is_postgresql
from healthid.store.sql.schema import devices, history, policyholders

MAX_HISTORY_EVENTS = 1000  # events returned per listing, newest first

# The login path's statements, built once (building and cache-keying a statement per call
# cost more than running it).
_GET_WITH_KEY = (
    select(devices, policyholders.c.root_key_id, policyholders.c.wrapped_key)
    .join(policyholders, policyholders.c.pseudonym == devices.c.pseudonym)
    .where(devices.c.device_id == bindparam("d"))
)
_ADVANCE = (
    update(devices)
    .where(
        devices.c.device_id == bindparam("d"),
        devices.c.sign_count < bindparam("n"),
        devices.c.revoked_at.is_(None),
    )
    .values(sign_count=bindparam("n"))
)
# gemSpec-independent: counter up (only while not revoked) and the sealed history event, as
# one statement; the INSERT happens only if the UPDATE matched.
_ADVANCE_AND_LOG_PG = (
    "WITH advanced AS ("
    " UPDATE devices SET sign_count = $2"
    " WHERE device_id = $1 AND sign_count < $2 AND revoked_at IS NULL"
    " RETURNING pseudonym)"
    " INSERT INTO history (pseudonym, event_id, created_at, ciphertext)"
    " SELECT pseudonym, $3, $4, $5 FROM advanced RETURNING event_id"
)
_LOG = insert(history).values(
    pseudonym=bindparam("p"),
    event_id=bindparam("e"),
    created_at=bindparam("t"),
    ciphertext=bindparam("c"),
)


@dataclass(frozen=True, kw_only=True)
class DeviceRecord:
    device_id: str
    pseudonym: str
    key_class: str
    attestation_format: str
    public_key: bytes
    sign_count: int
    proofing_method: str
    proofed_at: int
    created_at: int
    revoked_at: int | None = None
    binding: bytes | None = None  # the enclave's device binding (healthid.enclave.api)

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _record(row: RowMapping | dict[str, object]) -> DeviceRecord:
    values = dict(row)
    values["public_key"] = bytes(values["public_key"])
    if values.get("binding") is not None:
        values["binding"] = bytes(values["binding"])
    return DeviceRecord(**values)


@dataclass(frozen=True, kw_only=True)
class HistoryEntry:
    event_id: str
    created_at: int
    ciphertext: bytes


class DeviceRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._reader = autocommit(engine)

    async def add(
        self,
        device: DeviceRecord,
        *,
        revoke_others_at: int | None = None,
        history_entries: Sequence[HistoryEntry] = (),
    ) -> None:
        """Store a new device; with ``revoke_others_at`` revoke the owner's other devices, and
        record ``history_entries`` for the owner — all in one transaction (an enrolment is
        stored whole or not at all)."""
        async with self._engine.begin() as conn:
            if revoke_others_at is not None:
                await conn.execute(
                    update(devices)
                    .where(devices.c.pseudonym == device.pseudonym, devices.c.revoked_at.is_(None))
                    .values(revoked_at=revoke_others_at)
                )
            await conn.execute(insert(devices).values(**device.__dict__))
            if history_entries:
                await conn.execute(
                    insert(history),
                    [
                        {
                            "pseudonym": device.pseudonym,
                            "event_id": e.event_id,
                            "created_at": e.created_at,
                            "ciphertext": e.ciphertext,
                        }
                        for e in history_entries
                    ],
                )

    async def get(self, device_id: str) -> DeviceRecord | None:
        async with self._reader.connect() as conn:
            row = (
                (await conn.execute(select(devices).where(devices.c.device_id == device_id)))
                .mappings()
                .first()
            )
        return _record(row) if row else None

    async def list_for(self, pseudonym: str) -> list[DeviceRecord]:
        async with self._reader.connect() as conn:
            rows = (
                await conn.execute(
                    select(devices)
                    .where(devices.c.pseudonym == pseudonym)
                    .order_by(devices.c.created_at, devices.c.device_id)
                )
            ).mappings()
            return [_record(r) for r in rows]

    async def count_active(self, pseudonym: str) -> int:
        async with self._reader.connect() as conn:
            result = await conn.execute(
                select(func.count())
                .select_from(devices)
                .where(devices.c.pseudonym == pseudonym, devices.c.revoked_at.is_(None))
            )
            return int(result.scalar_one())

    async def revoke(self, device_id: str, pseudonym: str, now: int) -> bool:
        """Revoke one of ``pseudonym``'s devices; False if it is not theirs or already revoked."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(devices)
                .where(
                    devices.c.device_id == device_id,
                    devices.c.pseudonym == pseudonym,
                    devices.c.revoked_at.is_(None),
                )
                .values(revoked_at=now)
            )
        return bool(result.rowcount)

    async def get_with_key(
        self, device_id: str
    ) -> tuple[DeviceRecord, str | None, bytes | None] | None:
        """The device with its owner's wrapped data key (for sealing history), one query."""
        async with self._reader.connect() as conn:
            row = (await conn.execute(_GET_WITH_KEY, {"d": device_id})).mappings().first()
        if row is None:
            return None
        values = dict(row)
        root_key_id = values.pop("root_key_id")
        wrapped = values.pop("wrapped_key")
        return _record(values), root_key_id, None if wrapped is None else bytes(wrapped)

    async def advance_counter_and_log(
        self, device_id: str, new_count: int, pseudonym: str, entry: HistoryEntry | None
    ) -> bool:
        """:meth:`advance_counter` and, atomically with it, the login's history entry.

        PostgreSQL: one statement (a data-modifying CTE) in autocommit, one round trip.
        """
        if entry is not None and is_postgresql(self._engine):
            async with driver_connection(self._engine) as pg:
                row = await pg.fetchrow(
                    _ADVANCE_AND_LOG_PG,
                    device_id,
                    new_count,
                    entry.event_id,
                    entry.created_at,
                    entry.ciphertext,
                )
            return row is not None
        async with self._engine.begin() as conn:
            result = await conn.execute(_ADVANCE, {"d": device_id, "n": new_count})
            if not result.rowcount:
                return False
            if entry is not None:
                await conn.execute(
                    _LOG,
                    {
                        "p": pseudonym,
                        "e": entry.event_id,
                        "t": entry.created_at,
                        "c": entry.ciphertext,
                    },
                )
        return True

    async def advance_counter(self, device_id: str, new_count: int) -> bool:
        """Store a higher signature counter, atomically; False if it does not go up (replay)
        or the device is revoked."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(devices)
                .where(
                    devices.c.device_id == device_id,
                    devices.c.sign_count < new_count,
                    devices.c.revoked_at.is_(None),
                )
                .values(sign_count=new_count)
            )
        return bool(result.rowcount)

    async def add_history(self, pseudonym: str, entry: HistoryEntry) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(history).values(
                    pseudonym=pseudonym,
                    event_id=entry.event_id,
                    created_at=entry.created_at,
                    ciphertext=entry.ciphertext,
                )
            )

    async def list_history(self, pseudonym: str) -> list[HistoryEntry]:
        async with self._reader.connect() as conn:
            rows = await conn.execute(
                select(history.c.event_id, history.c.created_at, history.c.ciphertext)
                .where(history.c.pseudonym == pseudonym)
                .order_by(history.c.created_at.desc(), history.c.event_id)
                .limit(MAX_HISTORY_EVENTS)
            )
            return [
                HistoryEntry(
                    event_id=r.event_id, created_at=r.created_at, ciphertext=bytes(r.ciphertext)
                )
                for r in rows
            ]
