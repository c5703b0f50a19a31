"""The audit log in SQLite and PostgreSQL: one linear chain under concurrent writers, and
every change made with raw SQL is found by verify."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from healthid.enclave import api
from healthid.enclave.audit_signer import AuditSigner
from healthid.enclave.vault import RootKey
from healthid.protocol.audit import (
    GENESIS_HASH,
    AuditEntry,
    AuditEvent,
    AuditKind,
    AuditOutcome,
    ChainReport,
    FindingKind,
    chain,
    checkpoint_verifier,
    entry_to_row,
)
from healthid.store.sql import audit as audit_store
from healthid.store.sql.audit import AuditBacklogFull, AuditLog
from healthid.store.sql.engine import create_engine, upgrade
from healthid.store.sql.schema import audit_log

NOW = 1_764_500_000
PROCESSES = 3
PER_PROCESS = 120
PROCESS_TIMEOUT = 120.0


def audit_event(writer: int, index: int) -> AuditEvent:
    return AuditEvent(
        time=NOW + index,
        kind=AuditKind.LOGIN,
        outcome=AuditOutcome.FAILURE if index % 7 == 0 else AuditOutcome.SUCCESS,
        actor=f"{writer:016x}{index:016x}",
        subject=f"device-{writer}",
        details={"writer": str(writer), "index": str(index)},
    )


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(db_url)
    await upgrade(eng)
    yield eng
    await eng.dispose()


@pytest.fixture
def signer(tmp_path: Path) -> AuditSigner:
    root = RootKey.from_secret(os.urandom(32))
    return AuditSigner.load_or_create(root, tmp_path / "enclave", clock=lambda: NOW)


async def verify(log: AuditLog, signer: AuditSigner) -> ChainReport:
    return await log.verify(checkpoint_verifier({"keys": [signer.public_jwk()]}))


async def assert_one_linear_chain(log: AuditLog, writers: int, per_writer: int) -> None:
    """Seqs 1..N without gaps, each event once, each writer's events in its own order."""
    items = await log.read(limit=writers * per_writer + 10)
    entries = [i for i in items if isinstance(i, AuditEntry)]
    assert len(entries) == len(items) == writers * per_writer
    assert [e.seq for e in entries] == list(range(1, writers * per_writer + 1))
    seen: dict[str, list[int]] = {}
    for e in entries:
        seen.setdefault(e.event.details["writer"], []).append(int(e.event.details["index"]))
    assert seen == {str(w): list(range(per_writer)) for w in range(writers)}
    report = await log.verify(lambda _jws: None)
    assert report.ok and report.entries == writers * per_writer


# -- writing ---------------------------------------------------------------------------------
async def test_append_only_queues_until_flush(engine: AsyncEngine) -> None:
    log = AuditLog(engine)
    log.append(audit_event(0, 0))
    log.append(audit_event(0, 1))
    assert log.backlog == 2 and await log.read() == []
    assert await log.flush() == 2
    assert log.backlog == 0
    items = await log.read()
    assert [i.seq for i in items] == [1, 2]
    first = items[0]
    assert isinstance(first, AuditEntry) and first.prev_hash == GENESIS_HASH
    assert first.event == audit_event(0, 0)
    assert [i.seq for i in await log.read(2, 2)] == [2]


async def test_concurrent_appends_from_many_tasks_form_one_linear_chain(
    engine: AsyncEngine,
) -> None:
    """Four writers (as four workers would have), three tasks each, flushing at random."""
    logs = [AuditLog(engine, batch=5) for _ in range(4)]
    per_writer = 60
    rng = random.Random(5)  # noqa: S311 - test scheduling, not security

    async def task(writer: int, log: AuditLog, indexes: range) -> None:
        for index in indexes:
            log.append(audit_event(writer, index))
            if rng.random() < 0.3:
                await log.flush()
            await asyncio.sleep(0)
        await log.flush()

    # each writer's events are appended in order by one task at a time (its request order)
    async def writer(w: int) -> None:
        for part in range(3):
            await task(w, logs[w], range(part * 20, part * 20 + 20))

    await asyncio.gather(*(writer(w) for w in range(4)))
    await assert_one_linear_chain(logs[0], 4, per_writer)


def _append_from_process(url: str, writer: int, count: int, go: Any) -> None:
    """One worker process: appends ``count`` events, flushing small batches."""

    async def run() -> None:
        eng = create_engine(url)
        log = AuditLog(eng, batch=4)
        try:
            go.wait(PROCESS_TIMEOUT)
            for index in range(count):
                log.append(audit_event(writer, index))
                if index % 3 == 2:
                    await log.flush()
            await log.flush()
        finally:
            await eng.dispose()

    asyncio.run(run())


@pytest.mark.slow
async def test_appends_from_several_processes_form_one_linear_chain(
    engine: AsyncEngine, db_url: str
) -> None:
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Event()
    procs = [
        ctx.Process(target=_append_from_process, args=(db_url, w, PER_PROCESS, go))
        for w in range(PROCESSES)
    ]
    for proc in procs:
        proc.start()
    try:
        go.set()
        for proc in procs:
            await asyncio.to_thread(proc.join, PROCESS_TIMEOUT)
        assert [p.exitcode for p in procs] == [0] * PROCESSES
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join()
    await assert_one_linear_chain(AuditLog(engine), PROCESSES, PER_PROCESS)


async def test_failed_flush_keeps_the_events_in_order(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = AuditLog(engine, batch=2)
    for index in range(5):
        log.append(audit_event(0, index))

    def broken(entry: AuditEntry) -> dict[str, Any]:
        raise RuntimeError("database gone")

    monkeypatch.setattr(audit_store, "entry_to_row", broken)
    with pytest.raises(RuntimeError):
        await log.flush()
    assert log.backlog == 5 and await log.read() == []
    monkeypatch.setattr(audit_store, "entry_to_row", entry_to_row)
    assert await log.flush() == 5
    await assert_one_linear_chain(log, 1, 5)


async def test_append_fails_closed_when_the_backlog_is_full(engine: AsyncEngine) -> None:
    log = AuditLog(engine, max_backlog=3)
    for index in range(3):
        log.append(audit_event(0, index))
    with pytest.raises(AuditBacklogFull):
        log.append(audit_event(0, 3))


async def test_autocommit_engine_is_refused(engine: AsyncEngine) -> None:
    with pytest.raises(ValueError, match="transactions"):
        AuditLog(engine.execution_options(isolation_level="AUTOCOMMIT"))


# -- checkpoints -------------------------------------------------------------------------------
async def test_checkpoint_signs_the_head(engine: AsyncEngine, signer: AuditSigner) -> None:
    log = AuditLog(engine)
    assert await log.checkpoint(signer) is None  # nothing to sign yet
    for index in range(5):
        log.append(audit_event(0, index))
    await log.flush()
    signed = await log.checkpoint(signer)
    assert signed is not None and signed.checkpoint.seq == 5
    assert await log.checkpoint(signer) is None
    assert await log.checkpoints() == [signed]
    log.append(audit_event(0, 5))
    await log.flush()
    report = await verify(log, signer)
    assert report.ok and (report.checkpoints, report.signed_seq, report.unsigned_tail) == (1, 5, 1)


async def test_checkpoint_catches_up_in_chunks(
    engine: AsyncEngine, signer: AuditSigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_store, "MAX_AUDIT_CHECKPOINT_ENTRIES", 4)
    log = AuditLog(engine)
    for index in range(10):
        log.append(audit_event(0, index))
    await log.flush()
    signed = await log.checkpoint(signer)
    assert signed is not None and signed.checkpoint.seq == 10
    assert [c.checkpoint.seq for c in await log.checkpoints()] == [4, 8, 10]
    assert (await verify(log, signer)).checkpoints == 3


async def test_checkpoint_signed_before_a_crash_is_stored_later(
    engine: AsyncEngine, signer: AuditSigner
) -> None:
    log = AuditLog(engine)
    for index in range(6):
        log.append(audit_event(0, index))
    await log.flush()
    entries = tuple(i for i in await log.read(1, 4) if isinstance(i, AuditEntry))
    lost = signer.sign_checkpoint(api.AuditCheckpointRequest(entries=entries))  # not stored
    signed = await log.checkpoint(signer)
    assert signed is not None and signed.checkpoint.seq == 6
    assert await log.checkpoints() == [lost, signed]


async def test_background_task_flushes_and_checkpoints(
    engine: AsyncEngine, signer: AuditSigner
) -> None:
    log = AuditLog(engine)
    log.start(signer, flush_interval=0.02, checkpoint_interval=0.02)
    try:
        for index in range(3):
            log.append(audit_event(0, index))
        for _ in range(250):
            if await log.checkpoints():
                break
            await asyncio.sleep(0.02)
        log.append(audit_event(0, 3))
    finally:
        await log.aclose()
    assert [c.checkpoint.seq for c in await log.checkpoints()][:1] == [3]
    assert len(await log.read()) == 4  # aclose wrote the last one


async def test_aclose_lets_a_checkpoint_in_progress_finish(
    engine: AsyncEngine, signer: AuditSigner
) -> None:
    """Closing while the task is inside a checkpoint's transaction: the checkpoint is
    finished and stored, not cut off (on SQLite a cut-off transaction kept the write lock
    until its connection was closed, and the last flush failed on it now and then)."""
    signing = asyncio.Event()
    release = asyncio.Event()

    class SlowWitness:
        async def audit_head(self) -> api.SignedCheckpoint | None:
            return await signer.audit_head()

        async def sign_audit_checkpoint(
            self, request: api.AuditCheckpointRequest
        ) -> api.SignedCheckpoint:
            signing.set()
            await release.wait()
            return await signer.sign_audit_checkpoint(request)

    log = AuditLog(engine)
    for index in range(3):
        log.append(audit_event(0, index))
    log.start(SlowWitness(), flush_interval=0.01, checkpoint_interval=0.0)
    await asyncio.wait_for(signing.wait(), 10)  # the task holds the checkpoint transaction
    log.append(audit_event(0, 3))
    closing = asyncio.create_task(log.aclose())
    await asyncio.sleep(0.05)
    assert not closing.done()  # waits for the checkpoint instead of cancelling it
    release.set()
    await asyncio.wait_for(closing, 10)
    assert [c.checkpoint.seq for c in await log.checkpoints()] == [3]
    assert len(await log.read()) == 4  # and the last event was written after it


async def test_a_steady_stream_of_appends_is_written_in_few_transactions(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flush writes what was queued when it began. Chasing the appends that arrive while
    it writes wrote a transaction for every few events under load (about one per request)."""
    log = AuditLog(engine)
    writes: list[int] = []
    write = log._write

    async def counted(events: list[AuditEntry]) -> list[AuditEntry]:
        await asyncio.sleep(0.01)  # a round trip to the database, while the appends go on
        entries = await write(events)
        writes.append(len(entries))  # (a write that aclose cancels is retried: count once)
        return entries

    monkeypatch.setattr(log, "_write", counted)
    log.start(None, flush_interval=0.1)
    appended = 0
    try:
        loop = asyncio.get_running_loop()
        end = loop.time() + 0.5
        while loop.time() < end:
            log.append(audit_event(0, appended))
            appended += 1
            await asyncio.sleep(0.001)
    finally:
        await log.aclose()
    assert sum(writes) == appended and log.backlog == 0
    assert len(writes) <= 10, writes  # about one a flush interval, not one an append
    await assert_one_linear_chain(log, 1, appended)


# -- tampering with raw SQL ----------------------------------------------------------------------
async def logged_and_signed(engine: AsyncEngine, signer: AuditSigner) -> AuditLog:
    """Twelve entries; a checkpoint at seq 10."""
    log = AuditLog(engine)
    for index in range(10):
        log.append(audit_event(1, index))
    await log.flush()
    await log.checkpoint(signer)
    for index in range(10, 12):
        log.append(audit_event(1, index))
    await log.flush()
    assert (await verify(log, signer)).ok
    return log


TAMPERING = {
    "update_details": (
        ['UPDATE audit_log SET details = \'{"index":"2","writer":"7"}\' WHERE seq = 3'],
        FindingKind.MODIFIED,
        3,
    ),
    "update_outcome": (
        ["UPDATE audit_log SET outcome = 'success' WHERE seq = 1"],
        FindingKind.MODIFIED,
        1,
    ),
    "update_kind_to_unknown": (
        ["UPDATE audit_log SET kind = 'debug' WHERE seq = 4"],
        FindingKind.MODIFIED,
        4,
    ),
    "update_unsigned_tail": (
        ["UPDATE audit_log SET occurred_at = 0 WHERE seq = 12"],
        FindingKind.MODIFIED,
        12,
    ),
    "delete_one": (["DELETE FROM audit_log WHERE seq = 4"], FindingKind.MISSING, 4),
    "delete_below_checkpoint": (
        ["DELETE FROM audit_log WHERE seq >= 9"],
        FindingKind.TRUNCATED,
        9,
    ),
    "reorder": (
        [
            "UPDATE audit_log SET seq = -5 WHERE seq = 5",
            "UPDATE audit_log SET seq = 5 WHERE seq = 6",
            "UPDATE audit_log SET seq = 6 WHERE seq = -5",
        ],
        FindingKind.REORDERED,
        5,
    ),
    "checkpoint_row": (
        ["UPDATE audit_checkpoints SET signed_at = signed_at + 1"],
        FindingKind.CHECKPOINT_MISMATCH,
        10,
    ),
    "checkpoint_signature": (
        ["UPDATE audit_checkpoints SET jws = jws || 'A'"],
        FindingKind.CHECKPOINT_SIGNATURE_INVALID,
        10,
    ),
}


@pytest.mark.parametrize("case", sorted(TAMPERING))
async def test_raw_sql_tampering_is_found(
    engine: AsyncEngine, signer: AuditSigner, case: str
) -> None:
    log = await logged_and_signed(engine, signer)
    statements, kind, seq = TAMPERING[case]
    async with engine.begin() as conn:
        for statement in statements:
            await conn.execute(text(statement))
    report = await verify(log, signer)
    assert report.finding is not None
    assert (report.finding.kind, report.finding.seq) == (kind, seq), report.finding


async def test_rewritten_history_with_recomputed_hashes_is_found_and_not_signed(
    engine: AsyncEngine, signer: AuditSigner
) -> None:
    """An attacker who knows the algorithm rewrites seq 3 and re-hashes everything after it."""
    log = await logged_and_signed(engine, signer)
    events = [i.event for i in await log.read() if isinstance(i, AuditEntry)]
    events[2] = audit_event(9, 2)
    async with engine.begin() as conn:
        for entry in chain(0, GENESIS_HASH, events)[2:]:
            row = entry_to_row(entry)
            await conn.execute(update(audit_log).where(audit_log.c.seq == entry.seq).values(row))
    report = await verify(log, signer)
    assert report.finding is not None
    assert (report.finding.kind, report.finding.seq) == (FindingKind.CHECKPOINT_MISMATCH, 10)
    log.append(audit_event(1, 12))
    await log.flush()
    with pytest.raises(api.EnclaveError, match="do not extend"):
        await log.checkpoint(signer)  # the enclave recomputes from its own last head
