"""Simulated evidence: the development stand-in for a DCAP quote. It proves NOTHING.

Source: ../shared/spec/vau-and-tee.md §4 ("Honesty rule: in dev the 'TEE' is an ordinary
process ... Every artefact it produces says "tee":"simulated", and production clients must
reject it"). The evidence is the UTF-8 JSON object::

    {"tee": "simulated",
     "WARNING": "no hardware protection: ...",
     "report_data": "<base64url of the 64-byte report data>",
     "report_body": {                  # optional: a SIMULATED report body (below)
         "mrenclave": "<64 hex>", "mrsigner": "<64 hex>",
         "isv_prod_id": 1, "isv_svn": 1, "debug": false}}

Anyone can produce it for any claims; it only lets development exercise the document format,
the report-data binding and the nonce check. :func:`verify_attestation_document` refuses it
unless called with ``allow_simulated=True`` (development mode only).

**The simulated report body** stands in for the fields of the SGX ``REPORTBODY`` that a
:class:`~healthid.protocol.tee.policy.TeePolicy` judges (spec §3.2: MRENCLAVE, MRSIGNER,
ISVPRODID, ISVSVN, the DEBUG attribute), so that the policy rules (a measurement allow list,
the product, a minimum security version, debug off) can be exercised between development
enclaves, e.g. by the attested key release (``healthid.enclave.key_release``). It is
**self-reported and unauthenticated**: nothing signs it (not even the report data covers it),
so a development enclave can claim any measurement. It makes the policy *testable*, not
*enforceable*; only a DCAP quote, signed by Intel's quoting enclave, is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from healthid.protocol.jose.keys import b64url_encode as _b64
from healthid.protocol.tee.claims import b64url_decode_strict
from healthid.protocol.tee.errors import (
    DocumentTooLargeError,
    MalformedSimulatedEvidenceError,
    TeeAttestationError,
)
from healthid.protocol.tee.quote import MEASUREMENT_BYTES, REPORT_DATA_BYTES

SIMULATED_TEE: Final = "simulated"
SIMULATED_WARNING: Final = (
    "no hardware protection: simulated TEE for development only; reject in production"
)
MAX_SIMULATED_EVIDENCE_BYTES: Final = 1024
MAX_ISV_VALUE: Final = 0xFFFF  # ISVPRODID and ISVSVN are u16 in SGX
_MEMBERS: Final = frozenset({"tee", "WARNING", "report_data"})
_BODY: Final = "report_body"
_BODY_MEMBERS: Final = frozenset({"mrenclave", "mrsigner", "isv_prod_id", "isv_svn", "debug"})


class SimulatedMeasurementMissingError(TeeAttestationError):
    """Simulated evidence without a report body, where the policy must judge one (a policy
    always names a measurement; evidence without one cannot match it)."""

    reason = "simulated_measurement_missing"


@dataclass(frozen=True, kw_only=True, slots=True)
class SimulatedReportBody:
    """SIMULATED stand-in for the policy-relevant SGX report fields. Proves nothing.

    The attribute names are those of :class:`~healthid.protocol.tee.quote.SgxReportBody`, so
    the verifier judges both with one function (``check_enclave_identity``).
    """

    mr_enclave: bytes
    mr_signer: bytes
    isv_prod_id: int
    isv_svn: int
    debug: bool

    def __post_init__(self) -> None:
        for name in ("mr_enclave", "mr_signer"):
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != MEASUREMENT_BYTES:
                raise ValueError(f"{name} has {MEASUREMENT_BYTES} bytes")
        for name in ("isv_prod_id", "isv_svn"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} is an integer")
            if not 0 <= value <= MAX_ISV_VALUE:
                raise ValueError(f"{name} is a 16-bit unsigned integer")
        if not isinstance(self.debug, bool):
            raise ValueError("debug is a boolean")

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (the ``report_body`` member of simulated evidence)."""
        return {
            "mrenclave": self.mr_enclave.hex(),
            "mrsigner": self.mr_signer.hex(),
            "isv_prod_id": self.isv_prod_id,
            "isv_svn": self.isv_svn,
            "debug": self.debug,
        }

    @classmethod
    def from_dict(cls, obj: object) -> SimulatedReportBody:
        """Parse the JSON form strictly (exactly its five members); ValueError otherwise."""
        if not isinstance(obj, Mapping) or set(obj) != _BODY_MEMBERS:
            raise ValueError(f"a simulated report body has exactly {sorted(_BODY_MEMBERS)}")
        return cls(
            mr_enclave=_hex32(obj["mrenclave"], "mrenclave"),
            mr_signer=_hex32(obj["mrsigner"], "mrsigner"),
            isv_prod_id=obj["isv_prod_id"],
            isv_svn=obj["isv_svn"],
            debug=obj["debug"],
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class ParsedSimulatedEvidence:
    """Simulated evidence, parsed: its report data and, if it has one, its report body."""

    report_data: bytes
    body: SimulatedReportBody | None


def _hex32(value: object, name: str) -> bytes:
    if not isinstance(value, str) or len(value) != 2 * MEASUREMENT_BYTES:
        raise ValueError(f"{name} is not {2 * MEASUREMENT_BYTES} hex digits")
    if value != value.lower():
        raise ValueError(f"{name} is not lowercase hex")  # one spelling per value
    return bytes.fromhex(value)


def make_simulated_evidence(report_data: bytes, body: SimulatedReportBody | None = None) -> bytes:
    """The simulated evidence carrying ``report_data`` (64 bytes) and optionally ``body``."""
    if len(report_data) != REPORT_DATA_BYTES:
        raise ValueError(f"report data has {REPORT_DATA_BYTES} bytes")
    doc: dict[str, Any] = {
        "tee": SIMULATED_TEE,
        "WARNING": SIMULATED_WARNING,
        "report_data": _b64(report_data),
    }
    if body is not None:
        doc[_BODY] = body.to_dict()
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")


def parse_simulated(evidence: bytes) -> ParsedSimulatedEvidence:
    """Simulated evidence after checking its marker, warning, report data and body."""
    if len(evidence) > MAX_SIMULATED_EVIDENCE_BYTES:
        raise DocumentTooLargeError("the simulated evidence is too large")
    try:
        doc = json.loads(evidence.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: deep nesting
        raise MalformedSimulatedEvidenceError("the simulated evidence is not JSON") from None
    if not isinstance(doc, dict) or not _MEMBERS <= set(doc) <= _MEMBERS | {_BODY}:
        raise MalformedSimulatedEvidenceError(
            f"simulated evidence has exactly {sorted(_MEMBERS)} and optionally {_BODY}"
        )
    if doc["tee"] != SIMULATED_TEE or doc["WARNING"] != SIMULATED_WARNING:
        raise MalformedSimulatedEvidenceError("the simulated evidence lacks its marker or warning")
    try:
        report_data = b64url_decode_strict(doc["report_data"])
    except ValueError:
        raise MalformedSimulatedEvidenceError("report_data is not base64url") from None
    if len(report_data) != REPORT_DATA_BYTES:
        raise MalformedSimulatedEvidenceError(f"report_data is not {REPORT_DATA_BYTES} bytes")
    body = None
    if _BODY in doc:
        try:
            body = SimulatedReportBody.from_dict(doc[_BODY])
        except ValueError as exc:
            raise MalformedSimulatedEvidenceError(f"report_body: {exc}") from None
    return ParsedSimulatedEvidence(report_data=report_data, body=body)


def parse_simulated_evidence(evidence: bytes) -> bytes:
    """The report data of simulated evidence, after checking its marker and warning."""
    return parse_simulated(evidence).report_data
