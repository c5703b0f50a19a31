"""Errors of the enclave attestation layer: one flat hierarchy under :class:`TeeAttestationError`.

Every refusal is its own class directly under :class:`TeeAttestationError`, so a caller (and a
test) can tell which rule refused the document, while a boundary maps all of them in one place
(CONVENTIONS 4). Messages name the failed rule and never echo document content beyond the
measurement values an operator needs to fix a policy (CONVENTIONS 15: nothing personal here).

:class:`TeePolicyError` is separate: a bad policy is a configuration error, found at start-up
(CONVENTIONS 7), not a refused attestation.
"""

from __future__ import annotations

from typing import ClassVar


class TeeAttestationError(ValueError):
    """An enclave attestation document is refused."""

    reason: ClassVar[str] = "attestation_refused"


class DocumentTooLargeError(TeeAttestationError):
    """The document (or its quote, claims or collateral) exceeds a bound checked before parsing."""

    reason = "too_large"


class MalformedDocumentError(TeeAttestationError):
    """Not a well-formed attestation document: JSON, members, claims, keys or base64url."""

    reason = "malformed_document"


class MalformedQuoteError(TeeAttestationError):
    """The evidence is not a well-formed DCAP quote (lengths, version, key type)."""

    reason = "malformed_quote"


class UnsupportedQuoteError(TeeAttestationError):
    """A well-formed quote of a kind this verifier does not accept (TDX, foreign QE vendor)."""

    reason = "unsupported_quote"


class TeeKindMismatchError(TeeAttestationError):
    """The claimed ``tee`` does not match the ``evidence_type`` (or the quote's TEE type)."""

    reason = "tee_kind_mismatch"


class SimulatedEvidenceRejectedError(TeeAttestationError):
    """Simulated evidence offers no hardware protection; accepted in development mode only."""

    reason = "simulated_rejected"


class MalformedSimulatedEvidenceError(TeeAttestationError):
    """The simulated evidence lacks its marker, warning or 64-byte report data."""

    reason = "malformed_simulated_evidence"


class CollateralMissingError(TeeAttestationError):
    """A DCAP quote needs Intel collateral; none was passed and none is stapled."""

    reason = "collateral_missing"


class MalformedCollateralError(TeeAttestationError):
    """The collateral is not dcap-qvl's ``QuoteCollateralV3`` JSON."""

    reason = "malformed_collateral"


class QuoteVerificationError(TeeAttestationError):
    """dcap-qvl refused the quote: a signature, the PCK chain, a CRL, the QE identity, or the
    collateral's validity period at ``now``."""

    reason = "quote_invalid"


class TcbStatusNotAllowedError(TeeAttestationError):
    """The platform's TCB status is not in the policy's allow list."""

    reason = "tcb_status_not_allowed"


class AdvisoryNotAllowedError(TeeAttestationError):
    """The platform is affected by an Intel security advisory the policy does not accept."""

    reason = "advisory_not_allowed"


class DebugEnclaveError(TeeAttestationError):
    """The enclave runs in debug mode: its memory is readable by the host."""

    reason = "debug_enclave"


class MrEnclaveNotAllowedError(TeeAttestationError):
    """MRENCLAVE (the enclave's code and data measurement) is not in the allow list."""

    reason = "mrenclave_not_allowed"


class MrSignerNotAllowedError(TeeAttestationError):
    """MRSIGNER (the hash of the enclave signing key) is not in the allow list."""

    reason = "mrsigner_not_allowed"


class ProductIdMismatchError(TeeAttestationError):
    """ISVPRODID is not the product the policy names."""

    reason = "isv_prod_id_mismatch"


class SvnTooLowError(TeeAttestationError):
    """ISVSVN is below the policy's minimum security version."""

    reason = "isv_svn_too_low"


class ReportDataMismatchError(TeeAttestationError):
    """REPORTDATA is not SHA-256(canonical claims) followed by 32 zero bytes."""

    reason = "report_data_mismatch"


class NonceMismatchError(TeeAttestationError):
    """The attested nonce is not the nonce this client sent."""

    reason = "nonce_mismatch"


class StaleDocumentError(TeeAttestationError):
    """``iat`` is older than the policy's maximum age."""

    reason = "stale"


class IssuedInFutureError(TeeAttestationError):
    """``iat`` lies further in the future than the allowed clock skew."""

    reason = "issued_in_future"


class TeePolicyError(ValueError):
    """The attestation policy (configuration) is invalid; refuse to start."""
