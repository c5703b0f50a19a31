"""The enclave service: implements :class:`healthid.enclave.api.EnclaveClient` in-process.

This object is what runs inside the trust boundary. In the embedded default the host calls it
directly; the enclave issue puts it behind an RPC server in its own attested process.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime

from healthid import __version__
from healthid.enclave import api
from healthid.enclave.registry.formats import (
    ParseOptions,
    RegistryFormat,
    detect_format,
    parse_registry,
)
from healthid.enclave.registry.model import (
    RECORD_TYPE,
    RECORD_VERSION,
    Policyholder,
    name_birth_lookup_value,
)
from healthid.enclave.sealing import SIMULATED_WARNING
from healthid.enclave.vault import Vault, VaultError, WrappedKey

KVNR_INDEX = "kvnr"
NAME_BIRTH_INDEX = "name_birth"
MAX_PENDING_IMPORTS = 4
PENDING_IMPORT_TTL = 3600.0  # seconds a prepared import stays in enclave memory
MAX_SEAL_BATCH = 10_000


@dataclass(frozen=True, kw_only=True)
class _Pending:
    rows: list[Policyholder]
    created: float


class Enclave:
    """The trusted service over a :class:`Vault`."""

    def __init__(
        self,
        vault: Vault,
        *,
        tee: str = api.TEE_SIMULATED,
        allow_test_kvnr: bool = False,
        clock: Callable[[], float] = time.monotonic,
        today: Callable[[], date] = lambda: datetime.now(UTC).date(),
    ) -> None:
        self._vault = vault
        self._tee = tee
        self._allow_test_kvnr = allow_test_kvnr
        self._clock = clock
        self._today = today
        self._pending: OrderedDict[str, _Pending] = OrderedDict()

    # -- status ---------------------------------------------------------------------------
    async def status(self) -> api.EnclaveStatus:
        warning = SIMULATED_WARNING if self._tee == api.TEE_SIMULATED else None
        return api.EnclaveStatus(
            tee=self._tee, root_key_id=self._vault.root_key_id, version=__version__, warning=warning
        )

    # -- registry import ------------------------------------------------------------------
    def kvnr_index(self, kvnr: str) -> bytes:
        return self._vault.blind_index(KVNR_INDEX, kvnr)

    async def prepare_import(
        self, data: bytes, *, filename: str, fmt: str | None, accept_test_kvnr: bool
    ) -> api.PreparedImport:
        if accept_test_kvnr and not self._allow_test_kvnr:
            raise api.EnclaveError("test KVNRs are accepted in development mode only")
        try:
            registry_format = RegistryFormat(fmt) if fmt else detect_format(filename, data)
        except ValueError:
            raise api.EnclaveError(f"unknown format {fmt!r}: use csv, json or gematik") from None
        parsed = parse_registry(
            data,
            registry_format,
            ParseOptions(today=self._today(), accept_test_kvnr=accept_test_kvnr),
        )
        errors = tuple(
            api.RowError(row=e.row, field=e.field, reason=e.reason) for e in parsed.errors
        )
        import_id = secrets.token_urlsafe(16)
        if not errors:
            self._expire_pending()
            if len(self._pending) >= MAX_PENDING_IMPORTS:
                raise api.EnclaveError("too many imports in progress; try again later")
            holders = [h for _, h in parsed.rows]
            self._pending[import_id] = _Pending(rows=holders, created=self._clock())
        return api.PreparedImport(
            import_id=import_id,
            format=registry_format.value,
            row_count=len(parsed.rows),
            rows=tuple(n for n, _ in parsed.rows),
            kvnr_indexes=tuple(self.kvnr_index(h.kvnr) for _, h in parsed.rows),
            errors=errors,
            errors_truncated=parsed.errors_truncated,
        )

    def _expire_pending(self) -> None:
        now = self._clock()
        for key in [k for k, p in self._pending.items() if now - p.created > PENDING_IMPORT_TTL]:
            del self._pending[key]

    async def seal_import(
        self, import_id: str, start: int, stop: int
    ) -> list[api.SealedPolicyholder]:
        self._expire_pending()
        pending = self._pending.get(import_id)
        if pending is None:
            raise api.UnknownImport("unknown or expired import id")
        if not 0 <= start <= stop <= len(pending.rows) or stop - start > MAX_SEAL_BATCH:
            raise api.EnclaveError(f"invalid row range (at most {MAX_SEAL_BATCH} per call)")
        return [self.seal_policyholder(h) for h in pending.rows[start:stop]]

    async def discard_import(self, import_id: str) -> None:
        self._pending.pop(import_id, None)

    def seal_policyholder(self, holder: Policyholder) -> api.SealedPolicyholder:
        """New pseudonym, new data key, one encrypted master-data record, blind indexes."""
        vault = self._vault
        pseudonym = vault.new_pseudonym()
        data_key = vault.new_data_key()
        wrapped = vault.wrap(pseudonym, data_key)
        blob = vault.seal(
            data_key,
            pseudonym=pseudonym,
            record_type=RECORD_TYPE,
            version=RECORD_VERSION,
            plaintext=holder.to_cbor(),
        )
        lookup = name_birth_lookup_value(holder.family_name, holder.given_name, holder.birth_date)
        return api.SealedPolicyholder(
            pseudonym=pseudonym,
            kvnr_index=self.kvnr_index(holder.kvnr),
            root_key_id=wrapped.root_key_id,
            wrapped_key=wrapped.blob,
            records=(
                api.SealedRecord(record_type=RECORD_TYPE, version=RECORD_VERSION, ciphertext=blob),
            ),
            lookup_indexes=((NAME_BIRTH_INDEX, vault.blind_index(NAME_BIRTH_INDEX, lookup)),),
        )

    # -- reading (inside the enclave only) ------------------------------------------------
    def open_policyholder(self, sealed: api.SealedPolicyholder) -> Policyholder:
        """Decrypt a policyholder's master data. Raises VaultError on any mismatch.

        Besides the AEAD check, the decrypted KVNR must hash to the row's blind index, so a
        whole row (key and record) copied under another KVNR index is refused too.
        """
        vault = self._vault
        if sealed.wrapped_key is None:
            raise VaultError(f"policyholder {sealed.pseudonym} was crypto-shredded")
        data_key = vault.unwrap(
            sealed.pseudonym, WrappedKey(root_key_id=sealed.root_key_id, blob=sealed.wrapped_key)
        )
        record = next((r for r in sealed.records if r.record_type == RECORD_TYPE), None)
        if record is None:
            raise VaultError(f"policyholder {sealed.pseudonym} has no master-data record")
        plaintext = vault.open(
            data_key,
            pseudonym=sealed.pseudonym,
            record_type=record.record_type,
            version=record.version,
            blob=record.ciphertext,
        )
        holder = Policyholder.from_cbor(plaintext)
        if not secrets.compare_digest(self.kvnr_index(holder.kvnr), sealed.kvnr_index):
            raise VaultError(f"policyholder {sealed.pseudonym} does not match its KVNR index")
        return holder

    async def verify_policyholders(self, sealed: list[api.SealedPolicyholder]) -> list[str]:
        failed: list[str] = []
        for item in sealed:
            try:
                self.open_policyholder(item)
            except (VaultError, ValueError, TypeError):
                failed.append(item.pseudonym)
        return failed
