"""The audit log in SQL (healthid.protocol.audit): cheap appends, gap-free batched writes.

``append`` only queues the event in memory (the request path pays no round trip); a flusher
writes the queue in batches, each in one transaction that reads the chain head, assigns the
next seqs and hashes and inserts the rows. Writers in every process are serialised by the
transaction's lock: ``pg_advisory_xact_lock`` on PostgreSQL, ``BEGIN IMMEDIATE`` (SQLite's one
writer) on SQLite; so the chain stays linear and gap-free however many workers append. The
primary key on ``seq`` backs this up: a writer that skipped the lock fails rather than forks.

Queued events that are not yet flushed are lost if the process dies; callers that need an
event durable before answering ``await flush()`` after ``append``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import operator
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Final, Protocol

from sqlalchemy import bindparam, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from healthid.enclave.api import (
    MAX_AUDIT_CHECKPOINT_ENTRIES,
    AuditCheckpointRequest,
    AuditWitness,
)
from healthid.protocol.audit import (
    GENESIS_HASH,
    AuditEntry,
    AuditEvent,
    AuditKind,
    AuditOutcome,
    ChainItem,
    ChainReport,
    ChainVerifier,
    Checkpoint,
    SignedCheckpoint,
    VerifySignature,
    chain,
    entry_from_row,
    entry_to_row,
)
from healthid.store.sql.engine import driver_connection, is_postgresql
from healthid.store.sql.schema import audit_checkpoints, audit_log

log = logging.getLogger(__name__)


def _lock_key(name: bytes) -> int:
    return int.from_bytes(hashlib.sha256(name).digest()[:8], "big", signed=True)


# pg_advisory_xact_lock keys (64-bit): one for the writers, one for the checkpointers.
APPEND_LOCK_KEY: Final = _lock_key(b"healthid/audit-log/append")
CHECKPOINT_LOCK_KEY: Final = _lock_key(b"healthid/audit-log/checkpoint")
FLUSH_BATCH: Final = 500  # events per transaction
MAX_BACKLOG: Final = 50_000  # queued events before append refuses (fail closed)
READ_PAGE: Final = 5_000  # rows per read
FLUSH_INTERVAL: Final = 1.0  # seconds between flushes of the background task
CHECKPOINT_INTERVAL: Final = 60.0  # seconds between checkpoints of the background task
CLOSE_TIMEOUT: Final = 30.0  # seconds aclose waits for the task's write or checkpoint

_PG_LOCK = text("SELECT pg_advisory_xact_lock(:k)")
_PG_LOCK_SQL = "SELECT pg_advisory_xact_lock($1)"
_PG_HEAD_SQL = "SELECT seq, entry_hash FROM audit_log ORDER BY seq DESC LIMIT 1"
_COLUMNS: Final = tuple(c.name for c in audit_log.columns)
_RECORD: Final = operator.itemgetter(*_COLUMNS)  # a row's values in the COPY's column order
_HEAD = select(audit_log.c.seq, audit_log.c.entry_hash).order_by(audit_log.c.seq.desc()).limit(1)
_INSERT = insert(audit_log)
_CHECKPOINT_EXISTS = select(audit_checkpoints.c.seq).where(
    audit_checkpoints.c.seq == bindparam("s")
)


class AuditBacklogFull(Exception):  # noqa: N818 - the name says the state
    """Too many events wait for the database: the request fails rather than go unrecorded."""


class AuditIntegrityError(Exception):
    """The stored chain cannot be handed to the enclave for a checkpoint (a row is broken)."""


class AuditSink(Protocol):
    """Where the services record security events (:class:`AuditLog`, or nothing)."""

    def append(self, event: AuditEvent) -> None: ...


class _NoAudit:
    def append(self, event: AuditEvent) -> None:
        del event


NO_AUDIT: Final[AuditSink] = _NoAudit()  # for services built without an audit trail (tests)


class AuditRecorder:
    """How a service records its security events: ``record(kind, outcome, actor=…, …)``."""

    def __init__(self, sink: AuditSink | None, clock: Callable[[], float]) -> None:
        self._sink = sink or NO_AUDIT
        self._clock = clock

    def __call__(
        self,
        kind: AuditKind,
        outcome: AuditOutcome = AuditOutcome.SUCCESS,
        *,
        actor: str | None = None,
        subject: str | None = None,
        client_id: str | None = None,
        **details: str,
    ) -> None:
        """Record one event (pseudonyms and opaque ids only: AuditEvent refuses the rest)."""
        self._sink.append(
            AuditEvent(
                time=int(self._clock()),
                kind=kind,
                outcome=outcome,
                actor=actor,
                subject=subject,
                client_id=client_id,
                details=details,
            )
        )


class AuditLog:
    """Appends to, checkpoints and reads the audit chain. One instance per process."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        batch: int = FLUSH_BATCH,
        max_backlog: int = MAX_BACKLOG,
    ) -> None:
        if engine.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
            raise ValueError("the audit log needs transactions: pass the engine, not autocommit")
        self._engine = engine
        self._batch = batch
        self._max_backlog = max_backlog
        self._queue: deque[AuditEvent] = deque()
        self._flushing = asyncio.Lock()
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    # -- writing --------------------------------------------------------------------------
    def append(self, event: AuditEvent) -> None:
        """Queue ``event`` (no I/O). AuditBacklogFull if the database has fallen behind."""
        if len(self._queue) >= self._max_backlog:
            raise AuditBacklogFull(f"{len(self._queue)} audit events wait for the database")
        self._queue.append(event)
        if len(self._queue) >= self._batch:
            self._wake.set()

    @property
    def backlog(self) -> int:
        return len(self._queue)

    async def flush(self) -> int:
        """Write the events queued when the flush began (in order, batch by batch); the
        number written. Events appended while it writes wait for the next flush: under a
        steady stream of appends, writing until the queue is empty would never wait, and
        the writes would shrink to a transaction for every few events."""
        written = 0
        async with self._flushing:
            due = len(self._queue)  # only a flush takes from the queue, under this lock
            while written < due:
                batch = [self._queue.popleft() for _ in range(min(self._batch, due - written))]
                try:
                    await self._write(batch)
                except BaseException:
                    self._queue.extendleft(reversed(batch))  # retried by the next flush
                    raise
                written += len(batch)
        return written

    @contextlib.asynccontextmanager
    async def _serialised(self, lock_key: int) -> AsyncIterator[AsyncConnection]:
        """A transaction holding the cross-process lock ``lock_key`` until it ends."""
        async with self._engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(_PG_LOCK, {"k": lock_key})
            else:
                # SQLite: take the write lock before reading the head (a deferred transaction
                # would read, then fail to upgrade while another writer holds it).
                await conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                await conn.rollback()
                raise
            await conn.commit()

    async def _write(self, events: list[AuditEvent]) -> list[AuditEntry]:
        if is_postgresql(self._engine):
            return await self._write_pg(events)
        async with self._serialised(APPEND_LOCK_KEY) as conn:
            row = (await conn.execute(_HEAD)).first()
            seq, head = (0, GENESIS_HASH) if row is None else (row.seq, bytes(row.entry_hash))
            entries = chain(seq, head, events)
            await conn.execute(_INSERT, [entry_to_row(e) for e in entries])
        return entries

    async def _write_pg(self, events: list[AuditEvent]) -> list[AuditEntry]:
        """``_write`` on PostgreSQL's own driver: the rows go in with one binary COPY. Through
        SQLAlchemy's executemany each row cost about four times as much in the worker."""
        async with driver_connection(self._engine, transaction=True) as pg:
            await pg.execute(_PG_LOCK_SQL, APPEND_LOCK_KEY)
            # read after the lock: this statement's snapshot sees the last writer's commit
            row = await pg.fetchrow(_PG_HEAD_SQL)
            seq, head = (0, GENESIS_HASH) if row is None else (row[0], bytes(row[1]))
            entries = chain(seq, head, events)
            await pg.copy_records_to_table(
                audit_log.name,
                columns=_COLUMNS,
                records=[_RECORD(entry_to_row(e)) for e in entries],
            )
        return entries

    # -- checkpoints ----------------------------------------------------------------------
    async def checkpoint(self, witness: AuditWitness) -> SignedCheckpoint | None:
        """Have the enclave sign the chain up to its current head; the newest checkpoint
        signed now (None if there was nothing new). A backlog is signed in chunks."""
        signed_now: SignedCheckpoint | None = None
        async with self._serialised(CHECKPOINT_LOCK_KEY) as conn:
            latest = await witness.audit_head()
            if latest is not None:
                await self._keep(conn, latest)  # signed before a crash, not yet stored
            while True:
                start = 0 if latest is None else latest.checkpoint.seq
                items = await self._read(conn, start + 1, start + MAX_AUDIT_CHECKPOINT_ENTRIES)
                entries = [i for i in items if isinstance(i, AuditEntry)]
                if len(entries) != len(items):
                    broken = next(i for i in items if not isinstance(i, AuditEntry))
                    raise AuditIntegrityError(f"audit entry {broken.seq} does not decode")
                if not entries:
                    break
                request = AuditCheckpointRequest(entries=tuple(entries))
                latest = signed_now = await witness.sign_audit_checkpoint(request)
                await self._keep(conn, latest)
                if len(entries) < MAX_AUDIT_CHECKPOINT_ENTRIES:
                    break
        return signed_now

    async def _keep(self, conn: AsyncConnection, signed: SignedCheckpoint) -> None:
        cp = signed.checkpoint
        if (await conn.execute(_CHECKPOINT_EXISTS, {"s": cp.seq})).first() is not None:
            return
        await conn.execute(
            insert(audit_checkpoints).values(
                seq=cp.seq, head_hash=cp.head, signed_at=cp.time, jws=signed.jws
            )
        )

    # -- reading --------------------------------------------------------------------------
    async def read(
        self, from_seq: int = 1, to_seq: int | None = None, *, limit: int = READ_PAGE
    ) -> list[ChainItem]:
        """Entries ``from_seq``..``to_seq`` (inclusive) in seq order, at most ``limit``; a row
        that does not decode comes back as an UnreadableEntry."""
        async with self._engine.connect() as conn:
            return await self._read(conn, from_seq, to_seq, limit=limit)

    @staticmethod
    async def _read(
        conn: AsyncConnection, from_seq: int, to_seq: int | None, *, limit: int = READ_PAGE
    ) -> list[ChainItem]:
        query = select(audit_log).where(audit_log.c.seq >= from_seq)
        if to_seq is not None:
            query = query.where(audit_log.c.seq <= to_seq)
        rows = await conn.execute(query.order_by(audit_log.c.seq).limit(limit))
        return [entry_from_row(row) for row in rows.mappings()]

    async def checkpoints(self) -> list[SignedCheckpoint]:
        """Every stored checkpoint, in seq order (the columns are not trusted: verify)."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(select(audit_checkpoints).order_by(audit_checkpoints.c.seq))
            return [
                SignedCheckpoint(
                    checkpoint=Checkpoint(seq=r.seq, head=bytes(r.head_hash), time=r.signed_at),
                    jws=r.jws,
                )
                for r in rows
            ]

    async def verify(
        self,
        verify_signature: VerifySignature,
        *,
        extra_checkpoints: tuple[SignedCheckpoint, ...] = (),
        page: int = READ_PAGE,
    ) -> ChainReport:
        """Verify the whole stored chain against the stored (and any extra) checkpoints."""
        stored = await self.checkpoints()
        verifier = ChainVerifier([*stored, *extra_checkpoints], verify_signature)
        next_seq = 1
        while items := await self.read(next_seq, limit=page):
            for item in items:
                if not verifier.feed(item):
                    return verifier.finish()
            next_seq = items[-1].seq + 1
        return verifier.finish()

    # -- background flushing and checkpointing ---------------------------------------------
    def start(
        self,
        witness: AuditWitness | None = None,
        *,
        flush_interval: float = FLUSH_INTERVAL,
        checkpoint_interval: float = CHECKPOINT_INTERVAL,
    ) -> None:
        """Flush every ``flush_interval`` s (sooner when a batch is full) and, with a witness,
        checkpoint every ``checkpoint_interval`` s. Call from the running event loop."""
        if self._task is None:
            self._closing = False
            self._task = asyncio.create_task(
                self._run(witness, flush_interval, checkpoint_interval)
            )

    async def _run(
        self, witness: AuditWitness | None, flush_interval: float, checkpoint_interval: float
    ) -> None:
        loop = asyncio.get_running_loop()
        next_checkpoint = loop.time() + checkpoint_interval
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), flush_interval)
            self._wake.clear()
            if self._closing:  # aclose writes what is left
                return
            try:
                await self.flush()
                if witness is not None and loop.time() >= next_checkpoint:
                    next_checkpoint = loop.time() + checkpoint_interval
                    await self.checkpoint(witness)
            except Exception as exc:  # keep running; the queue is retried next time
                log.warning(
                    "audit log: %s (%s); %d events waiting", type(exc).__name__, exc, self.backlog
                )

    async def aclose(self) -> None:
        """Stop the background task and write what is still queued.

        The task is asked to stop and finishes the write or checkpoint it is in: a
        transaction cut off by a cancellation could leave its connection to be closed later,
        and on SQLite that connection holds the one write lock until then (the last flush
        then waited out the busy timeout and failed). Cancelled only if it does not finish
        within CLOSE_TIMEOUT."""
        task, self._task = self._task, None
        if task is not None:
            self._closing = True
            self._wake.set()
            try:
                await asyncio.wait_for(asyncio.shield(task), CLOSE_TIMEOUT)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        while self._queue:
            await self.flush()
