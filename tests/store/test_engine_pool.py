"""The PostgreSQL pool keeps its size and opens no more (issue #7 item 8): under load, a
connection opened beyond the pool and closed on return would cost a connect per request on
both sides. A request that waits too long for a connection gets 503, not a 500."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
import sqlalchemy.exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient

from healthid.runtime import build_app
from healthid.settings import load_settings
from healthid.store.sql import engine as engine_module
from healthid.store.sql.engine import create_engine

pytestmark = pytest.mark.postgres


async def test_the_pool_never_opens_more_connections_than_its_size(pg_url: str) -> None:
    engine = create_engine(pg_url, pool_size=2)
    try:

        async def one() -> int:
            async with engine.connect() as conn:
                pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
                await asyncio.sleep(0.02)  # held a while: the others must wait, not connect
                return int(pid)

        backends = await asyncio.gather(*(one() for _ in range(12)))
        assert len(set(backends)) == 2
        assert engine.pool.checkedin() == 2  # kept open for the next requests
    finally:
        await engine.dispose()


async def test_a_request_that_finds_every_connection_busy_times_out(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "POOL_TIMEOUT_S", 0.2)
    engine = create_engine(pg_url, pool_size=1)
    try:
        held = await engine.connect()
        with pytest.raises(sqlalchemy.exc.TimeoutError):
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        await held.close()
        async with engine.connect() as conn:  # free again: served at once
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await engine.dispose()


def test_a_busy_pool_answers_503_temporarily_unavailable(tmp_path: Path, clean_env: None) -> None:
    async def busy(request: Request) -> Response:
        raise sqlalchemy.exc.TimeoutError("QueuePool limit of size 1 overflow 0 reached")

    app = build_app(load_settings(data_dir=tmp_path), extra_routes=[Route("/busy", busy)])
    with TestClient(app, raise_server_exceptions=False) as client:
        answer = client.get("/busy")
    assert answer.status_code == 503
    assert answer.json()["error"] == "temporarily_unavailable"
    assert int(answer.headers["retry-after"]) > 0
    assert "QueuePool" not in answer.text


async def test_driver_connections_come_back_to_the_pool_without_a_reset_error(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The hot paths' asyncpg connection is returned without an await (no transaction is
    begun on it through SQLAlchemy): nothing is logged, and the same connections serve the
    next statements, through asyncpg and through SQLAlchemy alike."""
    engine = create_engine(pg_url, pool_size=2)
    try:

        async def one() -> int:
            async with engine_module.driver_connection(engine) as pg:
                pid = await pg.fetchval("SELECT pg_backend_pid()")
                await asyncio.sleep(0.01)
                return int(pid)

        with caplog.at_level("DEBUG", logger="sqlalchemy.pool"):
            backends = set(await asyncio.gather(*(one() for _ in range(10))))
        assert len(backends) == 2
        assert engine.pool.checkedin() == 2  # type: ignore[attr-defined]
        assert not [r for r in caplog.records if r.levelname in ("ERROR", "WARNING")]
        async with engine.connect() as conn:  # SQLAlchemy draws the same connections
            pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        assert pid in backends
    finally:
        await engine.dispose()


@pytest.fixture
async def one_connection(pg_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine whose pool holds one connection: every checkout gets the same backend,
    unless that connection was replaced."""
    engine = create_engine(pg_url, pool_size=1)
    yield engine
    await engine.dispose()


async def backend_pid(engine: AsyncEngine) -> int:
    async with engine_module.driver_connection(engine) as pg:
        return int(await pg.fetchval("SELECT pg_backend_pid()"))


async def test_a_failed_statement_on_a_live_driver_connection_keeps_the_pool(
    one_connection: AsyncEngine,
) -> None:
    """An error of the statement (not of the connection) leaves the connection pooled."""
    first = await backend_pid(one_connection)
    with pytest.raises(Exception, match="division by zero"):
        async with engine_module.driver_connection(one_connection) as pg:
            await pg.fetchval("SELECT 1/0")
    assert await backend_pid(one_connection) == first


async def _terminate(pg_url: str, pid: int) -> None:
    """End a backend from another connection and wait until it is gone."""
    killer = await asyncpg.connect(pg_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        await killer.execute(f"SELECT pg_terminate_backend({int(pid)})")
        for _ in range(100):
            if not await killer.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid
            ):
                return
            await asyncio.sleep(0.02)
    finally:
        await killer.close()


async def test_a_driver_connection_that_died_invalidates_the_pool(pg_url: str) -> None:
    """A connection killed under a statement (as by a failover) fails that statement; the
    pool is invalidated, and the next checkout gets a new, working connection."""
    engine = create_engine(pg_url, pool_size=2)
    try:
        async with engine.connect() as a, engine.connect() as b:  # both pool connections
            pids = {
                (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
                for conn in (a, b)
            }
        assert len(pids) == 2
        with pytest.raises((asyncpg.PostgresConnectionError, asyncpg.InterfaceError)):
            async with engine_module.driver_connection(engine) as pg:
                victim = await pg.fetchval("SELECT pg_backend_pid()")
                await _terminate(pg_url, victim)
                await pg.fetchval("SELECT 1")
        # the victim's own connection is closed, and the pool-wide invalidation replaces the
        # other old connection at its next checkout too: no request fails on either
        seen = set()
        for _ in range(3):
            async with engine_module.driver_connection(engine) as pg:
                seen.add(await pg.fetchval("SELECT pg_backend_pid()"))
        assert victim in pids
        assert not seen & pids
    finally:
        await engine.dispose()


async def test_a_driver_transaction_commits_or_rolls_back_and_pools_the_connection(
    one_connection: AsyncEngine,
) -> None:
    engine = one_connection
    async with engine_module.driver_connection(engine) as pg:
        await pg.execute("CREATE TEMP TABLE driver_tx_test (n int)")  # this backend's own
    backend = await backend_pid(engine)
    async with engine_module.driver_connection(engine, transaction=True) as pg:
        assert pg.is_in_transaction()
        await pg.execute("INSERT INTO driver_tx_test VALUES (1)")
    with pytest.raises(RuntimeError, match="refused"):
        async with engine_module.driver_connection(engine, transaction=True) as pg:
            await pg.execute("INSERT INTO driver_tx_test VALUES (2)")
            raise RuntimeError("refused")
    async with engine_module.driver_connection(engine) as pg:
        assert await pg.fetchval("SELECT pg_backend_pid()") == backend  # pooled again
        assert not pg.is_in_transaction()
        assert [r[0] for r in await pg.fetch("SELECT n FROM driver_tx_test")] == [1]


async def test_a_driver_transaction_that_did_not_end_never_goes_back_to_the_pool(
    one_connection: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the rollback never happened (cancelled, cut off), the connection is closed, not
    pooled mid-transaction: the next request would otherwise run inside it, its writes
    lost with that transaction."""
    engine = one_connection
    backend = await backend_pid(engine)

    async def no_rollback(self: object, *exc: object) -> bool:
        return False  # the block's exception goes on; the transaction stays open

    monkeypatch.setattr(asyncpg.transaction.Transaction, "__aexit__", no_rollback)
    with pytest.raises(RuntimeError, match="refused"):
        async with engine_module.driver_connection(engine, transaction=True) as pg:
            await pg.execute("SELECT 1")
            raise RuntimeError("refused")
    monkeypatch.undo()
    async with engine_module.driver_connection(engine) as pg:
        assert not pg.is_in_transaction()
        assert await pg.fetchval("SELECT pg_backend_pid()") != backend
    assert engine.pool.checkedin() == 1  # type: ignore[attr-defined]


class _CountingGreenletSpawn:
    """engine_module.greenlet_spawn, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0
        self._real = engine_module.greenlet_spawn

    async def __call__(self, fn: Any, *args: Any) -> Any:
        self.calls += 1
        return await self._real(fn, *args)


async def _backend_gone(pg_url: str, pid: int) -> bool:
    watcher = await asyncpg.connect(pg_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        for _ in range(100):
            if not await watcher.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid
            ):
                return True
            await asyncio.sleep(0.02)
        return False
    finally:
        await watcher.close()


async def test_an_idle_connection_is_taken_without_a_greenlet(
    one_connection: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    spawn = _CountingGreenletSpawn()
    monkeypatch.setattr(engine_module, "greenlet_spawn", spawn)
    first = await backend_pid(one_connection)  # the pool connects: in a greenlet
    assert spawn.calls == 1
    for _ in range(5):
        assert await backend_pid(one_connection) == first
    assert spawn.calls == 1
    assert one_connection.pool.checkedin() == 1  # type: ignore[attr-defined]


async def test_a_connection_due_for_recycling_is_replaced_in_a_greenlet(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Taking an idle connection directly fails where the pool must reconnect (here: past
    its recycle time); that checkout goes the greenlet's way, the old backend is closed, and
    the pool still holds one connection."""
    monkeypatch.setattr(engine_module, "POOL_RECYCLE_S", 0.3)
    engine = create_engine(pg_url, pool_size=1)
    try:
        spawn = _CountingGreenletSpawn()
        monkeypatch.setattr(engine_module, "greenlet_spawn", spawn)
        first = await backend_pid(engine)
        await asyncio.sleep(0.5)
        calls = spawn.calls
        second = await backend_pid(engine)
        assert second != first
        assert spawn.calls == calls + 1  # the direct checkout gave way to the greenlet
        assert await _backend_gone(pg_url, first)
        assert engine.pool.checkedin() == 1  # type: ignore[attr-defined]
        assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        assert await backend_pid(engine) == second  # and is taken directly again
    finally:
        await engine.dispose()
