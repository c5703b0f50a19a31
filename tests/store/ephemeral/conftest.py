"""Fixtures for the ephemeral store tests: a private Redis key prefix, cleaned up after."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

TEST_PREFIX_ROOT = "healthid-test:"


@pytest.fixture
async def redis_prefix(redis_url: str) -> AsyncIterator[str]:
    """A random prefix for one test; every key under it is deleted afterwards."""
    prefix = f"{TEST_PREFIX_ROOT}{secrets.token_hex(8)}:"
    yield prefix
    client = aioredis.Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
async def raw_redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A plain client on the test database, to look behind the adapter."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()
