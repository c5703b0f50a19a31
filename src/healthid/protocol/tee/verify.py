"""Verification of an enclave attestation document, in two layers.

Source: ../shared/spec/vau-and-tee.md §3.2 "Verification" (Signal ``attest/src/dcap.rs``) and
§4.5 (the wallet's rule: verify the enclave before trusting its keys):

1. :func:`verify_sgx_quote` — the quote is a genuine Intel SGX quote (dcap-qvl: PCK chain, CRLs,
   QE identity, signatures, at ``now``; steps 1-2), its platform's TCB status and advisories are
   allowed (step 3), and the enclave is one the policy trusts: DEBUG off (step 5), MRENCLAVE /
   MRSIGNER allow-listed (step 4), ISVPRODID and minimum ISVSVN (§3.1 RA-TLS, §4.5.2).
2. :func:`verify_attestation_document` — the above (or, in development only, simulated
   evidence), then REPORTDATA = SHA-256(canonical claims) ‖ 0^32 (step 6), the client's nonce,
   and the freshness of ``iat``. Only then are the claimed keys the enclave's keys.

Simulated evidence and the policy: by default (``apply_policy_to_simulated=False``) simulated
evidence is only checked for its report-data binding, nonce and freshness, as before; the
development wallet and ``healthid attest verify --dev`` verify the development enclave that way
against their production policy. With ``apply_policy_to_simulated=True`` (the attested key
release between development enclaves) the policy's enclave rules (debug off, MRENCLAVE /
MRSIGNER allow lists, ISVPRODID, minimum ISVSVN) are applied to the evidence's *simulated
report body* (:mod:`.simulated`), and evidence without a body is refused
(:class:`~.simulated.SimulatedMeasurementMissingError`): every policy names a measurement, and
evidence that names none cannot match it. TCB status and advisories have no simulated
counterpart. The simulated body is self-reported: this exercises the rules, it enforces nothing.

Every failed rule raises its own :class:`~healthid.protocol.tee.errors.TeeAttestationError`.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol

from cryptography.hazmat.primitives.asymmetric import ec

from healthid.protocol.tee.claims import (
    AttestationClaims,
    EnclaveKey,
    TeeKind,
    check_nonce,
    report_data_matches,
)
from healthid.protocol.tee.dcap import Collateral, DcapVerdict, verify_quote_signature
from healthid.protocol.tee.document import (
    AttestationDocument,
    EvidenceType,
    parse_attestation_document,
)
from healthid.protocol.tee.errors import (
    AdvisoryNotAllowedError,
    CollateralMissingError,
    DebugEnclaveError,
    IssuedInFutureError,
    MrEnclaveNotAllowedError,
    MrSignerNotAllowedError,
    NonceMismatchError,
    ProductIdMismatchError,
    ReportDataMismatchError,
    SimulatedEvidenceRejectedError,
    StaleDocumentError,
    SvnTooLowError,
    TcbStatusNotAllowedError,
)
from healthid.protocol.tee.policy import TeePolicy
from healthid.protocol.tee.quote import SgxQuote, SgxReportBody, parse_sgx_quote
from healthid.protocol.tee.simulated import (
    SimulatedMeasurementMissingError,
    SimulatedReportBody,
    parse_simulated,
)

# How far an enclave's clock may run ahead of the client's.
CLOCK_SKEW_SECONDS: Final = 60


@dataclass(frozen=True, kw_only=True, slots=True)
class VerifiedQuote:
    """An SGX quote that passed dcap-qvl and the policy."""

    quote: SgxQuote
    tcb_status: str
    advisory_ids: tuple[str, ...]

    @property
    def body(self) -> SgxReportBody:
        return self.quote.body


@dataclass(frozen=True, kw_only=True, slots=True)
class VerifiedAttestation:
    """A verified document: the claimed keys are the attested enclave's keys.

    ``quote`` is None exactly when the evidence was simulated (development: nothing is attested,
    ``simulated`` says so and every caller must surface it).
    """

    claims: AttestationClaims
    quote: VerifiedQuote | None
    # The SIMULATED report body the policy was applied to (apply_policy_to_simulated only).
    simulated_body: SimulatedReportBody | None = None

    @property
    def tee(self) -> TeeKind:
        return self.claims.tee

    @property
    def simulated(self) -> bool:
        return self.quote is None

    @property
    def keys(self) -> tuple[EnclaveKey, ...]:
        return self.claims.keys

    def key(self, role: str) -> EnclaveKey:
        return self.claims.key(role)

    @property
    def identity_key(self) -> ec.EllipticCurvePublicKey:
        return self.claims.identity_key


class EnclaveIdentity(Protocol):
    """What the policy judges of an enclave: an SGX report body, or a simulated one."""

    @property
    def mr_enclave(self) -> bytes: ...

    @property
    def mr_signer(self) -> bytes: ...

    @property
    def isv_prod_id(self) -> int: ...

    @property
    def isv_svn(self) -> int: ...

    @property
    def debug(self) -> bool: ...


def _listed(value: bytes, allowed: Iterable[bytes]) -> bool:
    """Allow-list membership by constant-time comparison (CONVENTIONS 8)."""
    return any(hmac.compare_digest(value, candidate) for candidate in allowed)


def check_tcb(verdict: DcapVerdict, policy: TeePolicy) -> None:
    """Spec §3.2 step 3 / §4.5.1: the TCB status, and every advisory, must be accepted."""
    if verdict.tcb_status not in policy.tcb_statuses:
        raise TcbStatusNotAllowedError(
            f"TCB status {verdict.tcb_status} is not in {sorted(policy.tcb_statuses)}"
        )
    if policy.advisories is None:
        return
    refused = sorted(set(verdict.advisory_ids) - policy.advisories)
    if refused:
        raise AdvisoryNotAllowedError(f"advisories {refused} are not accepted by the policy")


def check_enclave_identity(body: EnclaveIdentity, policy: TeePolicy) -> None:
    """Spec §3.2 steps 4-5 and §4.5.2: debug off, measurements, product, security version."""
    if body.debug and not policy.allow_debug:
        raise DebugEnclaveError("the enclave has the DEBUG attribute: the host can read it")
    if policy.mrenclaves and not _listed(body.mr_enclave, policy.mrenclaves):
        raise MrEnclaveNotAllowedError(f"MRENCLAVE {body.mr_enclave.hex()} is not allowed")
    if policy.mrsigners and not _listed(body.mr_signer, policy.mrsigners):
        raise MrSignerNotAllowedError(f"MRSIGNER {body.mr_signer.hex()} is not allowed")
    if policy.isv_prod_id is not None and body.isv_prod_id != policy.isv_prod_id:
        raise ProductIdMismatchError(
            f"ISVPRODID {body.isv_prod_id} is not the expected {policy.isv_prod_id}"
        )
    if body.isv_svn < policy.min_isv_svn:
        raise SvnTooLowError(f"ISVSVN {body.isv_svn} is below the minimum {policy.min_isv_svn}")


def verify_sgx_quote(
    raw: bytes, *, policy: TeePolicy, collateral: Collateral, now: datetime
) -> VerifiedQuote:
    """Layer 1: a genuine SGX quote, from an accepted platform, of an accepted enclave.

    Parsed strictly first (so trailing or truncated bytes never reach dcap-qvl), then the
    signatures are checked, and only then are the (now authenticated) fields judged.
    """
    quote = parse_sgx_quote(raw)
    verdict = verify_quote_signature(raw, collateral, now)
    check_tcb(verdict, policy)
    check_enclave_identity(quote.body, policy)
    return VerifiedQuote(
        quote=quote, tcb_status=verdict.tcb_status, advisory_ids=verdict.advisory_ids
    )


def check_freshness(iat: int, *, now: datetime, max_age_seconds: int) -> None:
    """``iat`` within [now - max_age, now + skew]; the nonce already proves liveness."""
    now_s = int(now.timestamp())
    if iat > now_s + CLOCK_SKEW_SECONDS:
        raise IssuedInFutureError("the document was issued in the future")
    if iat < now_s - max_age_seconds:
        raise StaleDocumentError(f"the document is older than {max_age_seconds} s")


def verify_attestation_document(
    doc: AttestationDocument | bytes | str | Mapping[str, Any],
    *,
    nonce: bytes,
    policy: TeePolicy,
    collateral: Collateral | None,
    now: datetime,
    allow_simulated: bool = False,
    apply_policy_to_simulated: bool = False,
) -> VerifiedAttestation:
    """Verify ``doc`` against the nonce this client sent and its policy.

    ``collateral`` is Intel collateral for the quote; when None, collateral stapled to the
    document is used (it is Intel-signed and checked by dcap-qvl). ``allow_simulated`` accepts
    simulated evidence and must only be set in development mode (spec §4 honesty rule).
    ``apply_policy_to_simulated`` judges simulated evidence's report body by the policy and
    refuses simulated evidence without one (module docstring); it changes nothing for quotes.
    """
    check_nonce(nonce)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    document = doc if isinstance(doc, AttestationDocument) else parse_attestation_document(doc)
    quote: VerifiedQuote | None = None
    simulated_body: SimulatedReportBody | None = None
    if document.evidence_type is EvidenceType.SIMULATED:
        if not allow_simulated:
            raise SimulatedEvidenceRejectedError(
                "the enclave offers simulated evidence (no hardware protection); "
                "accepted in development mode only"
            )
        simulated = parse_simulated(document.evidence)
        if apply_policy_to_simulated:
            if simulated.body is None:
                raise SimulatedMeasurementMissingError(
                    "the simulated evidence names no measurement; the policy requires one"
                )
            check_enclave_identity(simulated.body, policy)
            simulated_body = simulated.body
        report_data = simulated.report_data
    else:
        chosen = collateral if collateral is not None else document.collateral
        if chosen is None:
            raise CollateralMissingError("no Intel collateral was given or stapled")
        quote = verify_sgx_quote(document.evidence, policy=policy, collateral=chosen, now=now)
        report_data = quote.quote.report_data
    # Spec §3.2 step 6: REPORTDATA[0:32] == SHA-256(claims), REPORTDATA[32:64] == 0.
    if not report_data_matches(report_data, document.claims.canonical):
        raise ReportDataMismatchError("the evidence does not bind these claims")
    if not hmac.compare_digest(document.claims.nonce, nonce):
        raise NonceMismatchError("the document answers another nonce")
    check_freshness(document.claims.iat, now=now, max_age_seconds=policy.max_age_seconds)
    return VerifiedAttestation(claims=document.claims, quote=quote, simulated_body=simulated_body)
