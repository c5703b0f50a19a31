"""Certification path from a card certificate to a configured eGK CA.

gemSpec_PKI TUC_PKI_018 ("Zertifikatsprüfung in der TI"), restricted to what the C.CH.AUT
profile needs (RFC 5280 §6.1): every certificate is signed by the next with an algorithm from
a closed list, is valid at ``now`` and carries no critical extension we do not process; every
issuer is a CA (basicConstraints cA, keyUsage keyCertSign, pathLenConstraint honoured). The
path must end at one of the configured eGK CAs (in the TI: the eGK CAs of the TSL); a CA
certificate the caller sends along is only ever an untrusted intermediate. Revocation (OCSP,
TUC_PKI_006) needs the network and is the caller's job.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID, SignatureAlgorithmOID

from healthid.protocol.egk.errors import EgkExpired, EgkMalformed, EgkUntrusted

MAX_INTERMEDIATES = 2  # TI: the eGK CA is itself the TSL anchor; allow a little slack, no more
# gemSpec_Krypt: TI X.509 ECC is brainpoolP256r1 with ecdsa-with-SHA256. Closed lists.
CERTIFICATE_SIGNATURE_ALGORITHMS = frozenset({SignatureAlgorithmOID.ECDSA_WITH_SHA256})
CA_CURVES: tuple[type[ec.EllipticCurve], ...] = (ec.BrainpoolP256R1,)
# RFC 5280 §4.2: refuse a certificate with a critical extension we do not process
PROCESSED_CRITICAL_EXTENSIONS = frozenset(
    {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.CERTIFICATE_POLICIES,
        ExtensionOID.ADMISSIONS,
    }
)


def extensions_of(cert: x509.Certificate) -> x509.Extensions:
    """All extensions, parsed; a malformed or duplicated extension is refused."""
    try:
        return cert.extensions
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType):
        raise EgkMalformed("a certificate extension is malformed") from None


def validate_path(
    leaf: x509.Certificate,
    *,
    intermediates: Sequence[x509.Certificate],
    trusted_cas: Sequence[x509.Certificate],
    now: datetime,
) -> tuple[x509.Certificate, ...]:
    """Return the path ``(leaf, *intermediates, anchor)`` or raise an :class:`EgkError`."""
    if not trusted_cas:
        raise EgkUntrusted("no eGK CA is configured")  # nothing is trusted unless configured
    path = [leaf]
    pool = list(intermediates)
    for _ in range(MAX_INTERMEDIATES + 1):
        child = path[-1]
        if child.signature_algorithm_oid not in CERTIFICATE_SIGNATURE_ALGORITHMS:
            raise EgkUntrusted("a certificate is signed with an algorithm outside the list")
        anchors = _issuers(child, trusted_cas)
        if anchors:
            path.append(_prefer_valid(anchors, now))
            _check_path(path, now)
            return tuple(path)
        issuers = _issuers(child, pool)
        if not issuers:
            raise EgkUntrusted("the certificate was not issued by a configured eGK CA")
        issuer = _prefer_valid(issuers, now)
        pool.remove(issuer)  # each intermediate at most once: no loops
        path.append(issuer)
    raise EgkUntrusted("the certification path is too long")


def _issuers(
    child: x509.Certificate, candidates: Sequence[x509.Certificate]
) -> list[x509.Certificate]:
    """Candidates whose name and key issued ``child`` (several: a CA renewed on the same key)."""
    found = []
    for candidate in candidates:
        if candidate.subject != child.issuer:
            continue
        try:
            child.verify_directly_issued_by(candidate)
        except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
            continue
        found.append(candidate)
    return found


def _prefer_valid(issuers: list[x509.Certificate], now: datetime) -> x509.Certificate:
    for issuer in issuers:
        if _is_valid_at(issuer, now):
            return issuer
    return issuers[0]  # _check_path reports it as expired


def _is_valid_at(cert: x509.Certificate, now: datetime) -> bool:
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def _check_path(path: list[x509.Certificate], now: datetime) -> None:
    leaf, *issuers = path
    if not _is_valid_at(leaf, now):
        if now < leaf.not_valid_before_utc:
            raise EgkExpired("the card certificate is not yet valid")
        raise EgkExpired("the card certificate has expired")
    _check_critical_extensions(leaf)
    for below, issuer in enumerate(issuers):
        if not _is_valid_at(issuer, now):
            raise EgkExpired("an eGK CA certificate is outside its validity period")
        _check_critical_extensions(issuer)
        _check_issuer(issuer, intermediates_below=below)


def _check_critical_extensions(cert: x509.Certificate) -> None:
    for ext in extensions_of(cert):
        if ext.critical and ext.oid not in PROCESSED_CRITICAL_EXTENSIONS:
            raise EgkUntrusted("a certificate has an unsupported critical extension")


def _check_issuer(issuer: x509.Certificate, *, intermediates_below: int) -> None:
    """RFC 5280 §6.1.4 (k), (l), (n) for a certificate that issued another."""
    exts = extensions_of(issuer)
    try:
        constraints = exts.get_extension_for_class(x509.BasicConstraints).value
        usage = exts.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise EgkUntrusted("an issuer lacks basicConstraints or keyUsage") from None
    if not constraints.ca:
        raise EgkUntrusted("an issuer is not a CA")
    if constraints.path_length is not None and intermediates_below > constraints.path_length:
        raise EgkUntrusted("an issuer's path length constraint is exceeded")
    if not usage.key_cert_sign:
        raise EgkUntrusted("an issuer's key is not for certificate signing")
    key = issuer.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, CA_CURVES):
        raise EgkUntrusted("an issuer's key is outside the list")
