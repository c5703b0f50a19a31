"""Shared fixtures: real PostgreSQL, Redis and SoftHSM2 where the machine has them.

With HEALTHID_REQUIRE_SERVICES=1 (CI) a missing service fails the test instead of skipping it.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REQUIRE_SERVICES = os.environ.get("HEALTHID_REQUIRE_SERVICES") == "1"
PG_ADMIN_URL = os.environ.get(
    "HEALTHID_TEST_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("HEALTHID_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
SOFTHSM_MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
)


def unavailable(what: str) -> None:
    """Skip, or fail when the run requires every service (CI)."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{what} is required (HEALTHID_REQUIRE_SERVICES=1) but unavailable")
    pytest.skip(f"{what} unavailable")


async def _pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards.

    A plain (sync) fixture, so that parametrised fixtures can request it by name.
    """
    name = f"healthid_t_{secrets.token_hex(6)}"
    try:
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    except (TimeoutError, OSError) as exc:
        unavailable(f"PostgreSQL at {PG_ADMIN_URL} ({exc})")
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each SQL test runs on the embedded SQLite file and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'healthid.sqlite3'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    """The Redis URL (database 15); the test's keys are removed afterwards by prefix."""
    import redis.asyncio as redis

    client = redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except (OSError, redis.ConnectionError) as exc:
        unavailable(f"Redis at {REDIS_URL} ({exc})")
    finally:
        await client.aclose()
    yield REDIS_URL


@pytest.fixture
async def redis_prefix(redis_url: str) -> AsyncIterator[str]:
    """A fresh key namespace in the test Redis; its keys are deleted afterwards."""
    import redis.asyncio as redis

    prefix = f"healthid-test-{secrets.token_hex(6)}:"
    yield prefix
    client = redis.from_url(redis_url)
    try:
        async for key in client.scan_iter(match=f"{prefix}*", count=500):
            await client.delete(key)
    finally:
        await client.aclose()


@dataclass(frozen=True, kw_only=True)
class SoftHsmToken:
    module: Path
    label: str
    pin: str
    so_pin: str
    conf: Path


@pytest.fixture
def softhsm_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SoftHsmToken]:
    """A new SoftHSM2 token in a private token directory, initialised with softhsm2-util."""
    util = shutil.which("softhsm2-util")
    module = next((Path(p) for p in SOFTHSM_MODULE_CANDIDATES if Path(p).exists()), None)
    if util is None or module is None:
        unavailable("SoftHSM2 (softhsm2-util and libsofthsm2.so)")
    tokens = tmp_path / "softhsm-tokens"
    tokens.mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))
    token = SoftHsmToken(module=module, label="healthid-test", pin="1234", so_pin="5678", conf=conf)
    subprocess.run(
        [
            util,
            "--init-token",
            "--free",
            "--label",
            token.label,
            "--pin",
            token.pin,
            "--so-pin",
            token.so_pin,
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "SOFTHSM2_CONF": str(conf)},
    )
    yield token


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No HEALTHID_* variable of the calling shell reaches the settings a test loads."""
    for name in list(os.environ):
        if name.startswith("HEALTHID_"):
            monkeypatch.delenv(name)


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Tests marked ``both_event_loops`` run on asyncio's event loop and on uvloop's (which
    the server runs on); every other test on asyncio's, as without this hook (once a hook
    exists, pytest-asyncio asks it for every test)."""
    if item.get_closest_marker("both_event_loops") is None:
        return {"asyncio": asyncio.new_event_loop}
    import uvloop

    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
