"""The policyholder repository: sealed bundles in, sealed bundles out (host side).

It stores what the enclave hands out (pseudonym, blind indexes, wrapped data key, AEAD records)
and can neither read nor produce plaintext.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from healthid.enclave.api import SealedPolicyholder, SealedRecord
from healthid.store.sql.schema import data_keys, lookup_indexes, policyholders, records

IN_CHUNK = 1000  # bound on the size of one IN (...) list


class PolicyholderRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    async def existing_kvnr_indexes(self, digests: Sequence[bytes]) -> set[bytes]:
        found: set[bytes] = set()
        async with self._engine.connect() as conn:
            for i in range(0, len(digests), IN_CHUNK):
                chunk = list(digests[i : i + IN_CHUNK])
                rows = await conn.execute(
                    select(policyholders.c.kvnr_index).where(policyholders.c.kvnr_index.in_(chunk))
                )
                found.update(bytes(r[0]) for r in rows)
        return found

    @staticmethod
    async def insert_batch(
        conn: AsyncConnection, batch: Sequence[SealedPolicyholder], now: int
    ) -> None:
        """Insert sealed policyholders inside the caller's transaction."""
        if not batch:
            return
        await conn.execute(
            policyholders.insert(),
            [
                {"pseudonym": p.pseudonym, "kvnr_index": p.kvnr_index, "created_at": now}
                for p in batch
            ],
        )
        await conn.execute(
            data_keys.insert(),
            [
                {
                    "pseudonym": p.pseudonym,
                    "root_key_id": p.root_key_id,
                    "wrapped_key": p.wrapped_key,
                    "created_at": now,
                }
                for p in batch
                if p.wrapped_key is not None
            ],
        )
        record_rows = [
            {
                "pseudonym": p.pseudonym,
                "record_type": r.record_type,
                "version": r.version,
                "ciphertext": r.ciphertext,
                "updated_at": now,
            }
            for p in batch
            for r in p.records
        ]
        if record_rows:
            await conn.execute(records.insert(), record_rows)
        index_rows = [
            {"kind": kind, "digest": digest, "pseudonym": p.pseudonym}
            for p in batch
            for kind, digest in p.lookup_indexes
        ]
        if index_rows:
            await conn.execute(lookup_indexes.insert(), index_rows)

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
                    data_keys.c.root_key_id,
                    data_keys.c.wrapped_key,
                )
                .select_from(policyholders.outerjoin(data_keys))
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
        async with self._engine.connect() as conn:
            found = await self._load(conn, [pseudonym])
        return found[0] if found else None

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

    async def count(self) -> int:
        async with self._engine.connect() as conn:
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
            result = await conn.execute(delete(data_keys).where(data_keys.c.pseudonym == pseudonym))
        return bool(result.rowcount)

    async def erase(self, pseudonym: str) -> bool:
        """Remove the policyholder entirely (key, records, indexes)."""
        async with self._engine.begin() as conn:
            await conn.execute(delete(data_keys).where(data_keys.c.pseudonym == pseudonym))
            result = await conn.execute(
                delete(policyholders).where(policyholders.c.pseudonym == pseudonym)
            )
        return bool(result.rowcount)
