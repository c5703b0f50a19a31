"""The fixtures every fault test shares: an embedded-default app's settings and a loopback
federation (master and relying parties on a real 127.0.0.1 server)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from faults_testlib import LoopbackFederation, embedded_settings, loopback_federation

from healthid.settings import Settings


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    return embedded_settings(tmp_path, monkeypatch)


@pytest.fixture
def federation() -> Iterator[LoopbackFederation]:
    with loopback_federation() as f:
        yield f
