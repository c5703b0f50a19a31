"""Shared vocabulary of the device attestation verifiers: results, errors, bounds, key helpers.

Source: ../shared/spec/eid-egk-wallet-device.md §4 (device binding and app attestation) and
§4.4 (design consequences: record the secure-element class per registration; it caps the level
of assurance later). Nothing here performs I/O; the clock comes in as an argument.
"""

from __future__ import annotations

import hashlib
import hmac
import io
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import ClassVar

import cbor2
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

# An attestation is a few KiB (App Attest with receipt ~6 KiB, an Android chain ~4 KiB).
# Anything larger is refused before a single byte of it is parsed.
MAX_ATTESTATION_BYTES = 64 * 1024
# App Attest objects nest three containers deep (map > map > array); COSE keys one.
MAX_CBOR_DEPTH = 8
# The server issues the challenge; fewer than 128 bits of it would make guessing feasible.
MIN_CHALLENGE_BYTES = 16
# KeyMint refuses attestation challenges longer than 128 bytes (AOSP IKeyMintDevice).
MAX_CHALLENGE_BYTES = 128
# SHA-256 of the uncompressed P-256 point: the key identifier of every format.
KEY_ID_BYTES = 32
P256_UNCOMPRESSED_POINT_BYTES = 65


class KeyClass(StrEnum):
    """Where the device key lives (spec §4.4); it caps the level of assurance."""

    SECURE_ELEMENT = "secure_element"  # Secure Enclave, StrongBox
    TEE = "tee"  # Android TrustedEnvironment
    SOFTWARE = "software"  # development only


class AttestationFormat(StrEnum):
    """The closed list of attestation formats this package verifies."""

    APPLE_APP_ATTEST = "apple-appattest"
    ANDROID_KEY = "android-key"
    HEALTHID_SOFTWARE = "healthid-software"


class AndroidSecurityLevel(StrEnum):
    """KeyDescription ``SecurityLevel`` (AOSP key attestation schema)."""

    SOFTWARE = "software"  # 0
    TRUSTED_ENVIRONMENT = "trusted_environment"  # 1
    STRONGBOX = "strongbox"  # 2


class VerifiedBootState(StrEnum):
    """RootOfTrust ``VerifiedBootState`` (AOSP key attestation schema)."""

    VERIFIED = "verified"  # 0
    SELF_SIGNED = "self_signed"  # 1
    UNVERIFIED = "unverified"  # 2
    FAILED = "failed"  # 3


@dataclass(frozen=True, kw_only=True, slots=True)
class AppleDetails:
    """What App Attest adds: the receipt, exchangeable later for a fraud metric (§4.1)."""

    receipt: bytes


@dataclass(frozen=True, kw_only=True, slots=True)
class AndroidDetails:
    """What Android Key Attestation adds (§4.2), kept for policy decisions after registration."""

    security_level: AndroidSecurityLevel
    attestation_version: int
    os_version: int | None
    os_patch_level: int | None  # YYYYMM
    verified_boot_state: VerifiedBootState
    device_locked: bool
    package_names: tuple[str, ...]
    user_auth_required: bool
    # serial numbers of the chain (leaf first), to re-check against later revocation lists
    chain_serial_numbers: tuple[int, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class AttestedKey:
    """A device key that passed attestation.

    ``public_key`` is the P-256 SubjectPublicKeyInfo (DER); ``key_id`` is SHA-256 of its
    uncompressed point (App Attest's keyId, spec §4.1 step 5, used for every format).
    ``sign_count`` is the counter to store (App Attest: 0 after attestation).
    ``development`` marks an attestation that production policy must not accept as-is.
    """

    format: AttestationFormat
    key_class: KeyClass
    public_key: bytes
    key_id: bytes
    sign_count: int
    development: bool
    details: AppleDetails | AndroidDetails | None = None


class AttestationError(Exception):
    """The attestation is refused. Messages name the failed rule, never device data."""

    reason: ClassVar[str] = "attestation_refused"


class MalformedAttestationError(AttestationError):
    """The input does not have the structure the format prescribes."""

    reason: ClassVar[str] = "malformed"


class AttestationTooLargeError(AttestationError):
    """The input exceeds a size bound; refused before parsing."""

    reason: ClassVar[str] = "too_large"


class UntrustedChainError(AttestationError):
    """The certificate chain does not lead to a pinned root (or is expired, revoked, misused)."""

    reason: ClassVar[str] = "untrusted_chain"


class ChallengeMismatchError(AttestationError):
    """The attestation is not bound to the challenge this server issued."""

    reason: ClassVar[str] = "challenge_mismatch"


class AppIdentityMismatchError(AttestationError):
    """The attested app (App ID, package name, signing certificate) is not ours."""

    reason: ClassVar[str] = "app_identity_mismatch"


class UnsupportedKeyError(AttestationError):
    """The device key is not an EC P-256 signing key."""

    reason: ClassVar[str] = "unsupported_key"


class InvalidSignatureError(AttestationError):
    """A signature by the device key does not verify."""

    reason: ClassVar[str] = "invalid_signature"


class CounterReplayError(AttestationError):
    """The signature counter did not advance (replayed or cloned assertion)."""

    reason: ClassVar[str] = "counter_replay"


class PolicyViolationError(AttestationError):
    """Well-formed and genuine, but refused by policy (unlocked bootloader, software key, ...)."""

    reason: ClassVar[str] = "policy_violation"


def require_size(data: bytes, limit: int = MAX_ATTESTATION_BYTES) -> None:
    """Refuse oversized input before anything parses it."""
    if len(data) > limit:
        raise AttestationTooLargeError(f"attestation exceeds {limit} bytes")


def require_challenge(challenge: bytes) -> None:
    """Guard against a caller passing an empty or overlong challenge (a programming error)."""
    if not MIN_CHALLENGE_BYTES <= len(challenge) <= MAX_CHALLENGE_BYTES:
        raise ValueError(
            f"a challenge has {MIN_CHALLENGE_BYTES} to {MAX_CHALLENGE_BYTES} bytes",
        )


def require_utc(now: datetime) -> None:
    """The injected clock must be timezone-aware (validity windows are in UTC)."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")


def equal(a: bytes, b: bytes) -> bool:
    """Constant-time comparison (CONVENTIONS 8)."""
    return hmac.compare_digest(a, b)


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def decode_cbor(data: bytes, *, text_keys_only: bool = True) -> object:
    """Decode exactly one CBOR item: bounded depth, definite lengths, no duplicate keys.

    Trailing bytes are refused. ``text_keys_only`` additionally refuses map keys other than
    text and byte strings (COSE keys use integers and pass ``False``).
    """
    stream = io.BytesIO(data)
    decoder = cbor2.CBORDecoder(
        stream,
        max_depth=MAX_CBOR_DEPTH,
        allow_indefinite=False,
        allow_duplicate_keys=False,
        strict_hashable_types=text_keys_only,
    )
    try:
        item = decoder.decode()
    except (cbor2.CBORError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise MalformedAttestationError("not a well-formed CBOR item") from exc
    if stream.tell() != len(data):
        raise MalformedAttestationError("trailing bytes after the CBOR item")
    return item


def cbor_map(item: object, required: frozenset[str]) -> dict[str, object]:
    """A CBOR map whose keys are exactly ``required`` (text)."""
    if not isinstance(item, dict) or set(item) != required:
        raise MalformedAttestationError("unexpected CBOR map layout")
    return {str(key): value for key, value in item.items()}


def cbor_bytes(value: object) -> bytes:
    if not isinstance(value, bytes):
        raise MalformedAttestationError("expected a CBOR byte string")
    return value


def p256_public_key(key: PublicKeyTypes) -> ec.EllipticCurvePublicKey:
    """The key as an EC P-256 public key, or :class:`UnsupportedKeyError`."""
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise UnsupportedKeyError("the device key must be EC P-256")
    return key


def load_p256_spki(spki: bytes) -> ec.EllipticCurvePublicKey:
    """Parse a stored SubjectPublicKeyInfo (DER) that must hold a P-256 key."""
    try:
        key = serialization.load_der_public_key(spki)
    except (ValueError, TypeError) as exc:
        raise UnsupportedKeyError("not a SubjectPublicKeyInfo") from exc
    return p256_public_key(key)


def spki_der(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def uncompressed_point(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def key_id_of(key: ec.EllipticCurvePublicKey) -> bytes:
    """SHA-256 of the uncompressed point (App Attest keyId, spec §4.1 step 5)."""
    return sha256(uncompressed_point(key))
