"""One racing process for the Redis multi-process tests (not a test module).

Usage: python _ephemeral_race_worker.py URL PREFIX KEY OPERATION INDEX
It connects, prints ``ready``, waits for a line on stdin, runs OPERATION once
(``consume`` or ``put_if_absent``) and prints ``result <repr>``.
"""

from __future__ import annotations

import asyncio
import sys

from healthid.store.ephemeral import RedisEphemeralStore

RACE_TTL_SECONDS = 60.0


async def main(url: str, prefix: str, key: str, operation: str, index: int) -> None:
    store = RedisEphemeralStore.from_url(url, prefix=prefix)
    try:
        await store.ping()
        print("ready", flush=True)
        sys.stdin.readline()
        result: object
        if operation == "consume":
            result = await store.consume(key)
        else:
            result = await store.put_if_absent(key, f"w{index}".encode(), RACE_TTL_SECONDS)
        print(f"result {result!r}", flush=True)
    finally:
        await store.aclose()


if __name__ == "__main__":
    url, prefix, key, operation, index = sys.argv[1:6]
    asyncio.run(main(url, prefix, key, operation, int(index)))
