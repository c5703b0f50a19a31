"""The Redis store over TLS (``rediss://``), as between data centres: the lanes take over the
TLS transport after redis-py's handshake like a plain one. A TLS-terminating proxy in front of
the test Redis stands in for a TLS-enabled server; its certificate is made for the test."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from healthid.store.ephemeral import EphemeralStoreUnavailable, RedisEphemeralStore
from tls_testlib import self_signed

# the TLS transports of the two loops are different code; the server runs on uvloop
pytestmark = [pytest.mark.redis, pytest.mark.both_event_loops]

LONG_TTL = 60.0


class TlsProxy:
    """Accepts TLS on a loopback port and pipes each connection to the test Redis."""

    def __init__(self, redis_url: str, cert: Path, key: Path) -> None:
        target = urlsplit(redis_url)
        self.target = (target.hostname or "127.0.0.1", target.port or 6379)
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        self.writers: list[asyncio.StreamWriter] = []
        self.connections = 0
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.context)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        self.writers += [writer, upstream_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    def cut(self) -> None:
        """End every proxied connection (as a failing link would)."""
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()

    async def aclose(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def tls_store(
    redis_url: str, redis_prefix: str, tmp_path: Path
) -> AsyncIterator[tuple[RedisEphemeralStore, TlsProxy]]:
    cert, key = self_signed(tmp_path, "redis-test", hosts=("localhost", "127.0.0.1"))
    proxy = TlsProxy(redis_url, cert, key)
    port = await proxy.start()
    database = urlsplit(redis_url).path or "/0"
    store = RedisEphemeralStore.from_url(
        f"rediss://localhost:{port}{database}?ssl_ca_certs={cert}", prefix=redis_prefix
    )
    yield store, proxy
    await store.aclose()
    await proxy.aclose()


async def test_the_store_works_over_tls(
    tls_store: tuple[RedisEphemeralStore, TlsProxy],
) -> None:
    store, proxy = tls_store
    await store.put("k", b"v" * 5000, LONG_TTL)  # more than one TLS record
    assert await store.get("k") == b"v" * 5000
    assert await store.incr("n", LONG_TTL) == 1  # a script
    values = await asyncio.gather(*(store.get_many(["k", "n"]) for _ in range(20)))
    assert values == [[b"v" * 5000, b"1"]] * 20  # pipelined, in order
    assert proxy.connections >= 1


async def test_a_cut_tls_link_fails_closed_and_the_next_command_connects_anew(
    tls_store: tuple[RedisEphemeralStore, TlsProxy],
) -> None:
    store, proxy = tls_store
    await store.put("k", b"v", LONG_TTL)
    before = proxy.connections
    proxy.cut()
    await asyncio.sleep(0.05)  # the lanes see their connections end
    results = await asyncio.gather(*(store.get("k") for _ in range(8)), return_exceptions=True)
    assert all(r == b"v" or isinstance(r, EphemeralStoreUnavailable) for r in results)
    assert await store.get("k") == b"v"
    assert proxy.connections > before  # connected anew, over TLS
