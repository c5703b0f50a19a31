"""The PostgreSQL pool keeps its size and opens no more (issue #7 item 8): under load, a
connection opened beyond the pool and closed on return would cost a connect per request on
both sides. A request that waits too long for a connection gets 503, not a 500."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import sqlalchemy.exc
from sqlalchemy import text
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
