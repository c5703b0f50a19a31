"""The composition root: builds the parts of a healthid process from :class:`Settings`.

The only module that wires host and enclave together; in the embedded default the enclave
runs in-process (``tee: simulated``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from healthid.enclave.sealing import SimulatedFileSealer
from healthid.enclave.service import Enclave
from healthid.enclave.vault import Vault
from healthid.host.app import HostDeps, create_app
from healthid.settings import Settings, TeeKind
from healthid.store.ephemeral import EphemeralStore, open_ephemeral_store
from healthid.store.sql.engine import create_engine, upgrade
from healthid.store.sql.policyholders import PolicyholderRepository

ROOT_KEY_FILE = "root-key.simulated-tee.INSECURE.json"


class StartupError(Exception):
    """The process cannot be assembled from these settings."""


def enclave_dir(settings: Settings) -> Path:
    return settings.data_dir / "enclave"


def build_enclave(settings: Settings) -> Enclave:
    """The in-process enclave. Production (SGX) needs the enclave process of a later issue."""
    if settings.tee is not TeeKind.SIMULATED:
        raise StartupError(
            "tee=sgx needs the attested enclave process, which this build does not have yet"
        )
    root = SimulatedFileSealer(enclave_dir(settings) / ROOT_KEY_FILE).load_or_create()
    workers = settings.enclave_workers or os.cpu_count() or 1
    return Enclave(
        Vault(root),
        root=root,
        workers=workers,
        tee="simulated",
        allow_test_kvnr=settings.development,
    )


@dataclass(kw_only=True)
class Runtime:
    settings: Settings
    engine: AsyncEngine
    enclave: Enclave
    policyholders: PolicyholderRepository
    ephemeral: EphemeralStore

    async def aclose(self) -> None:
        self.enclave.close()
        await self.ephemeral.aclose()
        await self.engine.dispose()


async def open_runtime(settings: Settings, *, migrate: bool | None = None) -> Runtime:
    """Open the stores and the enclave. Development mode applies migrations by default."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_engine(settings.sql_url)
    if settings.development if migrate is None else migrate:
        await upgrade(engine)
    return Runtime(
        settings=settings,
        engine=engine,
        enclave=build_enclave(settings),
        policyholders=PolicyholderRepository(engine),
        ephemeral=open_ephemeral_store(settings.redis_url),
    )


def build_app(settings: Settings) -> Starlette:
    """The host ASGI app for ``healthid serve``; stores open in the app's lifespan."""
    holder: list[Runtime] = []

    async def deps() -> HostDeps:
        rt = await open_runtime(settings)
        holder.append(rt)
        return HostDeps(
            mode=settings.mode.value,
            public_url=settings.public_url,
            enclave=rt.enclave,
            engine=rt.engine,
            ephemeral=rt.ephemeral,
        )

    async def close() -> None:
        while holder:
            await holder.pop().aclose()

    return create_app(deps, close)
