"""The enclave's audit key: sealed under the root key, signs only extensions of its chain."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from pathlib import Path

import pytest

from healthid.enclave import api
from healthid.enclave.audit_signer import HEAD_FILE, KEY_FILE, AuditSigner
from healthid.enclave.sealing import SealingError
from healthid.enclave.vault import RootKey
from healthid.protocol.audit import (
    GENESIS_HASH,
    AuditEntry,
    AuditEvent,
    AuditKind,
    checkpoint_verifier,
    entry_hash,
)
from healthid.protocol.audit import chain as build_chain
from healthid.protocol.jose.jws import read_header

NOW = 1_764_500_000


def events(n: int, start: int = 0) -> list[AuditEvent]:
    return [
        AuditEvent(time=NOW + i, kind=AuditKind.LOGIN, subject=f"{i:032x}")
        for i in range(start, start + n)
    ]


@pytest.fixture
def root() -> RootKey:
    return RootKey.from_secret(os.urandom(32))


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    return tmp_path / "enclave"


@pytest.fixture
def signer(root: RootKey, directory: Path) -> AuditSigner:
    return AuditSigner.load_or_create(root, directory, clock=lambda: NOW)


def request(entries: list[AuditEntry]) -> api.AuditCheckpointRequest:
    return api.AuditCheckpointRequest(entries=tuple(entries))


def test_audit_key_is_sealed_under_the_root_key(
    signer: AuditSigner, root: RootKey, directory: Path
) -> None:
    path = directory / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    doc = json.loads(path.read_text())
    assert set(doc) == {"format", "root_key_id", "kid", "wrapped"}  # no plaintext "d"
    assert doc["kid"] == signer.public_jwk()["kid"]
    again = AuditSigner.load_or_create(root, directory)
    assert again.public_jwk() == signer.public_jwk()


def test_audit_key_does_not_open_under_another_root_key(
    signer: AuditSigner, directory: Path
) -> None:
    with pytest.raises(SealingError):
        AuditSigner.load_or_create(RootKey.from_secret(os.urandom(32)), directory)


def test_tampered_sealed_key_is_refused(
    signer: AuditSigner, root: RootKey, directory: Path
) -> None:
    path = directory / KEY_FILE
    doc = json.loads(path.read_text())
    doc["kid"] = "another-kid"
    path.write_text(json.dumps(doc))
    with pytest.raises(SealingError):
        AuditSigner.load_or_create(root, directory)


def test_sealed_key_readable_by_others_is_refused(
    signer: AuditSigner, root: RootKey, directory: Path
) -> None:
    (directory / KEY_FILE).chmod(0o644)
    with pytest.raises(SealingError):
        AuditSigner.load_or_create(root, directory)


def test_public_jwk_is_published_beside_the_key(signer: AuditSigner, directory: Path) -> None:
    published = json.loads((directory / api.AUDIT_PUBLIC_JWK_FILE).read_text())
    assert published == signer.public_jwk()
    assert "d" not in published and published["alg"] == "ES256"


def test_checkpoint_is_an_es256_jws_over_the_recomputed_head(signer: AuditSigner) -> None:
    entries = build_chain(0, GENESIS_HASH, events(5))
    signed = signer.sign_checkpoint(request(entries))
    assert signed.checkpoint.seq == 5 and signed.checkpoint.time == NOW
    assert signed.checkpoint.head == entries[-1].entry_hash
    header = read_header(signed.jws)
    assert header["alg"] == "ES256" and header["kid"] == signer.public_jwk()["kid"]
    verify = checkpoint_verifier({"keys": [signer.public_jwk()]})
    assert verify(signed.jws) == signed.checkpoint
    assert signer.head() == signed


async def test_checkpoints_extend_the_last_one_across_instances(
    signer: AuditSigner, root: RootKey, directory: Path
) -> None:
    entries = build_chain(0, GENESIS_HASH, events(9))
    await signer.sign_audit_checkpoint(request(entries[:4]))
    restarted = AuditSigner.load_or_create(root, directory, clock=lambda: NOW - 10)
    head = await restarted.audit_head()
    assert head is not None and head.checkpoint.seq == 4
    signed = await restarted.sign_audit_checkpoint(request(entries[4:]))
    assert signed.checkpoint.seq == 9 and signed.checkpoint.head == entries[-1].entry_hash
    assert signed.checkpoint.time == NOW  # never earlier than the previous checkpoint


def test_refuses_to_sign_a_rewritten_history(signer: AuditSigner) -> None:
    """Entries already covered by a checkpoint cannot be replaced by other ones."""
    entries = build_chain(0, GENESIS_HASH, events(6))
    signer.sign_checkpoint(request(entries))
    rewritten = build_chain(0, GENESIS_HASH, events(8, start=100))
    with pytest.raises(api.EnclaveError, match="do not extend"):
        signer.sign_checkpoint(request(rewritten))
    with pytest.raises(api.EnclaveError, match="do not extend"):
        signer.sign_checkpoint(request(rewritten[6:]))  # right seqs, wrong predecessor
    assert signer.sign_checkpoint(request(build_chain(6, entries[-1].entry_hash, events(2))))


def test_refuses_a_gap_and_a_forged_hash(signer: AuditSigner) -> None:
    entries = build_chain(0, GENESIS_HASH, events(6))
    with pytest.raises(api.EnclaveError):
        signer.sign_checkpoint(request(entries[1:]))
    forged = dataclasses.replace(entries[2], event=events(1, start=50)[0])
    with pytest.raises(api.EnclaveError):
        signer.sign_checkpoint(request([*entries[:2], forged, *entries[3:]]))
    recomputed = dataclasses.replace(
        forged, entry_hash=entry_hash(forged.prev_hash, 3, forged.event)
    )
    with pytest.raises(api.EnclaveError):  # the next entry no longer links to it
        signer.sign_checkpoint(request([*entries[:2], recomputed, *entries[3:]]))
    assert signer.head() is None


def test_refuses_empty_and_oversized_requests(
    signer: AuditSigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(api.EnclaveError):
        signer.sign_checkpoint(request([]))
    monkeypatch.setattr(api, "MAX_AUDIT_CHECKPOINT_ENTRIES", 3)
    with pytest.raises(api.EnclaveError, match="at most 3"):
        signer.sign_checkpoint(request(build_chain(0, GENESIS_HASH, events(4))))


def test_head_file_not_signed_by_the_key_is_refused(
    signer: AuditSigner, root: RootKey, directory: Path, tmp_path: Path
) -> None:
    other = AuditSigner.load_or_create(root, tmp_path / "other")
    foreign = other.sign_checkpoint(request(build_chain(0, GENESIS_HASH, events(2))))
    (directory / HEAD_FILE).write_text(foreign.jws)
    with pytest.raises(api.EnclaveError, match="not a checkpoint signed by this audit key"):
        signer.sign_checkpoint(request(build_chain(0, GENESIS_HASH, events(2))))
