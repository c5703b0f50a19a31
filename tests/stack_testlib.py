"""What the end-to-end tests share: settings for the embedded stack or PostgreSQL + Redis, and
a synthetic registry imported through the enclave (the same path as `healthid registry import`)."""

from __future__ import annotations

import asyncio
import io
import os
from pathlib import Path
from typing import Any

import pytest

from healthid.demo.synthetic import write_registry
from healthid.settings import Settings, load_settings

BACKENDS = ["embedded", "postgres+redis"]


def settings_for(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    **overrides: Any,
) -> Settings:
    """Settings for ``request.param`` (one of BACKENDS), with no HEALTHID_* from the outside."""
    for name in list(os.environ):
        if name.startswith("HEALTHID_"):
            monkeypatch.delenv(name)
    values: dict[str, Any] = {"data_dir": tmp_path / "data", "enclave_workers": 1, **overrides}
    if request.param == "postgres+redis":
        values["database_url"] = request.getfixturevalue("pg_url")
        values["redis_url"] = request.getfixturevalue("redis_url")
        values["redis_prefix"] = request.getfixturevalue("redis_prefix")
    return load_settings(**values)


def import_synthetic_registry(settings: Settings, count: int, seed: int) -> None:
    """Import ``count`` synthetic policyholders (``seed``) into the settings' database."""
    from healthid.host.registry_import import import_registry
    from healthid.runtime import open_runtime

    buf = io.StringIO()
    write_registry(buf, count, seed=seed)

    async def load() -> None:
        runtime = await open_runtime(settings)
        try:
            result = await import_registry(
                runtime.enclave, runtime.policyholders, buf.getvalue().encode(), filename="r.csv"
            )
            assert result.ok, result.errors[:3]
        finally:
            await runtime.aclose()

    asyncio.run(load())
