"""The local stack of ``make run`` (development only): a demo registry of made-up people and
the eID-Server stand-in mounted beside the IdP, so a development wallet can enrol at once.
"""

from __future__ import annotations

from pathlib import Path

from starlette.routing import Mount

from healthid.demo.synthetic import synthetic_rows, write_registry
from healthid.settings import Settings

DEMO_REGISTRY_FILE = "demo-registry.csv"
DEMO_COUNT = 50
DEMO_SEED = 2026
STANDIN_MOUNT = "/_dev/eid-standin"


def demo_registry(settings: Settings) -> Path:
    """The demo registry file in the data directory (written on first use)."""
    path = settings.data_dir / DEMO_REGISTRY_FILE
    if not path.exists():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8", newline="") as fh:
            write_registry(fh, DEMO_COUNT, fmt="csv", seed=DEMO_SEED)
    return path


def demo_people(count: int = 3) -> list[dict[str, str]]:
    return list(synthetic_rows(DEMO_COUNT, seed=DEMO_SEED))[:count]


def with_local_standin(settings: Settings) -> Settings:
    """Point the eID client at the stand-in mounted in this process (if none is configured)."""
    if settings.eid_server_url is not None:
        return settings
    url = f"http://{settings.listen_host}:{settings.listen_port}{STANDIN_MOUNT}/eID"
    return settings.model_copy(update={"eid_server_url": url})


def standin_mount(settings: Settings) -> Mount:
    """The eID-Server stand-in serving the people of the demo registry, keyed by KVNR."""
    from healthid.demo.eid_identities import identities_from_registry
    from healthid.eid.standin import create_standin_app

    path = demo_registry(settings)
    identities = identities_from_registry(path.read_bytes(), path.name)
    return Mount(
        STANDIN_MOUNT,
        app=create_standin_app(identities, enabled_in_production=not settings.development),
    )
