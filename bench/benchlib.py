"""What every benchmark needs around its run: a scratch PostgreSQL database and, afterwards,
the removal of the run's Redis keys."""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass

import asyncpg

ADMIN_DSN = os.environ.get(
    "HEALTHID_TEST_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@dataclass(frozen=True)
class ScratchDatabase:
    name: str
    url: str  # for healthid (SQLAlchemy, asyncpg driver)
    dsn: str  # for asyncpg itself


async def create_database(tag: str) -> ScratchDatabase:
    """A new, empty database named ``healthid_<tag>_<random>`` on the admin DSN's server."""
    name = f"healthid_{tag}_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    server = ADMIN_DSN.rsplit("/", 1)[0]
    return ScratchDatabase(
        name=name,
        url=server.replace("postgresql://", "postgresql+asyncpg://", 1) + "/" + name,
        dsn=server + "/" + name,
    )


async def drop_database(name: str) -> None:
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def forget_keys(redis_url: str, prefix: str) -> None:
    """Delete every key under ``prefix`` (this run's) from the bench Redis database."""
    import redis.asyncio as redis

    client = redis.from_url(redis_url)
    try:
        async for key in client.scan_iter(match=f"{prefix}*", count=1000):
            await client.delete(key)
    finally:
        await client.aclose()


def _reference_work() -> int:
    counts: dict[str, int] = {}
    for i in range(200_000):
        key = f"k{i & 1023}"
        counts[key] = counts.get(key, 0) + i
    return len(counts)


def machine_speed_ms() -> float:
    """CPU milliseconds of a fixed piece of pure Python (dict and string work, as a request
    does), the best of three: printed beside CPU figures, because the same code measures 2-3x
    apart on this VM from one session to the next. Lower is faster."""
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        _reference_work()
        best = min(best, time.process_time() - start)
    return best * 1000
