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
MAX_REPORTED_ERRORS = 10_000  # errors listed per import; the rest are counted


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
    """An import file read by the enclave; its chunks are validated and sealed on request."""

    import_id: str
    format: str
    row_count: int
    chunk_count: int
    errors: tuple[RowError, ...]  # errors of the file's structure (rows not even read)
    errors_truncated: int = 0


@dataclass(frozen=True, kw_only=True)
class SealedChunk:
    """One chunk of an import: the sealed valid rows and the errors of the others."""

    rows: tuple[int, ...]  # row numbers, aligned with ``sealed``
    sealed: tuple[SealedPolicyholder, ...]
    errors: tuple[RowError, ...]


class EnclaveClient(Protocol):
    """What the host may ask of the enclave."""

    async def status(self) -> EnclaveStatus: ...

    async def prepare_import(
        self, data: bytes, *, filename: str, fmt: str | None, accept_test_kvnr: bool
    ) -> PreparedImport:
        """Read a registry file inside the enclave and start validating and sealing it."""
        ...

    async def seal_import_chunk(self, import_id: str, index: int) -> SealedChunk:
        """Validate and seal chunk ``index`` (chunks are asked for in order, 0, 1, ...).

        Each valid row gets a fresh pseudonym and data key. A KVNR seen in an earlier chunk
        of the same import is an error.
        """
        ...

    async def discard_import(self, import_id: str) -> None: ...

    async def verify_policyholders(self, sealed: list[SealedPolicyholder]) -> list[str]:
        """Decrypt each policyholder's records; return the pseudonyms that fail integrity."""
        ...
