"""Simulated evidence: the development stand-in for a DCAP quote. It proves NOTHING.

Source: ../shared/spec/vau-and-tee.md §4 ("Honesty rule: in dev the 'TEE' is an ordinary
process ... Every artefact it produces says "tee":"simulated", and production clients must
reject it"). The evidence is the UTF-8 JSON object::

    {"tee": "simulated",
     "WARNING": "no hardware protection: ...",
     "report_data": "<base64url of the 64-byte report data>"}

Anyone can produce it for any claims; it only lets development exercise the document format,
the report-data binding and the nonce check. :func:`verify_attestation_document` refuses it
unless called with ``allow_simulated=True`` (development mode only).
"""

from __future__ import annotations

import json
from typing import Final

from healthid.protocol.jose.keys import b64url_encode as _b64
from healthid.protocol.tee.claims import b64url_decode_strict
from healthid.protocol.tee.errors import DocumentTooLargeError, MalformedSimulatedEvidenceError
from healthid.protocol.tee.quote import REPORT_DATA_BYTES

SIMULATED_TEE: Final = "simulated"
SIMULATED_WARNING: Final = (
    "no hardware protection: simulated TEE for development only; reject in production"
)
MAX_SIMULATED_EVIDENCE_BYTES: Final = 1024
_MEMBERS: Final = frozenset({"tee", "WARNING", "report_data"})


def make_simulated_evidence(report_data: bytes) -> bytes:
    """The simulated evidence carrying ``report_data`` (64 bytes)."""
    if len(report_data) != REPORT_DATA_BYTES:
        raise ValueError(f"report data has {REPORT_DATA_BYTES} bytes")
    doc = {"tee": SIMULATED_TEE, "WARNING": SIMULATED_WARNING, "report_data": _b64(report_data)}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")


def parse_simulated_evidence(evidence: bytes) -> bytes:
    """The report data of simulated evidence, after checking its marker and warning."""
    if len(evidence) > MAX_SIMULATED_EVIDENCE_BYTES:
        raise DocumentTooLargeError("the simulated evidence is too large")
    try:
        doc = json.loads(evidence.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise MalformedSimulatedEvidenceError("the simulated evidence is not JSON") from None
    if not isinstance(doc, dict) or set(doc) != _MEMBERS:
        raise MalformedSimulatedEvidenceError(f"simulated evidence has exactly {sorted(_MEMBERS)}")
    if doc["tee"] != SIMULATED_TEE or doc["WARNING"] != SIMULATED_WARNING:
        raise MalformedSimulatedEvidenceError("the simulated evidence lacks its marker or warning")
    try:
        report_data = b64url_decode_strict(doc["report_data"])
    except ValueError:
        raise MalformedSimulatedEvidenceError("report_data is not base64url") from None
    if len(report_data) != REPORT_DATA_BYTES:
        raise MalformedSimulatedEvidenceError(f"report_data is not {REPORT_DATA_BYTES} bytes")
    return report_data
