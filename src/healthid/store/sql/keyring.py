"""``KeyRingRepository`` on the ``signing_keys`` table (public halves and schedules only)."""

from __future__ import annotations

import builtins
import json
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from healthid.keys.base import KeyNotFound, KeyStoreError
from healthid.keys.rotation import DuplicateKey, KeyRecord
from healthid.store.sql.engine import autocommit
from healthid.store.sql.schema import signing_keys


def _jwk_text(record: KeyRecord) -> str:
    return json.dumps(dict(record.public_jwk), separators=(",", ":"), sort_keys=True)


def _jwk_from_text(kid: str, text: str) -> dict[str, str]:
    try:
        value: Any = json.loads(text)
    except ValueError as exc:
        raise KeyStoreError(f"stored public JWK of {kid} is not JSON") from exc
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise KeyStoreError(f"stored public JWK of {kid} is not a JSON object of strings")
    return value


def _record(row: Any) -> KeyRecord:
    try:
        return KeyRecord(
            kid=row.kid,
            purpose=row.purpose,
            backend=row.backend,
            public_jwk=_jwk_from_text(row.kid, row.public_jwk),
            created_at=row.created_at,
            activate_at=row.activate_at,
            retire_at=row.retire_at,
            expires_at=row.expires_at,
        )
    except (ValueError, KeyNotFound) as exc:  # KeyNotFound: a malformed kid
        raise KeyStoreError(f"stored key record {row.kid} is inconsistent: {exc}") from exc


class SqlKeyRingRepository:
    """The key ring in SQL (SQLite or PostgreSQL). ``update`` changes the schedule only."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._reader = autocommit(engine)

    async def add(self, record: KeyRecord) -> None:
        statement = insert(signing_keys).values(
            kid=record.kid,
            purpose=record.purpose,
            backend=record.backend,
            public_jwk=_jwk_text(record),
            created_at=record.created_at,
            activate_at=record.activate_at,
            retire_at=record.retire_at,
            expires_at=record.expires_at,
        )
        try:
            async with self._engine.begin() as conn:
                await conn.execute(statement)
        except IntegrityError as exc:
            raise DuplicateKey(f"key {record.kid} is already in the ring") from exc

    async def list(self, purpose: str) -> builtins.list[KeyRecord]:
        statement = (
            select(signing_keys)
            .where(signing_keys.c.purpose == purpose)
            .order_by(signing_keys.c.activate_at, signing_keys.c.created_at, signing_keys.c.kid)
        )
        async with self._reader.connect() as conn:
            rows = (await conn.execute(statement)).all()
        return [_record(row) for row in rows]

    async def update(self, record: KeyRecord) -> None:
        statement = (
            update(signing_keys)
            .where(signing_keys.c.kid == record.kid, signing_keys.c.purpose == record.purpose)
            .values(
                activate_at=record.activate_at,
                retire_at=record.retire_at,
                expires_at=record.expires_at,
            )
        )
        async with self._engine.begin() as conn:
            result = await conn.execute(statement)
        if result.rowcount == 0:
            raise KeyNotFound(f"no key {record.kid} for purpose {record.purpose}")

    async def remove(self, kid: str) -> None:
        async with self._engine.begin() as conn:
            result = await conn.execute(delete(signing_keys).where(signing_keys.c.kid == kid))
        if result.rowcount == 0:
            raise KeyNotFound(f"no key {kid}")
