"""healthid's engine across a failover, on a multi-host URL (issue #7 item 1).

* A pooled connection that died with the old primary fails the one request that draws it;
  the pool is then invalidated and every later request reaches the new primary — through
  SQLAlchemy and through the asyncpg connection the hot paths use (``driver_connection``).
* A data centre that is gone rarely refuses connections: its packets are dropped. asyncpg's
  own multi-host connect spends its single timeout on such a first host and never tries the
  next; the engine gives every host its own timeout (CONNECT_TIMEOUT_PER_HOST_S) and starts
  with the host that accepted it last.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import asyncpg
import pytest
from pg_pair import LOOPBACK, SUPERUSER, PgPair, pg_bin_dir, pg_pair, unanswered_port
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from healthid.store.sql import engine as sql_engine

pytestmark = pytest.mark.slow

PER_HOST = 0.5  # s: the tests' CONNECT_TIMEOUT_PER_HOST_S
POOLED = 5  # connections each engine holds when the primary dies
PATHS = ("sqlalchemy", "driver_connection")
REQUESTS = 6


@dataclass(frozen=True, kw_only=True)
class FailedOver:
    pair: PgPair
    loop: asyncio.AbstractEventLoop  # the engines' loop (asyncpg connections belong to one)
    engines: dict[str, AsyncEngine]  # opened, POOLED connections each, before the failover


async def _fill(engine: AsyncEngine) -> None:
    conns = [await engine.connect() for _ in range(POOLED)]
    for conn in conns:
        await conn.execute(text("SELECT 1"))
    for conn in conns:
        await conn.close()
    assert engine.pool.checkedin() == POOLED  # type: ignore[attr-defined]


async def _server_port(engine: AsyncEngine, path: str) -> int:
    if path == "sqlalchemy":
        async with engine.connect() as conn:
            return int((await conn.execute(text("SELECT inet_server_port()"))).scalar_one())
    async with sql_engine.driver_connection(engine) as pg:
        return int(await pg.fetchval("SELECT inet_server_port()"))


@pytest.fixture(scope="module")
def failed_over() -> Iterator[FailedOver]:
    """A pair after the failover, with engines opened before it and the old primary's port
    silent. Shared by the module's tests, which only read."""
    if pg_bin_dir() is None:
        if os.environ.get("HEALTHID_REQUIRE_SERVICES") == "1":
            pytest.fail("the PostgreSQL server binaries (initdb, pg_ctl) are required")
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) unavailable")
    with pg_pair() as pair:
        loop = asyncio.new_event_loop()
        engines = {path: sql_engine.create_engine(pair.url()) for path in PATHS}
        try:
            for engine in engines.values():
                loop.run_until_complete(_fill(engine))
            pair.stop_immediate(pair.primary)
            pair.promote(pair.standby)
            with unanswered_port(pair.primary.port):
                yield FailedOver(pair=pair, loop=loop, engines=engines)
        finally:
            for engine in engines.values():
                loop.run_until_complete(engine.dispose())
            loop.close()


@pytest.mark.parametrize("path", PATHS)
def test_dead_pooled_connections_fail_one_request_then_the_pool_reconnects(
    failed_over: FailedOver, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sql_engine, "CONNECT_TIMEOUT_PER_HOST_S", PER_HOST)
    engine = failed_over.engines[path]

    async def requests() -> list[int | str]:
        outcomes: list[int | str] = []
        for _ in range(REQUESTS):
            try:
                outcomes.append(await _server_port(engine, path))
            except Exception as exc:
                outcomes.append(type(exc).__name__)
        return outcomes

    outcomes = failed_over.loop.run_until_complete(requests())
    print(f"\n{path}: {POOLED} dead pooled connections, then {REQUESTS} requests: {outcomes}")
    assert isinstance(outcomes[0], str)  # the request that drew a dead connection
    assert outcomes[1:] == [failed_over.pair.standby.port] * (REQUESTS - 1)


def test_a_database_host_that_does_not_answer_is_skipped(
    failed_over: FailedOver, monkeypatch: pytest.MonkeyPatch
) -> None:
    pair = failed_over.pair
    monkeypatch.setattr(sql_engine, "CONNECT_TIMEOUT_PER_HOST_S", PER_HOST)

    async def two_connects() -> list[tuple[int, float]]:
        engine = sql_engine.create_engine(pair.url())
        found = []
        try:
            for _ in range(2):
                start = time.monotonic()
                port = await _server_port(engine, "sqlalchemy")
                found.append((port, time.monotonic() - start))
                await engine.dispose()  # the next request needs a new connection
        finally:
            await engine.dispose()
        return found

    (first, first_took), (second, second_took) = asyncio.run(two_connects())
    print(f"\npast the silent host: first connect {first_took:.3f} s, next {second_took:.3f} s")
    assert first == second == pair.standby.port  # the promoted standby, the writable one
    assert PER_HOST <= first_took < PER_HOST + 2.0  # the silent host cost one timeout
    assert second_took < PER_HOST  # then the host that accepted us is tried first


def test_asyncpg_alone_never_reaches_the_second_host(failed_over: FailedOver) -> None:
    """Why the engine does not leave this to asyncpg: its one timeout covers all hosts."""
    pair = failed_over.pair

    async def connect() -> None:
        conn = await asyncpg.connect(
            host=[LOOPBACK, LOOPBACK],
            port=[pair.primary.port, pair.standby.port],
            user=SUPERUSER,
            database="postgres",
            target_session_attrs="read-write",
            timeout=2 * PER_HOST,
        )
        await conn.close()

    with pytest.raises(TimeoutError):
        asyncio.run(connect())
