"""Fixtures for the key tests."""

from __future__ import annotations

from typing import Any

import pytest
from keys_testlib import FakeClock, load_vector

START = 1_700_000_000


@pytest.fixture
def rfc7515_a3() -> dict[str, Any]:
    return load_vector("rfc7515_a3")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)
