"""What synchronous replication costs in availability (deploy/postgres/README.md): while the
only synchronous standby is gone the primary commits nothing — the COMMIT waits, and
statement_timeout does not end the wait (PostgreSQL disables it before the commit) — and
the waiting commit completes, replicated, once the standby is back."""

from __future__ import annotations

import asyncio
import os
import time

import asyncpg
import pytest
from pg_pair import DATABASE, LOOPBACK, SUPERUSER, SYNC_TIMEOUT, pg_bin_dir, pg_pair

pytestmark = pytest.mark.slow

STATEMENT_TIMEOUT_MS = 500
BLOCKED_FOR = 2.0  # s we watch the COMMIT wait (4x the statement timeout)


def test_commits_wait_while_the_synchronous_standby_is_gone() -> None:
    if pg_bin_dir() is None:
        if os.environ.get("HEALTHID_REQUIRE_SERVICES") == "1":
            pytest.fail("the PostgreSQL server binaries (initdb, pg_ctl) are required")
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) unavailable")
    with pg_pair() as pair:
        pair.query(pair.primary, "CREATE TABLE t (x int)", database=DATABASE)

        async def scenario() -> None:
            conn = await asyncpg.connect(
                host=LOOPBACK,
                port=pair.primary.port,
                user=SUPERUSER,
                database=DATABASE,
                server_settings={"statement_timeout": str(STATEMENT_TIMEOUT_MS)},
            )
            try:
                await asyncio.to_thread(pair.stop_fast, pair.standby)
                insert = asyncio.ensure_future(conn.execute("INSERT INTO t VALUES (1)"))
                done, _ = await asyncio.wait({insert}, timeout=BLOCKED_FOR)
                assert not done, "the primary committed without its synchronous standby"
                await asyncio.to_thread(pair.start_node, pair.standby)
                assert await asyncio.wait_for(insert, SYNC_TIMEOUT) == "INSERT 0 1"
            finally:
                await conn.close(timeout=5)

        asyncio.run(scenario())
        # flushed on the standby before it was acknowledged (synchronous_commit = on);
        # replayed, and so visible there, a moment later (remote_apply would wait for that)
        deadline = time.monotonic() + SYNC_TIMEOUT
        while pair.query(pair.standby, "SELECT count(*) FROM t", database=DATABASE)[0][0] != 1:
            assert time.monotonic() < deadline, "the standby never showed the commit"
            time.sleep(0.05)
