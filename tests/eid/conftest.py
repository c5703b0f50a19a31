"""Fixtures of the eID tests: the stand-in behind httpx.ASGITransport (no sockets)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from eid_testlib import RecordingSleep, Standin, client_config, make_standin

from healthid.eid.client import EidClient


@pytest.fixture
def standin() -> Standin:
    return make_standin()


@pytest.fixture
def sleep() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture
async def client(standin: Standin, sleep: RecordingSleep) -> AsyncIterator[EidClient]:
    async with EidClient(
        client_config(), http_transport=standin.transport, sleep=sleep
    ) as eid_client:
        yield eid_client
