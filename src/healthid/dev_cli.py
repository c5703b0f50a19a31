"""Development-only commands of ``healthid``: the federation master, the demo relying party,
the eID-Server stand-in and the test eGK CA. Each refuses to run in production mode."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from healthid.settings import Settings


def _settings() -> Settings:
    from healthid.cli import _settings as load

    return load()


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8081, show_default=True)
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TOML (or .json) listing the members: entity ids, their JWKS, imposed metadata.",
)
def fedmaster(host: str, port: int, config_path: Path) -> None:
    """Development only: a local federation master with a TEST-ONLY key (DATA_DIR/fedmaster)."""
    from healthid.demo.fedmaster import FedmasterRefused, run_fedmaster
    from healthid.demo.fedmaster_config import FedmasterConfigError

    settings = _settings()
    if not settings.development:
        click.echo("healthid: fedmaster is for development mode only", err=True)
        sys.exit(2)
    try:
        run_fedmaster(
            host,
            port,
            config_path,
            settings.data_dir / "fedmaster",
            production=not settings.development,
        )
    except (FedmasterRefused, FedmasterConfigError) as exc:
        click.echo(f"healthid: {exc}", err=True)
        sys.exit(2)


@click.command("demo-rp")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8082, show_default=True)
@click.option("--idp", "idp_url", help="IdP entity identifier (default: HEALTHID_PUBLIC_URL).")
@click.option(
    "--base-url", help="The RP's entity identifier / client_id (default: http://HOST:PORT)."
)
@click.option(
    "--fedmaster", "fedmaster_url", help="Its federation master (default: HEALTHID_FEDMASTER_URL)."
)
@click.option(
    "--fedmaster-jwks",
    "fedmaster_jwks_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Pinned master JWKS to verify the IdP through the master (default: "
    "HEALTHID_FEDMASTER_JWKS_FILE; without one the IdP is trusted on first use).",
)
def demo_rp(
    host: str,
    port: int,
    idp_url: str | None,
    base_url: str | None,
    fedmaster_url: str | None,
    fedmaster_jwks_file: Path | None,
) -> None:
    """Development only: a demo relying party with TEST-ONLY keys (DATA_DIR/demo-rp)."""
    from healthid.demo.rp import DemoRpRefused, run_demo_rp
    from healthid.demo.rp_keys import DemoRpKeyError
    from healthid.runtime import DEV_FEDMASTER_URL

    settings = _settings()
    if not settings.development:
        click.echo("healthid: demo-rp is for development mode only", err=True)
        sys.exit(2)
    try:
        run_demo_rp(
            host,
            port,
            idp_url or settings.public_url,
            settings.data_dir / "demo-rp",
            fedmaster_url or settings.fedmaster_url or DEV_FEDMASTER_URL,
            base_url=base_url,
            fedmaster_jwks_file=fedmaster_jwks_file or settings.fedmaster_jwks_file,
            production=not settings.development,
        )
    except (DemoRpRefused, DemoRpKeyError, ValueError) as exc:
        click.echo(f"healthid: {exc}", err=True)
        sys.exit(2)


@click.command("eid-standin")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8090, show_default=True)
@click.option(
    "--registry",
    "registry_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Serve the people of this registry file (keyed by KVNR) instead of the demo identities.",
)
def eid_standin(host: str, port: int, registry_file: Path | None) -> None:
    """Run the local eID-Server stand-in (development and tests only, never in production)."""
    from healthid.eid.standin import run_standin
    from healthid.eid.standin_identities import DEMO_IDENTITIES

    settings = _settings()
    if not settings.development:
        click.echo("healthid: the eID-Server stand-in never runs in production mode", err=True)
        sys.exit(2)
    identities = DEMO_IDENTITIES
    if registry_file is not None:
        from healthid.demo.eid_identities import RegistryFileError, identities_from_registry

        try:
            identities = identities_from_registry(registry_file.read_bytes(), registry_file.name)
        except RegistryFileError as exc:
            click.echo(f"healthid: {registry_file}: {exc}", err=True)
            sys.exit(1)
    click.echo(
        f"eID-Server stand-in (TEST ONLY) on http://{host}:{port}/eID with "
        f"{len(identities)} identities; completion hook: /standin/sessions/PSK_ID/complete"
    )
    run_standin(host, port, identities, enabled_in_production=not settings.development)


@click.group("egk-test-ca")
def egk_test_ca() -> None:
    """The TEST eGK CA of development mode (its cards prove nothing)."""


@egk_test_ca.command("issue")
@click.option("--kvnr", required=True)
@click.option("--ik", required=True)
@click.option("--given-name", required=True)
@click.option("--family-name", required=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
def egk_test_ca_issue(kvnr: str, ik: str, given_name: str, family_name: str, output: Path) -> None:
    """Issue a test eGK (certificate + card key) into a card file for `healthid wallet`."""
    import base64
    import os

    from cryptography.hazmat.primitives import serialization

    from healthid.demo.egk_test_ca import TestEgkCa
    from healthid.runtime import EGK_TEST_CA_DIR

    settings = _settings()
    if not settings.development:
        click.echo("healthid: the test eGK CA exists in development mode only", err=True)
        sys.exit(2)
    card = TestEgkCa.create(settings.data_dir / EGK_TEST_CA_DIR).issue_card(
        kvnr, ik, given_name, family_name
    )
    doc = {
        "warning": "TEST-ONLY development eGK: proves nothing about anybody",
        "certificate": base64.b64encode(card.certificate_der).decode(),
        "private_key": card.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
    }
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(doc, fh, indent=2)
    click.echo(f"wrote test card to {output}")


COMMANDS = (fedmaster, demo_rp, eid_standin, egk_test_ca)
