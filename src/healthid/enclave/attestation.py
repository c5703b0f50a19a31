"""The enclave's side of attestation: evidence providers and the attestation document.

Source: ../shared/spec/vau-and-tee.md §3.1 (Gramine's ``/dev/attestation`` pseudo-filesystem:
write ``SHA-256(claims) ‖ 0^32`` to ``user_report_data``, then read ``quote``) and §4.4 (the
document). Two providers:

- :class:`GramineEvidence` (production, Gramine-SGX with ``sgx.remote_attestation = "dcap"``):
  an Intel SGX DCAP quote over the report data;
- :class:`SimulatedEvidence` (development): a structure that says ``"tee": "simulated"`` and
  carries a warning; it protects nothing and verifiers reject it outside development mode.

The host serves the document at ``GET /attestation?nonce=`` by calling the enclave's
``attest(nonce)``, which calls :func:`make_attestation_document`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Final, Protocol

from cryptography.hazmat.primitives.asymmetric import ec

from healthid.protocol.jose.keys import public_jwk
from healthid.protocol.tee import (
    AttestationDocument,
    Collateral,
    TeeAttestationError,
    TeeKind,
    build_claims,
    make_simulated_evidence,
    parse_sgx_quote,
)
from healthid.protocol.tee.document import EVIDENCE_FOR_TEE
from healthid.protocol.tee.quote import MAX_QUOTE_BYTES, REPORT_DATA_BYTES, trim_zero_padding

# Gramine's attestation pseudo-filesystem (Gramine Documentation/attestation.rst).
DEV_ATTESTATION: Final = Path("/dev/attestation")
ATTESTATION_TYPE_FILE: Final = "attestation_type"
USER_REPORT_DATA_FILE: Final = "user_report_data"
QUOTE_FILE: Final = "quote"
DCAP: Final = "dcap"  # manifest sgx.remote_attestation = "dcap"
# Bound on what is read from the quote file (a quote buffer may carry zero padding).
MAX_QUOTE_READ_BYTES: Final = 2 * MAX_QUOTE_BYTES


class GramineAttestationError(RuntimeError):
    """``/dev/attestation`` is missing, not DCAP, or returned a quote not over our data."""


class EvidenceProvider(Protocol):
    """Produces evidence binding 64 bytes of report data to this enclave."""

    @property
    def tee(self) -> TeeKind: ...

    def evidence(self, report_data: bytes) -> bytes: ...


def _check_report_data(report_data: bytes) -> None:
    if len(report_data) != REPORT_DATA_BYTES:
        raise ValueError(f"report data has {REPORT_DATA_BYTES} bytes")


@dataclass(frozen=True, kw_only=True)
class SimulatedEvidence:
    """Development only: evidence that says it is simulated. NO hardware protection."""

    @property
    def tee(self) -> TeeKind:
        return TeeKind.SIMULATED

    def evidence(self, report_data: bytes) -> bytes:
        _check_report_data(report_data)
        return make_simulated_evidence(report_data)


@dataclass(frozen=True, kw_only=True)
class GramineEvidence:
    """Production: an SGX DCAP quote from Gramine's ``/dev/attestation``.

    ``attestation_dir`` is configurable so tests can point it at a fake directory. Writing the
    report data and reading the quote are one step under a lock: the pseudo-files are shared
    by every thread of the enclave process.
    """

    attestation_dir: Path = DEV_ATTESTATION
    _lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    @property
    def tee(self) -> TeeKind:
        return TeeKind.SGX

    def check_available(self) -> None:
        """Refuse to start unless Gramine offers DCAP attestation (CONVENTIONS 7)."""
        try:
            kind = (self.attestation_dir / ATTESTATION_TYPE_FILE).read_text().strip()
        except OSError as exc:
            raise GramineAttestationError(
                f"{self.attestation_dir} is not available: not running under Gramine-SGX"
            ) from exc
        if kind != DCAP:
            raise GramineAttestationError(
                f"Gramine attestation type is {kind!r}, not {DCAP!r} "
                '(manifest: sgx.remote_attestation = "dcap")'
            )

    def evidence(self, report_data: bytes) -> bytes:
        """Spec §3.1: write the 64-byte report data, read the quote Gramine made over it."""
        _check_report_data(report_data)
        with self._lock:
            try:
                (self.attestation_dir / USER_REPORT_DATA_FILE).write_bytes(report_data)
                with (self.attestation_dir / QUOTE_FILE).open("rb") as f:
                    raw = f.read(MAX_QUOTE_READ_BYTES + 1)
            except OSError as exc:
                raise GramineAttestationError(f"Gramine attestation failed: {exc}") from exc
        if len(raw) > MAX_QUOTE_READ_BYTES:
            raise GramineAttestationError("Gramine returned an oversized quote")
        quote = trim_zero_padding(raw)
        try:
            parsed = parse_sgx_quote(quote)
        except TeeAttestationError as exc:
            raise GramineAttestationError(f"Gramine returned no SGX quote: {exc}") from exc
        if parsed.report_data != report_data:
            raise GramineAttestationError("Gramine's quote is not over the given report data")
        return quote


def enclave_jwk(role: str, key: ec.EllipticCurvePublicKey, *, use: str = "sig") -> dict[str, str]:
    """The public JWK of an enclave key, with ``kid`` = its role."""
    return public_jwk(key, kid=role, use=use)


def make_attestation_document(
    *,
    keys: Mapping[str, ec.EllipticCurvePublicKey | Mapping[str, str]],
    nonce: bytes,
    provider: EvidenceProvider,
    now: datetime,
    collateral: Collateral | None = None,
) -> AttestationDocument:
    """The attestation document for ``nonce``: claims bound into the provider's evidence.

    ``keys`` maps roles (``identity`` required) to public keys: an EC key becomes a ``sig`` JWK
    with ``kid`` = role; a mapping is taken as the JWK. ``collateral`` (Intel-signed) may be
    stapled so clients need not fetch it (spec §4.4).
    """
    jwks = {
        role: enclave_jwk(role, key) if isinstance(key, ec.EllipticCurvePublicKey) else dict(key)
        for role, key in keys.items()
    }
    claims = build_claims(tee=provider.tee, nonce=nonce, issued_at=now, keys=jwks)
    evidence = provider.evidence(claims.report_data)
    return AttestationDocument(
        claims=claims,
        evidence_type=EVIDENCE_FOR_TEE[provider.tee],
        evidence=evidence,
        collateral=collateral,
    )
