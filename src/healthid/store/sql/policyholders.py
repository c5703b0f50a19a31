"""The policyholder repository: sealed bundles in, sealed bundles out (host side).

It stores what the enclave hands out (pseudonym, blind indexes, wrapped data key, AEAD records)
and can neither read nor produce plaintext.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from healthid.enclave.api import SealedPolicyholder, SealedRecord
from healthid.store.sql.engine import autocommit, driver_connection, is_postgresql
from healthid.store.sql.schema import lookup_indexes, policyholders, records

IN_CHUNK = 1000  # bound on the size of one IN (...) list
_TABLES = (policyholders, records, lookup_indexes)
_HEAD, _RECORD, _INDEX = 0, 1, 2
# The head row first (UNION ALL keeps branch order in practice; ORDER BY makes it certain).
_GET_ONE_SQL = (
    "SELECT 0 AS part, root_key_id AS name, 0 AS version, kvnr_index AS b1, wrapped_key AS b2"
    " FROM policyholders WHERE pseudonym = {p}"
    " UNION ALL SELECT 1, record_type, version, ciphertext, NULL FROM records"
    " WHERE pseudonym = {p}"
    " UNION ALL SELECT 2, kind, 0, digest, NULL FROM lookup_indexes WHERE pseudonym = {p}"
    " ORDER BY part"
)
_GET_ONE = text(_GET_ONE_SQL.format(p=":p"))
_GET_ONE_PG = _GET_ONE_SQL.format(p="$1")


class PolicyholderRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._reader = autocommit(engine)

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    async def existing_kvnr_indexes(
        self, digests: Sequence[bytes], *, conn: AsyncConnection | None = None
    ) -> set[bytes]:
        """Which of these KVNR blind indexes are stored (inside ``conn``'s transaction)."""
        if conn is None:
            async with self._engine.connect() as own:
                return await self.existing_kvnr_indexes(digests, conn=own)
        found: set[bytes] = set()
        for i in range(0, len(digests), IN_CHUNK):
            chunk = list(digests[i : i + IN_CHUNK])
            rows = await conn.execute(
                select(policyholders.c.kvnr_index).where(policyholders.c.kvnr_index.in_(chunk))
            )
            found.update(bytes(r[0]) for r in rows)
        return found

    @staticmethod
    def _rows(batch: Sequence[SealedPolicyholder], now: int) -> dict[str, list[tuple[object, ...]]]:
        """Rows per table, in each table's column order."""
        return {
            "policyholders": [
                (p.pseudonym, p.kvnr_index, p.root_key_id, p.wrapped_key, now) for p in batch
            ],
            "records": [
                (p.pseudonym, r.record_type, r.version, r.ciphertext, now)
                for p in batch
                for r in p.records
            ],
            "lookup_indexes": [
                (kind, digest, p.pseudonym) for p in batch for kind, digest in p.lookup_indexes
            ],
        }

    @classmethod
    async def insert_batch(
        cls, conn: AsyncConnection, batch: Sequence[SealedPolicyholder], now: int
    ) -> None:
        """Insert sealed policyholders inside the caller's transaction.

        PostgreSQL gets binary COPY (an order of magnitude faster than INSERT for bulk
        imports); SQLite gets executemany. Both run in the caller's transaction.
        """
        if not batch:
            return
        rows = cls._rows(batch, now)
        if conn.dialect.name == "postgresql":
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            for table in _TABLES:
                if rows[table.name]:
                    await driver.copy_records_to_table(  # type: ignore[union-attr]
                        table.name, records=rows[table.name], columns=table.c.keys()
                    )
            return
        for table in _TABLES:
            if rows[table.name]:
                keys = table.c.keys()
                await conn.execute(
                    table.insert(), [dict(zip(keys, r, strict=True)) for r in rows[table.name]]
                )

    async def _load(
        self, conn: AsyncConnection, pseudonyms: Sequence[str]
    ) -> list[SealedPolicyholder]:
        if not pseudonyms:
            return []
        heads = (
            await conn.execute(
                select(
                    policyholders.c.pseudonym,
                    policyholders.c.kvnr_index,
                    policyholders.c.root_key_id,
                    policyholders.c.wrapped_key,
                )
                .where(policyholders.c.pseudonym.in_(list(pseudonyms)))
                .order_by(policyholders.c.pseudonym)
            )
        ).all()
        recs: dict[str, list[SealedRecord]] = {}
        for row in await conn.execute(
            select(records).where(records.c.pseudonym.in_(list(pseudonyms)))
        ):
            recs.setdefault(row.pseudonym, []).append(
                SealedRecord(
                    record_type=row.record_type,
                    version=row.version,
                    ciphertext=bytes(row.ciphertext),
                )
            )
        idx: dict[str, list[tuple[str, bytes]]] = {}
        for row in await conn.execute(
            select(lookup_indexes).where(lookup_indexes.c.pseudonym.in_(list(pseudonyms)))
        ):
            idx.setdefault(row.pseudonym, []).append((row.kind, bytes(row.digest)))
        return [
            SealedPolicyholder(
                pseudonym=h.pseudonym,
                kvnr_index=bytes(h.kvnr_index),
                root_key_id=h.root_key_id or "",
                wrapped_key=bytes(h.wrapped_key) if h.wrapped_key is not None else None,
                records=tuple(recs.get(h.pseudonym, ())),
                lookup_indexes=tuple(sorted(idx.get(h.pseudonym, ()))),
            )
            for h in heads
        ]

    async def get(self, pseudonym: str) -> SealedPolicyholder | None:
        """One policyholder with records and indexes: one statement, one round trip (it runs
        for every ID token), read from one snapshot."""
        rows: Sequence[Any]
        if is_postgresql(self._engine):
            async with driver_connection(self._engine) as pg:
                rows = await pg.fetch(_GET_ONE_PG, pseudonym)
        else:
            async with self._reader.connect() as conn:
                rows = (await conn.execute(_GET_ONE, {"p": pseudonym})).all()
        if not rows or rows[0][0] != _HEAD:
            return None
        _, root_key_id, _, kvnr_index, wrapped_key = rows[0]
        return SealedPolicyholder(
            pseudonym=pseudonym,
            kvnr_index=bytes(kvnr_index),
            root_key_id=root_key_id or "",
            wrapped_key=bytes(wrapped_key) if wrapped_key is not None else None,
            records=tuple(
                SealedRecord(record_type=name, version=version, ciphertext=bytes(b1))
                for part, name, version, b1, _ in rows
                if part == _RECORD
            ),
            lookup_indexes=tuple(
                sorted((name, bytes(b1)) for part, name, _, b1, _ in rows if part == _INDEX)
            ),
        )

    async def find_by_kvnr_index(self, digest: bytes) -> SealedPolicyholder | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(policyholders.c.pseudonym).where(policyholders.c.kvnr_index == digest)
                )
            ).first()
            return (await self._load(conn, [row[0]]))[0] if row else None

    async def find_by_lookup(self, kind: str, digest: bytes) -> list[SealedPolicyholder]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(lookup_indexes.c.pseudonym).where(
                    lookup_indexes.c.kind == kind, lookup_indexes.c.digest == digest
                )
            )
            return await self._load(conn, [r[0] for r in rows])

    async def add_lookup_indexes(
        self, pseudonym: str, indexes: Sequence[tuple[str, bytes]]
    ) -> None:
        """Add blind indexes (e.g. an eID restricted-ID link) to a policyholder; idempotent."""
        async with self._engine.begin() as conn:
            existing = {
                (r.kind, bytes(r.digest))
                for r in await conn.execute(
                    select(lookup_indexes).where(lookup_indexes.c.pseudonym == pseudonym)
                )
            }
            rows = [
                {"kind": kind, "digest": digest, "pseudonym": pseudonym}
                for kind, digest in indexes
                if (kind, digest) not in existing
            ]
            if rows:
                await conn.execute(lookup_indexes.insert(), rows)

    async def count(self) -> int:
        async with self._reader.connect() as conn:
            return int(
                (await conn.execute(select(func.count()).select_from(policyholders))).scalar_one()
            )

    async def iter_all(self, batch_size: int = 1000) -> AsyncIterator[list[SealedPolicyholder]]:
        """Every policyholder, in pseudonym order, in batches (keyset pagination)."""
        last = ""
        while True:
            async with self._engine.connect() as conn:
                page = [
                    r[0]
                    for r in await conn.execute(
                        select(policyholders.c.pseudonym)
                        .where(policyholders.c.pseudonym > last)
                        .order_by(policyholders.c.pseudonym)
                        .limit(batch_size)
                    )
                ]
                if not page:
                    return
                yield await self._load(conn, page)
            last = page[-1]

    async def shred(self, pseudonym: str) -> bool:
        """Delete the wrapped data key: the records stay, undecryptable by anyone."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(policyholders)
                .where(policyholders.c.pseudonym == pseudonym)
                .values(wrapped_key=None, root_key_id=None)
            )
        return bool(result.rowcount)

    async def erase(self, pseudonym: str) -> bool:
        """Remove the policyholder entirely (key, records, indexes), in one transaction."""
        async with self._engine.begin() as conn:
            for child in (records, lookup_indexes):
                await conn.execute(delete(child).where(child.c.pseudonym == pseudonym))
            result = await conn.execute(
                delete(policyholders).where(policyholders.c.pseudonym == pseudonym)
            )
        return bool(result.rowcount)
