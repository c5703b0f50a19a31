"""The local stack of ``make run`` (development only): a demo registry of made-up people and
the eID-Server stand-in mounted beside the IdP, so a development wallet can enrol at once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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


FEDMASTER_MOUNT = "/_dev/fedmaster"
RP_MOUNT = "/_dev/rp"
FEDMASTER_DIR = "fedmaster"
DEMO_RP_DIR = "demo-rp"


def base_url(settings: Settings) -> str:
    return settings.public_url.rstrip("/")


def with_local_federation(settings: Settings) -> Settings:
    """Point the IdP at the development master mounted in this process, its key pinned."""
    from healthid.demo.fedmaster_config import load_or_create_signing_key, master_public_jwks

    if settings.fedmaster_url is not None:
        return settings
    directory = settings.data_dir / FEDMASTER_DIR
    jwks_file = directory / "pinned-fedmaster-jwks.json"
    jwks_file.parent.mkdir(parents=True, exist_ok=True)
    jwks_file.write_text(json.dumps(master_public_jwks(load_or_create_signing_key(directory))))
    return settings.model_copy(
        update={
            "fedmaster_url": base_url(settings) + FEDMASTER_MOUNT,
            "fedmaster_jwks_file": jwks_file,
        }
    )


def federation_mounts(settings: Settings, idp_federation_jwks: dict[str, Any]) -> list[Mount]:
    """The development federation master and the demo relying party, beside the IdP."""
    from healthid.demo.fedmaster import create_fedmaster_app
    from healthid.demo.fedmaster_config import (
        FedmasterConfig,
        IdpListing,
        Member,
        load_or_create_signing_key,
        master_public_jwks,
    )
    from healthid.demo.rp import DemoRpConfig, create_demo_rp_app
    from healthid.demo.rp_keys import load_or_create_rp_keys

    idp = base_url(settings)
    master = str(settings.fedmaster_url)
    rp = idp + RP_MOUNT
    master_key = load_or_create_signing_key(settings.data_dir / FEDMASTER_DIR)
    rp_keys = load_or_create_rp_keys(
        settings.data_dir / DEMO_RP_DIR, common_name="healthid demo RP"
    )
    config = FedmasterConfig(
        entity_id=master,
        members=(
            Member(
                entity_id=idp,
                jwks=idp_federation_jwks,
                idp=IdpListing(
                    organization_name=settings.organization_name,
                    logo_uri=settings.logo_uri or f"{idp}/logo.svg",
                ),
            ),
            Member(
                entity_id=rp,
                jwks=rp_keys.federation_jwks(),
                metadata={"openid_relying_party": {"client_registration_types": ["automatic"]}},
            ),
        ),
    )
    rp_app = create_demo_rp_app(
        DemoRpConfig(
            base_url=rp,
            idp_url=idp,
            fedmaster_url=master,
            data_dir=settings.data_dir / DEMO_RP_DIR,
            fedmaster_jwks=master_public_jwks(master_key),
            acr_values="gematik-ehealth-loa-substantial",  # the reference wallet's software key
        ),
        production=not settings.development,
    )
    return [
        Mount(
            FEDMASTER_MOUNT,
            app=create_fedmaster_app(config, signing_key=master_key, production=False),
        ),
        Mount(RP_MOUNT, app=rp_app),
    ]
