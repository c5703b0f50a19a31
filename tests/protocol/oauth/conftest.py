"""Fixtures of the OAuth protocol tests."""

from __future__ import annotations

import pytest
from oauth_factory import make_client

from healthid.protocol.oauth.client import RegisteredClient


@pytest.fixture
def client() -> RegisteredClient:
    return make_client()
