"""Intel DCAP collateral and quote signature verification, delegated to ``dcap-qvl``.

Source: ../shared/spec/vau-and-tee.md §3.3 (dcap-qvl 0.7, Phala, MIT: works offline) and §3.2
"Verification" steps 1-3 (Signal ``attest/src/dcap.rs``): dcap-qvl checks the PCK certificate
chain up to its pinned Intel SGX Root CA with the CRLs, the QE report signature and the QE
identity, the enclave report signature by the attestation key, and evaluates the TCB level
from the signed TCB info, all at the given time (expired TCB info or CRLs are refused). It
returns the TCB status and the Intel advisories; the policy decides on them
(:mod:`healthid.protocol.tee.verify`).

Pure: dcap-qvl is given everything (quote, collateral, time); it does no I/O here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import dcap_qvl  # type: ignore[import-untyped]  # ships .pyi stubs but no py.typed

from healthid.protocol.tee.errors import (
    DocumentTooLargeError,
    MalformedCollateralError,
    QuoteVerificationError,
)

# Collateral: two CRLs, TCB info, QE identity and three issuer chains (samples: 14 and 16 KB).
MAX_COLLATERAL_BYTES: Final = 256 * 1024
COLLATERAL_MEMBERS: Final = frozenset(
    {
        "pck_crl_issuer_chain",
        "root_ca_crl",
        "pck_crl",
        "tcb_info_issuer_chain",
        "tcb_info",
        "tcb_info_signature",
        "qe_identity_issuer_chain",
        "qe_identity",
        "qe_identity_signature",
    }
)
# dcap-qvl's error messages are capped in ours (they name the failed step, no secrets).
MAX_REASON_CHARS: Final = 300


@dataclass(frozen=True, kw_only=True, slots=True)
class Collateral:
    """Intel collateral for one quote, as dcap-qvl's ``QuoteCollateralV3`` JSON.

    Every part is signed by Intel (TCB info and QE identity by the TCB signing key, the CRLs by
    their CAs), so collateral may come from anywhere, even stapled to the document by the
    untrusted host (spec §4.4): dcap-qvl verifies it, including its validity at ``now``.
    """

    json: str

    @classmethod
    def from_json(cls, text: str) -> Collateral:
        """Parse and check collateral JSON (as ``dcap_qvl.QuoteCollateralV3.to_json``)."""
        if len(text) > MAX_COLLATERAL_BYTES:
            raise DocumentTooLargeError(f"the collateral exceeds {MAX_COLLATERAL_BYTES} bytes")
        try:
            obj = json.loads(text)
        except ValueError:
            raise MalformedCollateralError("the collateral is not JSON") from None
        return cls.from_object(obj)

    @classmethod
    def from_object(cls, obj: object) -> Collateral:
        """Collateral from an already parsed JSON object (e.g. stapled to a document)."""
        if not isinstance(obj, dict) or not COLLATERAL_MEMBERS <= set(obj):
            raise MalformedCollateralError("the collateral lacks QuoteCollateralV3 members")
        text = json.dumps(obj)
        if len(text) > MAX_COLLATERAL_BYTES:
            raise DocumentTooLargeError(f"the collateral exceeds {MAX_COLLATERAL_BYTES} bytes")
        _native(text)
        return cls(json=text)

    def to_object(self) -> dict[str, Any]:
        obj: dict[str, Any] = json.loads(self.json)
        return obj


@dataclass(frozen=True, kw_only=True, slots=True)
class DcapVerdict:
    """What dcap-qvl established: the quote is genuine; its platform's TCB status."""

    tcb_status: str
    advisory_ids: tuple[str, ...]


def _native(text: str) -> Any:
    try:
        return dcap_qvl.QuoteCollateralV3.from_json(text)
    except (ValueError, TypeError) as exc:
        reason = str(exc)[:MAX_REASON_CHARS]
        raise MalformedCollateralError(f"dcap-qvl refused the collateral: {reason}") from None


def verify_quote_signature(raw: bytes, collateral: Collateral, now: datetime) -> DcapVerdict:
    """``dcap_qvl.verify(quote, collateral, now)``: genuine Intel quote, TCB status at ``now``."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    native = _native(collateral.json)
    try:
        report = dcap_qvl.verify(raw, native, int(now.timestamp()))
    except Exception as exc:  # dcap-qvl raises ValueError; refuse on anything it raises
        reason = " ".join(str(exc).split())[:MAX_REASON_CHARS]
        raise QuoteVerificationError(f"dcap-qvl refused the quote: {reason}") from None
    return DcapVerdict(
        tcb_status=str(report.status),
        advisory_ids=tuple(str(a) for a in report.advisory_ids),
    )
