"""Benchmark: import synthetic policyholders into PostgreSQL through the enclave vault.

    .venv/bin/python bench/registry_import.py [--count 100000] [--database-url URL]

Prints rows/s and peak memory (RSS) and compares them with the target of issue #2:
at least 5,000 rows/s on a two-core machine. Uses a fresh, temporary database.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import resource
import sys
import time
from datetime import date

from benchlib import create_database, drop_database
from healthid.demo.synthetic import write_registry
from healthid.enclave.service import Enclave
from healthid.enclave.vault import RootKey, Vault
from healthid.host.registry_import import import_registry
from healthid.store.sql.engine import create_engine, upgrade
from healthid.store.sql.policyholders import PolicyholderRepository

TARGET_ROWS_PER_S = 5_000


def peak_rss_mib(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


async def main(count: int, url: str | None) -> int:
    buf = io.StringIO()
    write_registry(buf, count, fmt="csv", seed=1)
    data = buf.getvalue().encode()
    name = None
    if url is None:
        database = await create_database("bench")
        name, url = database.name, database.url
    engine = create_engine(url)
    try:
        await upgrade(engine)
        root = RootKey.from_secret(os.urandom(32))
        enclave = Enclave(
            Vault(root), root=root, workers=os.cpu_count() or 1, today=lambda: date(2026, 11, 28)
        )
        repo = PolicyholderRepository(engine)
        rss_before = peak_rss_mib()
        start = time.perf_counter()
        result = await import_registry(enclave, repo, data, filename="bench.csv")
        elapsed = time.perf_counter() - start
        assert result.ok, result.errors[:5]
        stored = await repo.count()
    finally:
        enclave.close()
        await engine.dispose()
        if name:
            await drop_database(name)
    rate = count / elapsed
    print(f"registry import into PostgreSQL: {count} rows ({len(data) / 1e6:.1f} MB CSV)")
    print(f"  time          {elapsed:8.2f} s")
    print(
        f"  rate          {rate:8.0f} rows/s   (target >= {TARGET_ROWS_PER_S}: "
        f"{'MET' if rate >= TARGET_ROWS_PER_S else 'MISSED'})"
    )
    print(f"  peak RSS      {peak_rss_mib():8.0f} MiB host (before: {rss_before:.0f} MiB)")
    print(
        f"  peak RSS      {peak_rss_mib(resource.RUSAGE_CHILDREN):8.0f} MiB largest enclave worker"
    )
    print(f"  stored rows   {stored}")
    return 0 if rate >= TARGET_ROWS_PER_S and stored == count else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--database-url", default=None, help="default: a temporary database")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.count, args.database_url)))
