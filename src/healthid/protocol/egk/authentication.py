"""Identity proofing with the eGK and its PIN, server side (spec eid-egk-wallet-device.md §2.4).

The wallet runs PACE with the CAN and VERIFY PIN.CH on the card, has the card sign our fresh
challenge with PrK.CH.AUT.E256 and sends us the card's C.CH.AUT_E256 certificate with that
signature. :func:`verify_egk_authentication` checks, in this order:

1. input sizes (every bound a named constant);
2. the card key against the closed list (brainpoolP256r1 ECDSA);
3. the end-entity profile (not a CA, keyUsage digitalSignature);
4. the certification path to a configured eGK CA at ``now`` (:mod:`.chain`);
5. the card's signature over the challenge (:mod:`.signature`);
6. certificate type and professionOID of an insured person (:mod:`.profile`);
7. the subject: KVNR (check digit), IK, names.

The challenge is the server's own stored copy: this function never compares it with anything
the wallet sent, so there is no secret to compare here. Consuming it atomically (single use)
and revocation checking (OCSP) are the caller's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

from healthid.protocol.egk.chain import MAX_INTERMEDIATES, extensions_of, validate_path
from healthid.protocol.egk.errors import EgkMalformed
from healthid.protocol.egk.profile import (
    card_public_key,
    check_end_entity,
    check_insured,
    read_subject,
)
from healthid.protocol.egk.signature import MAX_SIGNATURE_BYTES, verify_challenge_signature

MAX_CERTIFICATE_BYTES = 4096  # gematik C.CH.AUT_E256 are 700-900 bytes
MIN_CHALLENGE_BYTES = 16  # a fresh server challenge: at least 128 random bits
MAX_CHALLENGE_BYTES = 1024
_CARD_ID_LABEL = b"healthid-egk-card-id-v1\x00"


@dataclass(frozen=True, kw_only=True)
class EgkIdentity:
    """What a verified eGK authentication proves. Personal fields stay out of ``repr``."""

    kvnr: str = field(repr=False)
    ik: str | None
    given_name: str = field(repr=False)
    family_name: str = field(repr=False)
    card_id: str  # hex SHA-256 over issuer and serial number of the card certificate
    not_after: datetime


def verify_egk_authentication(
    *,
    certificate_der: bytes,
    signature: bytes,
    challenge: bytes,
    trusted_cas: Sequence[x509.Certificate],
    now: datetime,
    intermediates: Sequence[bytes] = (),
    accept_test_kvnr: bool = False,
) -> EgkIdentity:
    """Verify the card's C.CH.AUT_E256 and its signature over ``challenge``.

    ``trusted_cas`` are the configured eGK CA certificates (the only trust anchors);
    ``intermediates`` are untrusted CA certificates the wallet may send along.
    ``accept_test_kvnr`` skips the KVNR check digit for gematik test cards; never in production.
    Raises an :class:`~healthid.protocol.egk.errors.EgkError` subclass on every refusal.
    """
    _check_arguments(now=now, challenge=challenge)
    _check_sizes(certificate_der=certificate_der, signature=signature, intermediates=intermediates)
    leaf = _load(certificate_der)
    key = card_public_key(leaf)
    exts = extensions_of(leaf)
    check_end_entity(exts)
    validate_path(
        leaf,
        intermediates=[_load(der) for der in intermediates],
        trusted_cas=trusted_cas,
        now=now,
    )
    verify_challenge_signature(key, challenge=challenge, signature=signature)
    check_insured(exts)
    subject = read_subject(leaf, accept_test_kvnr=accept_test_kvnr)
    return EgkIdentity(
        kvnr=subject.kvnr,
        ik=subject.ik,
        given_name=subject.given_name,
        family_name=subject.family_name,
        card_id=card_id(leaf),
        not_after=leaf.not_valid_after_utc,
    )


def card_id(cert: x509.Certificate) -> str:
    """Stable identifier of the card: issuer and serial number name one certificate (RFC 5280)."""
    issuer = cert.issuer.public_bytes()
    serial = cert.serial_number
    serial_bytes = serial.to_bytes((serial.bit_length() + 8) // 8, "big", signed=True)
    digest = hashlib.sha256(_CARD_ID_LABEL)
    digest.update(len(issuer).to_bytes(4, "big") + issuer + serial_bytes)
    return digest.hexdigest()


def _check_arguments(*, now: datetime, challenge: bytes) -> None:
    """The server's own arguments: a violation is a bug here, not a bad card (ValueError)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if not MIN_CHALLENGE_BYTES <= len(challenge) <= MAX_CHALLENGE_BYTES:
        raise ValueError("the challenge has an unsupported length")


def _check_sizes(
    *, certificate_der: bytes, signature: bytes, intermediates: Sequence[bytes]
) -> None:
    if not certificate_der or len(certificate_der) > MAX_CERTIFICATE_BYTES:
        raise EgkMalformed("the card certificate is empty or too large")
    if not signature or len(signature) > MAX_SIGNATURE_BYTES:
        raise EgkMalformed("the signature is empty or too large")
    if len(intermediates) > MAX_INTERMEDIATES:
        raise EgkMalformed("too many intermediate certificates")
    if any(not der or len(der) > MAX_CERTIFICATE_BYTES for der in intermediates):
        raise EgkMalformed("an intermediate certificate is empty or too large")


def _load(der: bytes) -> x509.Certificate:
    """The certificate with its key and names parsed now (cryptography parses them lazily),
    so a part that does not parse is this error, not another one later."""
    try:
        certificate = x509.load_der_x509_certificate(der)
        _ = certificate.version, certificate.subject, certificate.issuer
        certificate.public_key()
    except (ValueError, UnsupportedAlgorithm, x509.InvalidVersion):
        raise EgkMalformed("not a DER X.509 certificate") from None
    return certificate
