"""The enclave attestation document served at ``GET /attestation?nonce=``.

Source: ../shared/spec/vau-and-tee.md §4.4 (claims, ``report_data = SHA-256(claims) ‖ 0^32``,
evidence, optionally stapled collateral). A UTF-8 JSON object with exactly these members::

    {"claims": {...},                  # healthid.protocol.tee.claims (bound by the evidence)
     "evidence_type": "sgx-dcap" | "simulated",
     "evidence": "<base64url>",        # the DCAP quote, or simulated evidence (development)
     "collateral": {...}}              # optional: dcap-qvl QuoteCollateralV3 JSON (Intel-signed)

``evidence_type`` follows the ``tee`` claim: ``sgx`` ↔ ``sgx-dcap``, ``simulated`` ↔
``simulated``. base64url is RFC 4648 §5 without padding, in its canonical spelling
(:func:`~healthid.protocol.tee.claims.b64url_decode_strict`). Duplicate member names, floats,
``NaN`` and ``Infinity`` are refused while parsing, so the claims have one meaning and one
canonical form.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, NoReturn

from healthid.protocol.jose.keys import b64url_encode
from healthid.protocol.tee.claims import (
    AttestationClaims,
    TeeKind,
    b64url_decode_strict,
    parse_claims,
)
from healthid.protocol.tee.dcap import Collateral
from healthid.protocol.tee.errors import (
    DocumentTooLargeError,
    MalformedDocumentError,
    TeeKindMismatchError,
)
from healthid.protocol.tee.quote import MAX_QUOTE_BYTES

# Claims (16 KiB) + base64url quote (~22 KiB) + stapled collateral (256 KiB) + slack.
MAX_DOCUMENT_BYTES: Final = 320 * 1024
# The base64url of the largest quote we parse.
MAX_EVIDENCE_CHARS: Final = (MAX_QUOTE_BYTES * 4 + 2) // 3
REQUIRED_MEMBERS: Final = frozenset({"claims", "evidence_type", "evidence"})
OPTIONAL_MEMBERS: Final = frozenset({"collateral"})


class EvidenceType(StrEnum):
    """The closed list of evidence formats."""

    SGX_DCAP = "sgx-dcap"  # an Intel SGX DCAP quote v3 (production)
    SIMULATED = "simulated"  # development only: healthid.protocol.tee.simulated


EVIDENCE_FOR_TEE: Final = {
    TeeKind.SGX: EvidenceType.SGX_DCAP,
    TeeKind.SIMULATED: EvidenceType.SIMULATED,
}


@dataclass(frozen=True, kw_only=True, slots=True)
class AttestationDocument:
    """A parsed (not yet verified) attestation document."""

    claims: AttestationClaims
    evidence_type: EvidenceType
    evidence: bytes
    collateral: Collateral | None = None

    def __post_init__(self) -> None:
        if EVIDENCE_FOR_TEE[self.claims.tee] is not self.evidence_type:
            raise TeeKindMismatchError(
                f"tee {self.claims.tee.value!r} comes with {EVIDENCE_FOR_TEE[self.claims.tee]}"
                f" evidence, not {self.evidence_type.value!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "claims": self.claims.to_json_object(),
            "evidence_type": self.evidence_type.value,
            "evidence": b64url_encode(self.evidence),
        }
        if self.collateral is not None:
            doc["collateral"] = self.collateral.to_object()
        return doc

    def to_json(self) -> bytes:
        """The document as compact UTF-8 JSON (the body of ``GET /attestation``)."""
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False).encode()


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for name, value in pairs:
        if name in obj:
            raise MalformedDocumentError(f"the document repeats the member {name!r}")
        obj[name] = value
    return obj


def _refuse_float(text: str) -> NoReturn:
    raise MalformedDocumentError("the document holds a non-integer number")


def _refuse_constant(text: str) -> NoReturn:
    raise MalformedDocumentError(f"the document holds {text}")


def loads_strict(data: bytes | str) -> object:
    """JSON without duplicate names, floats, NaN or Infinity, bounded by MAX_DOCUMENT_BYTES."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise DocumentTooLargeError(f"the document exceeds {MAX_DOCUMENT_BYTES} bytes")
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        return json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_float=_refuse_float,
            parse_constant=_refuse_constant,
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        if isinstance(exc, MalformedDocumentError):
            raise
        raise MalformedDocumentError("the document is not UTF-8 JSON") from None


def parse_attestation_document(data: bytes | str | Mapping[str, Any]) -> AttestationDocument:
    """Parse the document's structure and claims; nothing is verified yet."""
    obj = data if isinstance(data, Mapping) else loads_strict(data)
    if not isinstance(obj, Mapping):
        raise MalformedDocumentError("the document is not a JSON object")
    members = set(obj)
    if not REQUIRED_MEMBERS <= members <= REQUIRED_MEMBERS | OPTIONAL_MEMBERS:
        raise MalformedDocumentError(
            f"the document has {sorted(REQUIRED_MEMBERS)} and optionally {sorted(OPTIONAL_MEMBERS)}"
        )
    try:
        evidence_type = EvidenceType(obj["evidence_type"])
    except ValueError:
        raise MalformedDocumentError("evidence_type is neither sgx-dcap nor simulated") from None
    evidence = obj["evidence"]
    if not isinstance(evidence, str) or len(evidence) > MAX_EVIDENCE_CHARS:
        raise MalformedDocumentError("the evidence is not a bounded base64url string")
    try:
        raw_evidence = b64url_decode_strict(evidence)
    except ValueError:
        raise MalformedDocumentError("the evidence is not base64url") from None
    collateral = obj.get("collateral")
    return AttestationDocument(
        claims=parse_claims(obj["claims"]),
        evidence_type=evidence_type,
        evidence=raw_evidence,
        collateral=None if collateral is None else Collateral.from_object(collateral),
    )
