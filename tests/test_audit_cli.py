"""``healthid audit verify`` as an auditor uses it (click's runner, real SQLite file)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from healthid.audit_cli import audit
from healthid.enclave.audit_signer import AuditSigner
from healthid.enclave.sealing import SimulatedFileSealer
from healthid.protocol.audit import AuditEvent, AuditKind
from healthid.runtime import ROOT_KEY_FILE
from healthid.settings import load_settings
from healthid.store.sql.audit import AuditLog
from healthid.store.sql.engine import create_engine, upgrade

NOW = 1_764_500_000


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith("HEALTHID_"):
            monkeypatch.delenv(name)
    data = tmp_path / "data"
    monkeypatch.setenv("HEALTHID_DATA_DIR", str(data))
    return data


def sql(statement: str) -> None:
    async def go() -> None:
        engine = create_engine(load_settings().sql_url)
        try:
            async with engine.begin() as conn:
                await conn.execute(text(statement))
        finally:
            await engine.dispose()

    asyncio.run(go())


@pytest.fixture
def logged(data_dir: Path) -> AuditSigner:
    """Seven events in the configured database, a checkpoint after the fifth."""
    enclave = data_dir / "enclave"
    root = SimulatedFileSealer(enclave / ROOT_KEY_FILE).load_or_create()
    signer = AuditSigner.load_or_create(root, enclave, clock=lambda: NOW)

    async def go() -> None:
        engine = create_engine(load_settings().sql_url)
        await upgrade(engine)
        try:
            log = AuditLog(engine)
            for index in range(7):
                log.append(AuditEvent(time=NOW + index, kind=AuditKind.LOGIN))
                if index == 4:
                    await log.flush()
                    await log.checkpoint(signer)
            await log.flush()
        finally:
            await engine.dispose()

    asyncio.run(go())
    return signer


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(audit, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_verify_prints_ok_with_counts_on_a_clean_log(logged: AuditSigner) -> None:
    code, out, _ = run("verify")
    assert code == 0, out
    assert out.startswith("OK: 7 entries, 1 checkpoints verified; signed up to seq 5, 2 newer")
    assert logged.public_jwk()["kid"] in out


def test_verify_exits_1_after_a_raw_sql_update(logged: AuditSigner) -> None:
    sql("UPDATE audit_log SET occurred_at = occurred_at + 60 WHERE seq = 3")
    code, out, _ = run("verify")
    assert code == 1
    assert out.startswith("FAILED: seq 3: modified")


def test_verify_exits_1_against_another_audit_key(logged: AuditSigner, tmp_path: Path) -> None:
    other = AuditSigner.load_or_create(
        SimulatedFileSealer(tmp_path / "r.json").load_or_create(), tmp_path / "o"
    )
    key = tmp_path / "other.jwk"
    key.write_text(json.dumps({"keys": [other.public_jwk()]}))
    code, out, _ = run("verify", "--public-key", str(key))
    assert code == 1 and "checkpoint_signature_invalid" in out


def test_an_anchor_finds_a_log_emptied_with_its_checkpoints(
    logged: AuditSigner, tmp_path: Path
) -> None:
    code, out, _ = run("verify", "--show-checkpoint")
    assert code == 0
    anchor = tmp_path / "anchor.jws"
    anchor.write_text(out.strip().splitlines()[-1])
    sql("DELETE FROM audit_log")
    sql("DELETE FROM audit_checkpoints")
    assert run("verify")[0] == 0  # nothing left to contradict: only an outside copy helps
    code, out, _ = run("verify", "--anchor", str(anchor))
    assert code == 1 and out.startswith("FAILED: seq 1: truncated")


def test_verify_without_a_key_file_is_a_usage_error(data_dir: Path) -> None:
    code, _, err = run("verify")
    assert code == 2 and "not a readable JWK" in err
