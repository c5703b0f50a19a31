"""The narrow, typed interface between the host (untrusted) and the enclave (trusted).

Everything that crosses it is ciphertext, pseudonyms, keyed hashes, counts or errors that name
rows and fields only. The in-process implementation (embedded default) lives in
``healthid.enclave.service``; the RPC transport of the enclave issue implements the same
Protocol. Host code imports this module and nothing else from ``healthid.enclave``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

TEE_SIMULATED = "simulated"


class EnclaveError(Exception):
    """The enclave refused a request. The message is safe to show: no personal data."""


class UnknownImport(EnclaveError):  # noqa: N818 (a refusal, named after what is missing)
    """The import id is unknown or has expired."""


@dataclass(frozen=True, kw_only=True)
class EnclaveStatus:
    tee: str  # "simulated" (development, no protection) or "sgx"
    root_key_id: str
    version: str
    warning: str | None = None


@dataclass(frozen=True, kw_only=True)
class RowError:
    """A problem in an import file: the row and field, never the value (it may be personal)."""

    row: int  # CSV: line number (header = 1); JSON: 1-based array position; 0: the file
    field: str
    reason: str

    def __str__(self) -> str:
        where = "file" if self.row == 0 else f"row {self.row}"
        return f"{where}, field {self.field}: {self.reason}"


@dataclass(frozen=True, kw_only=True)
class SealedRecord:
    record_type: str
    version: int
    ciphertext: bytes


@dataclass(frozen=True, kw_only=True)
class SealedPolicyholder:
    """Everything the host stores about one policyholder: opaque to the host."""

    pseudonym: str
    kvnr_index: bytes
    root_key_id: str
    wrapped_key: bytes | None  # None: the data key was deleted (crypto-shredded)
    records: tuple[SealedRecord, ...]
    lookup_indexes: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True, kw_only=True)
class PreparedImport:
    """The enclave's verdict on an import file, before anything is sealed or stored."""

    import_id: str
    format: str
    row_count: int
    rows: tuple[int, ...]  # row numbers of the valid rows, aligned with kvnr_indexes
    kvnr_indexes: tuple[bytes, ...]
    errors: tuple[RowError, ...]
    errors_truncated: int = 0


class EnclaveClient(Protocol):
    """What the host may ask of the enclave."""

    async def status(self) -> EnclaveStatus: ...

    async def prepare_import(
        self, data: bytes, *, filename: str, fmt: str | None, accept_test_kvnr: bool
    ) -> PreparedImport:
        """Parse and validate a registry file inside the enclave; keep it there for sealing."""
        ...

    async def seal_import(self, import_id: str, start: int, stop: int) -> list[SealedPolicyholder]:
        """Seal rows ``[start, stop)`` of a prepared import (fresh pseudonyms and data keys)."""
        ...

    async def discard_import(self, import_id: str) -> None: ...

    async def verify_policyholders(self, sealed: list[SealedPolicyholder]) -> list[str]:
        """Decrypt each policyholder's records; return the pseudonyms that fail integrity."""
        ...
