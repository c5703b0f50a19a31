"""Registry import on the host: hand the file to the enclave, store what it seals.

All or nothing (issue #2): the whole import is one database transaction. The enclave reads the
file and validates and seals it chunk by chunk (in worker processes, ahead of the host); the
host stores each sealed chunk while the next one is being sealed. Every error in the file is
collected (rows whose KVNR is already in the registry included); if there is any, the
transaction is rolled back and nothing is stored.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError

from healthid.enclave.api import MAX_REPORTED_ERRORS, EnclaveClient, RowError
from healthid.store.sql.policyholders import PolicyholderRepository


@dataclass(frozen=True, kw_only=True)
class ImportResult:
    format: str
    imported: int
    errors: tuple[RowError, ...]
    errors_truncated: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors


class _Rollback(Exception):  # noqa: N818 - control flow: leave the transaction, store nothing
    pass


async def import_registry(
    enclave: EnclaveClient,
    repo: PolicyholderRepository,
    data: bytes,
    *,
    filename: str,
    fmt: str | None = None,
    accept_test_kvnr: bool = False,
    progress: Callable[[int], None] | None = None,
    on_prepared: Callable[[int], None] | None = None,
    now: Callable[[], float] = time.time,
) -> ImportResult:
    prepared = await enclave.prepare_import(
        data, filename=filename, fmt=fmt, accept_test_kvnr=accept_test_kvnr
    )
    errors = list(prepared.errors)
    truncated = prepared.errors_truncated
    imported = 0
    if on_prepared is not None:
        on_prepared(prepared.row_count)
    stamp = int(now())
    try:
        async with repo.engine.begin() as conn:
            for index in range(prepared.chunk_count):
                chunk = await enclave.seal_import_chunk(prepared.import_id, index)
                errors += chunk.errors
                if not errors:
                    existing = await repo.existing_kvnr_indexes(
                        [s.kvnr_index for s in chunk.sealed], conn=conn
                    )
                    errors += [
                        RowError(row=row, field="kvnr", reason="already in the registry")
                        for row, s in zip(chunk.rows, chunk.sealed, strict=True)
                        if s.kvnr_index in existing
                    ]
                if not errors:
                    await repo.insert_batch(conn, chunk.sealed, stamp)
                    imported += len(chunk.sealed)
                if progress is not None:
                    progress(len(chunk.rows) + len(chunk.errors))
            if errors:
                raise _Rollback
    except _Rollback:
        pass
    except IntegrityError:
        reason = "a KVNR of this file was stored by a concurrent import; nothing was imported"
        errors = [RowError(row=0, field="kvnr", reason=reason)]
    finally:
        await enclave.discard_import(prepared.import_id)
    if errors:
        errors.sort(key=lambda e: e.row)
        truncated += max(0, len(errors) - MAX_REPORTED_ERRORS)
        return ImportResult(
            format=prepared.format,
            imported=0,
            errors=tuple(errors[:MAX_REPORTED_ERRORS]),
            errors_truncated=truncated,
        )
    return ImportResult(format=prepared.format, imported=imported, errors=())
