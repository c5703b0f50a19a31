"""Certificate chain validation shared by App Attest and Android Key Attestation.

Source: ../shared/spec/eid-egk-wallet-device.md §4.1 step 1 ("verify the x5c chain to the Apple
App Attestation Root CA") and §4.2 ("the chain up to a Google attestation root (pin the roots);
signatures and validity"). A deliberately small path validator, not a general RFC 5280 path
builder: the chain is given in order (leaf first), each certificate must be signed by the next,
and the last one must be a pinned root or be signed by one. A self-signed certificate inside the
chain is never trusted for being self-signed; only the configured roots are trust anchors.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import ExtensionOID, SignatureAlgorithmOID

from .common import (
    AttestationTooLargeError,
    MalformedAttestationError,
    UntrustedChainError,
    require_utc,
)

# Android RKP chains are five certificates including the root; ATTEST_KEY chains add one.
MAX_CHAIN_LENGTH = 8
# The largest real attestation certificate (RSA-4096 root) is below 1.5 KiB.
MAX_CERTIFICATE_BYTES = 16 * 1024
# Issuers' clocks may run slightly ahead of ours; expiry gets no grace.
NOT_BEFORE_SKEW = timedelta(minutes=5)
MIN_RSA_ISSUER_BITS = 2048
# Closed list: ECDSA and RSASSA-PKCS1-v1_5 with SHA-2 (what Apple and Google sign with).
ALLOWED_SIGNATURE_ALGORITHMS = frozenset(
    {
        SignatureAlgorithmOID.ECDSA_WITH_SHA256,
        SignatureAlgorithmOID.ECDSA_WITH_SHA384,
        SignatureAlgorithmOID.ECDSA_WITH_SHA512,
        SignatureAlgorithmOID.RSA_WITH_SHA256,
        SignatureAlgorithmOID.RSA_WITH_SHA384,
        SignatureAlgorithmOID.RSA_WITH_SHA512,
    }
)
ALLOWED_ISSUER_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
# RFC 5280 §4.2: a certificate with a critical extension we do not process is refused.
PROCESSED_CRITICAL_EXTENSIONS = frozenset({ExtensionOID.BASIC_CONSTRAINTS, ExtensionOID.KEY_USAGE})


def load_certificates(ders: Sequence[bytes]) -> tuple[x509.Certificate, ...]:
    """Parse a leaf-first chain of DER certificates within the length and size bounds."""
    if not ders:
        raise MalformedAttestationError("the certificate chain is empty")
    if len(ders) > MAX_CHAIN_LENGTH:
        raise AttestationTooLargeError(f"a chain has at most {MAX_CHAIN_LENGTH} certificates")
    certificates = []
    for der in ders:
        if not isinstance(der, bytes):
            raise MalformedAttestationError("a certificate is a DER byte string")
        if len(der) > MAX_CERTIFICATE_BYTES:
            raise AttestationTooLargeError(f"a certificate has at most {MAX_CERTIFICATE_BYTES} B")
        try:
            certificates.append(parsed_certificate(der))
        except (ValueError, UnsupportedAlgorithm) as exc:  # InvalidVersion is neither
            raise MalformedAttestationError("a certificate is not valid DER X.509") from exc
    return tuple(certificates)


def parsed_certificate(der: bytes) -> x509.Certificate:
    """A certificate whose lazily parsed parts (version, key, names) are parsed now: a part
    that does not parse fails here, as the certificate's parse error, not later in a check.

    ``cryptography`` reads the public key and the names only when first used, and
    ``InvalidVersion`` is not a ValueError: both surface here as ValueError.
    """
    try:
        certificate = x509.load_der_x509_certificate(der)
        _ = certificate.version, certificate.subject, certificate.issuer
        certificate.public_key()
    except x509.InvalidVersion as exc:
        raise ValueError("unsupported X.509 version") from exc
    return certificate


def verify_chain(
    leaf_and_intermediates: Sequence[bytes],
    roots: Sequence[x509.Certificate],
    now: datetime,
    *,
    revoked_serials: frozenset[int] = frozenset(),
) -> tuple[x509.Certificate, ...]:
    """Validate a leaf-first chain against pinned roots at ``now``; return it without the root.

    A trailing copy of a pinned root (same DER, or same subject and public key: Google has
    re-issued its RSA root with the same key) is accepted and replaced by the pinned one.
    Checked for every certificate below the anchor: signature by the next certificate (closed
    algorithm list), name chaining, validity at ``now``, no unprocessed critical extension,
    serial not in ``revoked_serials``; for every issuer: basicConstraints CA, keyUsage
    keyCertSign when present, pathLenConstraint. The leaf must not be a CA.
    """
    require_utc(now)
    if not roots:
        raise ValueError("at least one pinned root is required")
    chain = load_certificates(leaf_and_intermediates)
    pinned = _pinned(chain[-1], roots)
    if pinned is not None:
        chain = chain[:-1]
        if not chain:
            raise MalformedAttestationError("the chain holds only a root")
        anchor = pinned
    else:
        anchor = _issuing_root(chain[-1], roots)
    _require_not_ca(chain[0])
    issuers = (*chain[1:], anchor)
    for depth, (certificate, issuer) in enumerate(zip(chain, issuers, strict=True)):
        _require_signed_by(certificate, issuer)
        _require_issuer(issuer, intermediates_below=depth)
        _require_valid_at(certificate, now)
        _require_critical_extensions_processed(certificate)
    for certificate in (*chain, anchor):
        if certificate.serial_number in revoked_serials:
            raise UntrustedChainError("a certificate of the chain is revoked")
    return chain


def _der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(Encoding.DER)


def _spki(certificate: x509.Certificate) -> bytes:
    return certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _pinned(
    certificate: x509.Certificate, roots: Sequence[x509.Certificate]
) -> x509.Certificate | None:
    """The pinned root this certificate is a copy of (full DER, or subject and key), if any."""
    for root in roots:
        if _der(certificate) == _der(root):
            return root
        if certificate.subject == root.subject and _spki(certificate) == _spki(root):
            return root
    return None


def _issuing_root(
    certificate: x509.Certificate, roots: Sequence[x509.Certificate]
) -> x509.Certificate:
    for root in roots:
        try:
            _require_signed_by(certificate, root)
        except UntrustedChainError:
            continue
        return root
    raise UntrustedChainError("the chain does not lead to a pinned root")


def _require_signed_by(certificate: x509.Certificate, issuer: x509.Certificate) -> None:
    if certificate.signature_algorithm_oid not in ALLOWED_SIGNATURE_ALGORITHMS:
        raise UntrustedChainError("certificate signature algorithm not allowed")
    key = issuer.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_ISSUER_BITS:
            raise UntrustedChainError("issuer RSA key too short")
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ALLOWED_ISSUER_CURVES):
            raise UntrustedChainError("issuer curve not allowed")
    else:
        raise UntrustedChainError("issuer key type not allowed")
    try:
        # checks issuer name == subject name, then the signature
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm) as exc:
        raise UntrustedChainError("a certificate is not signed by the next one") from exc


def _basic_constraints(certificate: x509.Certificate) -> x509.BasicConstraints | None:
    try:
        return certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return None
    except ValueError as exc:  # duplicate or undecodable extensions
        raise MalformedAttestationError("certificate extensions are malformed") from exc


def _require_not_ca(leaf: x509.Certificate) -> None:
    constraints = _basic_constraints(leaf)
    if constraints is not None and constraints.ca:
        raise UntrustedChainError("the leaf certificate is a CA")


def _require_issuer(issuer: x509.Certificate, *, intermediates_below: int) -> None:
    """RFC 5280 §4.2.1.9 and §4.2.1.3 for a certificate that signed another one."""
    constraints = _basic_constraints(issuer)
    if constraints is None or not constraints.ca:
        raise UntrustedChainError("an issuing certificate is not a CA")
    if constraints.path_length is not None and intermediates_below > constraints.path_length:
        raise UntrustedChainError("pathLenConstraint exceeded")
    try:
        usage = issuer.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not usage.key_cert_sign:
        raise UntrustedChainError("an issuing certificate may not sign certificates")


def _require_valid_at(certificate: x509.Certificate, now: datetime) -> None:
    if now < certificate.not_valid_before_utc - NOT_BEFORE_SKEW:
        raise UntrustedChainError("a certificate of the chain is not yet valid")
    if now > certificate.not_valid_after_utc:
        raise UntrustedChainError("a certificate of the chain has expired")


def _require_critical_extensions_processed(certificate: x509.Certificate) -> None:
    try:
        extensions = list(certificate.extensions)
    except ValueError as exc:
        raise MalformedAttestationError("certificate extensions are malformed") from exc
    for extension in extensions:
        if extension.critical and extension.oid not in PROCESSED_CRITICAL_EXTENSIONS:
            raise UntrustedChainError("a certificate has an unprocessed critical extension")
