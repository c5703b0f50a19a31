"""``healthid audit``: check the tamper-evident audit trail (healthid.protocol.audit).

Exit status: 0 the chain is sound; 1 a finding (the first one is printed); 2 usage or
configuration error, or the database cannot be read.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

import click
from sqlalchemy.exc import SQLAlchemyError

from healthid.enclave.api import AUDIT_PUBLIC_JWK_FILE
from healthid.protocol.audit import (
    ChainReport,
    SignedCheckpoint,
    VerifySignature,
    checkpoint_verifier,
)
from healthid.settings import Settings, SettingsError, load_settings
from healthid.store.sql.audit import AuditLog
from healthid.store.sql.engine import create_engine


def _fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"healthid: {message}", err=True)
    sys.exit(code)


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        _fail(str(exc))


def _trusted_jwks(settings: Settings, public_key: Path | None) -> tuple[dict[str, Any], Path]:
    """The audit key(s) to trust: the pinned file, or in development the enclave's copy."""
    if public_key is None:
        if not settings.development:
            _fail("production: pass --public-key with the audit key pinned from the enclave")
        from healthid.enclave_runtime import enclave_dir

        public_key = enclave_dir(settings) / AUDIT_PUBLIC_JWK_FILE
    try:
        doc = json.loads(public_key.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        _fail(f"{public_key} is not a readable JWK or JWKS file")
    if not isinstance(doc, dict):
        _fail(f"{public_key} is not a JWK or JWKS file")
    return (doc if "keys" in doc else {"keys": [doc]}), public_key


def _anchors(paths: tuple[Path, ...], verify: VerifySignature) -> tuple[SignedCheckpoint, ...]:
    """Checkpoints saved earlier (outside the database): the log must still contain them."""
    out = []
    for path in paths:
        try:
            jws = path.read_text(encoding="ascii").strip()
        except (OSError, ValueError):
            _fail(f"anchor {path} is not readable")
        checkpoint = verify(jws)
        if checkpoint is None:
            _fail(f"anchor {path}: not a checkpoint signed by a trusted audit key", 1)
        out.append(SignedCheckpoint(checkpoint=checkpoint, jws=jws))
    return tuple(out)


async def _verify(
    url: str, verify: VerifySignature, anchors: tuple[SignedCheckpoint, ...]
) -> tuple[ChainReport, str | None]:
    engine = create_engine(url)
    try:
        log = AuditLog(engine)
        report = await log.verify(verify, extra_checkpoints=anchors)
        stored = await log.checkpoints()
        return report, (stored[-1].jws if stored else None)
    finally:
        await engine.dispose()


def _kids(jwks: Mapping[str, Any]) -> str:
    keys = jwks.get("keys")
    kids = (
        [str(k.get("kid")) for k in keys if isinstance(k, dict)] if isinstance(keys, list) else []
    )
    return ", ".join(kids) or "(none)"


@click.group("audit")
def audit() -> None:
    """The tamper-evident audit trail: a hash chain with checkpoints signed by the enclave."""


@audit.command("verify")
@click.option(
    "--public-key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The audit public key (JWK or JWKS) to trust, pinned from the attested enclave. "
    f"Development default: <data_dir>/enclave/{AUDIT_PUBLIC_JWK_FILE}.",
)
@click.option(
    "--anchor",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A checkpoint JWS kept outside the database (see --show-checkpoint); the log must "
    "still contain what it signs. Repeatable.",
)
@click.option(
    "--show-checkpoint",
    is_flag=True,
    help="On success, print the newest checkpoint JWS (keep it to pass as --anchor later).",
)
def verify(public_key: Path | None, anchor: tuple[Path, ...], show_checkpoint: bool) -> None:
    """Check every entry and checkpoint; print OK with counts, or the first finding (exit 1)."""
    settings = _settings()
    jwks, key_path = _trusted_jwks(settings, public_key)
    verify_signature = checkpoint_verifier(jwks)
    anchors = _anchors(anchor, verify_signature)
    try:
        report, newest = asyncio.run(_verify(settings.sql_url, verify_signature, anchors))
    except SQLAlchemyError as exc:
        _fail(f"cannot read the audit log ({type(exc).__name__}); is the database migrated?")
    if report.finding is not None:
        click.echo(f"FAILED: {report.finding}")
        click.echo(f"(entries sound before it: {report.entries}; audit key {_kids(jwks)})")
        sys.exit(1)
    click.echo(
        f"OK: {report.entries} entries, {report.checkpoints} checkpoints verified; "
        f"signed up to seq {report.signed_seq}, {report.unsigned_tail} newer entries not yet "
        "signed"
    )
    click.echo(f"head: seq {report.head_seq} {report.head_hash.hex()}")
    click.echo(f"audit key: {_kids(jwks)} (from {key_path})")
    if show_checkpoint and newest is not None:
        click.echo(newest)
