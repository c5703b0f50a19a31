"""Engine creation and schema migration (Alembic) for SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import MissingGreenlet
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import Pool, PoolProxiedConnection
from sqlalchemy.util import greenlet_spawn

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# PostgreSQL pool size per process; many workers share the server's connection limit.
POOL_SIZE = 16
# How long a request waits for a pooled connection before it fails (then 503).
POOL_TIMEOUT_S = 10.0
STATEMENT_TIMEOUT_MS = 30_000
POOL_RECYCLE_S = 1800
# Multi-host URLs: a host that has not accepted us within this is given up for the next one.
CONNECT_TIMEOUT_PER_HOST_S = 5.0


@asynccontextmanager
async def driver_connection(
    engine: AsyncEngine, *, transaction: bool = False
) -> AsyncIterator[Any]:
    """A pooled connection's own asyncpg connection, for the few statements on every login
    and token and for the audit log's batches (PostgreSQL only): SQLAlchemy's compilation and
    result processing cost about twice the statement. Without ``transaction`` each statement
    runs in autocommit; with it, the block is one transaction, committed when the block ends
    and rolled back when it raises. asyncpg's errors are not wrapped.

    The connection is taken from the pool as ``Engine.raw_connection`` takes it, without an
    ``AsyncConnection`` around it (a quarter of the cost of ``engine.connect()`` and
    ``get_raw_connection``). Its return needs no await: SQLAlchemy's reset on return rolls
    back only a transaction begun through SQLAlchemy, and none is begun on it. So a
    transaction of ours that did not end (its rollback cancelled or cut off) must not go back
    to the pool: that connection is closed instead, which ends the transaction on the
    server."""
    sync_engine = engine.sync_engine
    pooled = _idle_connection(sync_engine)
    if pooled is None:
        # may wait for a free connection or connect: SQLAlchemy's pool awaits inside a greenlet
        pooled = await greenlet_spawn(sync_engine.raw_connection)
    pooled_again = True  # returned to the pool at the end (not if invalidated)
    try:
        driver = pooled.driver_connection
        try:
            if transaction and driver is not None:
                async with driver.transaction():
                    yield driver
            else:
                yield driver
        except BaseException as exc:
            if driver is None:
                raise
            if driver.is_closed():
                if isinstance(exc, Exception):
                    # SQLAlchemy never sees asyncpg's own errors: a connection that died
                    # with its server (a failover) would go back to the pool and fail every
                    # later checkout. So do what SQLAlchemy does after any statement on a
                    # dead connection: close it and invalidate the whole pool (every
                    # connection opened before now is replaced at its next checkout).
                    await greenlet_spawn(_invalidate_pool, sync_engine.pool, pooled, exc)
            elif driver.is_in_transaction():
                # outside a greenlet SQLAlchemy terminates the connection at once (no await)
                # and returns its place in the pool; the server rolls the transaction back
                pooled.invalidate(exc)
                pooled_again = False
            raise
    finally:
        if pooled_again:
            pooled.close()


# When _idle_connection's checkout needs an await after all, SQLAlchemy closes the awaitable
# it had made (the new connection's connect) without awaiting it; that is no mistake to warn of.
warnings.filterwarnings(
    "ignore",
    message=r"coroutine '.*' was never awaited",
    category=RuntimeWarning,
    module=r"sqlalchemy\.util\.concurrency",
)


def _idle_connection(sync_engine: Engine) -> PoolProxiedConnection | None:
    """An idle pooled connection taken without a greenlet, or None.

    SQLAlchemy's pool hands out an idle connection without awaiting anything: the greenlet
    that :func:`greenlet_spawn` starts for the checkout (in case the pool must wait or
    connect) costs two thirds of it (25 µs against 8 on the development machine). So when the
    pool holds an idle connection, it is taken directly. If the checkout needs an await after
    all (the connection is due for recycling, or the pool was invalidated since it was
    opened: it is reconnected), SQLAlchemy refuses with ``MissingGreenlet`` before anything
    is handed out; the connection it had begun to replace goes back to the pool, closed, to
    be opened again at a later checkout, and the caller takes the greenlet's way."""
    checkedin = getattr(sync_engine.pool, "checkedin", None)
    if checkedin is None or not checkedin():
        return None
    try:
        return sync_engine.raw_connection()
    except MissingGreenlet:
        return None


def _invalidate_pool(pool: Pool, pooled: PoolProxiedConnection, exc: BaseException) -> None:
    # Pool._invalidate is what SQLAlchemy's own disconnect handling calls
    # (Connection._handle_dbapi_exception); there is no public pool-wide equivalent.
    pool._invalidate(pooled, exc)


def is_postgresql(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "postgresql"


def autocommit(engine: AsyncEngine) -> AsyncEngine:
    """The same engine (and pool) for single-statement reads and writes: no BEGIN/ROLLBACK
    round trips around a statement that is atomic by itself."""
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def _sqlite_pragmas(dbapi_conn: object, _record: object) -> None:
    cur = dbapi_conn.cursor()  # type: ignore[attr-defined]
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


def _each_host_in_turn(
    hosts: list[tuple[str, int]], connect_args: dict[str, Any]
) -> Callable[[], Awaitable[Any]]:
    """Connect to the hosts of a multi-host URL one after another, each with its own
    CONNECT_TIMEOUT_PER_HOST_S, starting with the one that accepted us last.

    asyncpg's own multi-host connect shares one timeout (default 60 s) among all hosts: a
    first host whose packets are dropped (its data centre gone) uses it up, and the other
    hosts are never tried. A host is skipped where asyncpg would skip it: unreachable, starting
    or stopping, or not matching ``target_session_attrs`` (a standby, for read-write)."""
    import asyncpg  # type: ignore[import-untyped]

    skip = (
        OSError,
        TimeoutError,
        asyncpg.CannotConnectNowError,
        asyncpg.TargetServerAttributeNotMatched,
    )
    accepted_last = 0

    async def connect() -> Any:
        nonlocal accepted_last
        failure: BaseException = ConnectionError("no database host")
        for i in range(len(hosts)):
            index = (accepted_last + i) % len(hosts)
            host, port = hosts[index]
            try:
                conn = await asyncpg.connect(
                    host=host, port=port, timeout=CONNECT_TIMEOUT_PER_HOST_S, **connect_args
                )
            except skip as exc:
                failure = exc
                continue
            accepted_last = index
            return conn
        raise failure

    return connect


def create_engine(url: str, *, pool_size: int = POOL_SIZE) -> AsyncEngine:
    """An async engine for ``url`` (``sqlite+aiosqlite://`` or ``postgresql+asyncpg://``).

    Several PostgreSQL servers (a primary and its standbys), of which only the writable one is
    used: ``postgresql+asyncpg://user@/db?host=h1:5432&host=h2:5432&target_session_attrs=
    read-write`` (SQLAlchemy's multi-host form; libpq's ``h1:5432,h2:5432`` is not parsed).

    The pool keeps ``pool_size`` connections and opens no more: under load, connections
    opened beyond it and closed again on return cost a connect (TLS attempt, authentication,
    statement preparation) per request, on both sides.
    """
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    connect_args: dict[str, Any] = {
        "server_settings": {"statement_timeout": str(STATEMENT_TIMEOUT_MS)}
    }
    connect: dict[str, Any] = {"connect_args": connect_args}
    _, opts = PGDialect_asyncpg().create_connect_args(make_url(url))  # type: ignore[no-untyped-call]
    if isinstance(opts.get("host"), list):  # several hosts: each gets its own timeout
        hosts = list(zip(opts.pop("host"), opts.pop("port"), strict=True))
        connect = {"async_creator": _each_host_in_turn(hosts, {**opts, **connect_args})}
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=POOL_TIMEOUT_S,
        # No pre-ping (a round trip per checkout): a connection that died with the server
        # fails its request once, and SQLAlchemy then invalidates the whole pool.
        pool_recycle=POOL_RECYCLE_S,
        **connect,
    )


def _alembic_config(connection: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Apply the Alembic migrations up to ``revision`` (idempotent)."""

    def run(connection: Connection) -> None:
        command.upgrade(_alembic_config(connection), revision)

    async with engine.begin() as conn:
        await conn.run_sync(run)


async def current_revision(engine: AsyncEngine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    def run(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with engine.connect() as conn:
        return await conn.run_sync(run)


def upgrade_url(url: str, revision: str = "head") -> None:
    """Blocking helper for the CLI: migrate the database at ``url``."""

    async def go() -> None:
        engine = create_engine(url)
        try:
            await upgrade(engine, revision)
        finally:
            await engine.dispose()

    asyncio.run(go())
