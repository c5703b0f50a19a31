"""Registry import on the host: hand the file to the enclave, store what it seals.

All-or-nothing (issue #2): the enclave validates every row first; rows whose KVNR is already
in the registry are errors too; only then are the sealed rows written, in one transaction.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError

from healthid.enclave.api import EnclaveClient, PreparedImport, RowError
from healthid.store.sql.policyholders import PolicyholderRepository

SEAL_BATCH = 2000  # rows sealed and inserted per round trip


@dataclass(frozen=True, kw_only=True)
class ImportResult:
    format: str
    imported: int
    errors: tuple[RowError, ...]
    errors_truncated: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors


def _already_present(prepared: PreparedImport, existing: set[bytes]) -> tuple[RowError, ...]:
    return tuple(
        RowError(row=row, field="kvnr", reason="already in the registry")
        for row, digest in zip(prepared.rows, prepared.kvnr_indexes, strict=True)
        if digest in existing
    )


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
    if prepared.errors:
        return ImportResult(
            format=prepared.format,
            imported=0,
            errors=prepared.errors,
            errors_truncated=prepared.errors_truncated,
        )
    try:
        duplicates = _already_present(
            prepared, await repo.existing_kvnr_indexes(prepared.kvnr_indexes)
        )
        if duplicates:
            return ImportResult(format=prepared.format, imported=0, errors=duplicates)
        stamp = int(now())
        if on_prepared is not None:
            on_prepared(prepared.row_count)
        async with repo.engine.begin() as conn:
            for start in range(0, prepared.row_count, SEAL_BATCH):
                stop = min(start + SEAL_BATCH, prepared.row_count)
                sealed = await enclave.seal_import(prepared.import_id, start, stop)
                await repo.insert_batch(conn, sealed, stamp)
                if progress is not None:
                    progress(stop - start)
    except IntegrityError:
        reason = "a KVNR of this file was stored by a concurrent import; nothing was imported"
        return ImportResult(
            format=prepared.format,
            imported=0,
            errors=(RowError(row=0, field="kvnr", reason=reason),),
        )
    finally:
        await enclave.discard_import(prepared.import_id)
    return ImportResult(format=prepared.format, imported=prepared.row_count, errors=())
