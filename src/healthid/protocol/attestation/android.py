"""Android Key Attestation verification.

Source: ../shared/spec/eid-egk-wallet-device.md §4.2 (developer.android.com key-attestation;
AOSP ``platform/external/keyattestation``). The wallet generates its P-256 device key in the
AndroidKeyStore with ``setAttestationChallenge(challenge)`` and sends the certificate chain
(leaf first). Checks, in order: chain to a pinned Google root (signatures, validity, optional
revocation serials); the KeyDescription extension only in the leaf; security level TEE or
StrongBox (Software refused); EC P-256 signing key generated in hardware; challenge; package
name and signing-certificate digest; root of trust (verified boot, locked bootloader); OS patch
level; optionally user authentication. Fetching Google's revocation list is I/O and stays out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from .chain import verify_chain
from .common import (
    MAX_ATTESTATION_BYTES,
    AndroidDetails,
    AndroidSecurityLevel,
    AppIdentityMismatchError,
    AttestationFormat,
    AttestationTooLargeError,
    AttestedKey,
    ChallengeMismatchError,
    KeyClass,
    MalformedAttestationError,
    PolicyViolationError,
    UnsupportedKeyError,
    VerifiedBootState,
    decode_cbor,
    equal,
    key_id_of,
    p256_public_key,
    require_challenge,
    require_size,
    spki_der,
)
from .key_description import (
    KEY_DESCRIPTION_OID,
    ParsedAuthorizationList,
    ParsedKeyDescription,
    ParsedRootOfTrust,
    parse_key_description,
)

KEY_DESCRIPTION_EXTENSION = x509.ObjectIdentifier(KEY_DESCRIPTION_OID)
# KeyMint enumerations (AOSP hardware/interfaces/security/keymint)
KM_ALGORITHM_EC = 3
KM_EC_CURVE_P256 = 1
KM_PURPOSE_SIGN = 2
KM_ORIGIN_GENERATED = 0
P256_KEY_BITS = 256
SIGNING_CERT_DIGEST_BYTES = 32  # SHA-256 of the APK signing certificate
PATCH_LEVEL_PATTERN = re.compile(r"(19|20)\d\d(0[1-9]|1[0-2])")  # YYYYMM
# osPatchLevel is YYYYMM; a few implementations report YYYYMMDD.
DAY_DIGITS_DIVISOR = 100
YYYYMMDD_MIN = 10_000_000

_KEY_CLASS = {
    AndroidSecurityLevel.TRUSTED_ENVIRONMENT: KeyClass.TEE,
    AndroidSecurityLevel.STRONGBOX: KeyClass.SECURE_ELEMENT,
}


@dataclass(frozen=True, kw_only=True, slots=True)
class AndroidConfig:
    """Pinned roots, our app's identity and the device policy.

    ``min_os_patch_level`` is YYYYMM. ``allow_unlocked`` admits unlocked / unverified-boot
    devices as ``development`` keys (never in production). ``require_user_auth`` demands a key
    that needs user authentication (``noAuthRequired`` absent, ``userAuthType`` present).
    """

    roots: tuple[x509.Certificate, ...]
    package_names: frozenset[str]
    signing_cert_digests: frozenset[bytes]
    require_strongbox: bool = False
    min_os_patch_level: int | None = None
    allow_unlocked: bool = False
    require_user_auth: bool = False

    def __post_init__(self) -> None:
        if not self.roots or not all(isinstance(r, x509.Certificate) for r in self.roots):
            raise ValueError("at least one pinned Google attestation root is required")
        if not self.package_names or not all(self.package_names):
            raise ValueError("at least one package name is required")
        if not self.signing_cert_digests or any(
            len(d) != SIGNING_CERT_DIGEST_BYTES for d in self.signing_cert_digests
        ):
            raise ValueError("signing certificate digests are SHA-256 (32 bytes)")
        if self.min_os_patch_level is not None and not PATCH_LEVEL_PATTERN.fullmatch(
            str(self.min_os_patch_level)
        ):
            raise ValueError("min_os_patch_level is YYYYMM")


def verify_android_key_attestation(
    attestation: bytes,
    *,
    challenge: bytes,
    config: AndroidConfig,
    now: datetime,
    revoked_serials: frozenset[int] = frozenset(),
) -> AttestedKey:
    """:func:`verify_android_attestation` for the wire format: a CBOR array of the DER
    certificates of ``KeyStore.getCertificateChain()``, leaf first (like App Attest's x5c)."""
    require_size(attestation)
    chain = decode_cbor(attestation)
    if not isinstance(chain, list) or not all(isinstance(c, bytes) for c in chain):
        raise MalformedAttestationError("an Android attestation is an array of certificates")
    return verify_android_attestation(
        chain, challenge=challenge, config=config, now=now, revoked_serials=revoked_serials
    )


def verify_android_attestation(
    chain: Sequence[bytes],
    *,
    challenge: bytes,
    config: AndroidConfig,
    now: datetime,
    revoked_serials: frozenset[int] = frozenset(),
) -> AttestedKey:
    """Verify an Android Key Attestation certificate chain (leaf first) for ``challenge``.

    ``revoked_serials`` are serial numbers from Google's attestation status list, fetched by
    the caller.
    """
    require_challenge(challenge)
    if sum(len(der) for der in chain) > MAX_ATTESTATION_BYTES:
        raise AttestationTooLargeError(f"attestation exceeds {MAX_ATTESTATION_BYTES} bytes")
    certificates = verify_chain(chain, config.roots, now, revoked_serials=revoked_serials)
    public_key = p256_public_key(certificates[0].public_key())
    description = parse_key_description(_leaf_key_description(certificates))
    key_class = _key_class(description, config)
    hardware = description.hardware_enforced
    _require_p256_signing_key(hardware)
    if not equal(description.challenge, challenge):
        raise ChallengeMismatchError("attestationChallenge does not match")
    package_names = _require_app_identity(description, config)
    root_of_trust = _require_root_of_trust(hardware, config)
    os_patch_level = _require_patch_level(hardware, config)
    user_auth = not hardware.no_auth_required and hardware.user_auth_type is not None
    if config.require_user_auth and not user_auth:
        raise PolicyViolationError("the key does not require user authentication")
    return AttestedKey(
        format=AttestationFormat.ANDROID_KEY,
        key_class=key_class,
        public_key=spki_der(public_key),
        key_id=key_id_of(public_key),
        sign_count=0,
        development=not _is_secure_boot(root_of_trust),
        details=AndroidDetails(
            security_level=description.attestation_security_level,
            attestation_version=description.attestation_version,
            os_version=hardware.os_version,
            os_patch_level=os_patch_level,
            verified_boot_state=root_of_trust.verified_boot_state,
            device_locked=root_of_trust.device_locked,
            package_names=package_names,
            user_auth_required=user_auth,
            chain_serial_numbers=tuple(c.serial_number for c in certificates),
        ),
    )


def _leaf_key_description(certificates: tuple[x509.Certificate, ...]) -> bytes:
    """The leaf's KeyDescription; no other certificate may carry one (chain extension attack:
    a genuine attested key signing a forged leaf below itself)."""
    values = [_key_description_value(c) for c in certificates]
    if values[0] is None:
        raise MalformedAttestationError("the leaf has no KeyDescription extension")
    if any(v is not None for v in values[1:]):
        raise MalformedAttestationError("KeyDescription found below the leaf")
    return values[0]


def _key_description_value(certificate: x509.Certificate) -> bytes | None:
    try:
        extension = certificate.extensions.get_extension_for_oid(KEY_DESCRIPTION_EXTENSION)
    except x509.ExtensionNotFound:
        return None
    except ValueError as exc:
        raise MalformedAttestationError("certificate extensions are malformed") from exc
    if not isinstance(extension.value, x509.UnrecognizedExtension):
        raise MalformedAttestationError("unexpected KeyDescription extension type")
    return extension.value.value


def _key_class(description: ParsedKeyDescription, config: AndroidConfig) -> KeyClass:
    """§4.2: attestationSecurityLevel TrustedEnvironment(1) or StrongBox(2); Software refused.

    The key lives at keyMintSecurityLevel, which must be the same level.
    """
    level = description.attestation_security_level
    if level not in _KEY_CLASS:
        raise PolicyViolationError("software-backed attestation refused")
    if description.keymint_security_level != level:
        raise PolicyViolationError("KeyMint and attestation security levels differ")
    if config.require_strongbox and level is not AndroidSecurityLevel.STRONGBOX:
        raise PolicyViolationError("a StrongBox key is required")
    return _KEY_CLASS[level]


def _require_p256_signing_key(hardware: ParsedAuthorizationList) -> None:
    """§4.2 purpose/algorithm, enforced by the secure hardware (hardwareEnforced list)."""
    if hardware.algorithm != KM_ALGORITHM_EC:
        raise UnsupportedKeyError("the attested key is not an EC key")
    if hardware.ec_curve is not None and hardware.ec_curve != KM_EC_CURVE_P256:
        raise UnsupportedKeyError("the attested key is not on P-256")
    if hardware.key_size is not None and hardware.key_size != P256_KEY_BITS:
        raise UnsupportedKeyError("the attested key is not 256 bits")
    if hardware.purposes is None or KM_PURPOSE_SIGN not in hardware.purposes:
        raise UnsupportedKeyError("the attested key may not sign")
    if hardware.origin != KM_ORIGIN_GENERATED:
        raise PolicyViolationError("the key was not generated in secure hardware")


def _require_app_identity(
    description: ParsedKeyDescription, config: AndroidConfig
) -> tuple[str, ...]:
    """§4.2 attestationApplicationId: every package and every signing digest must be ours."""
    application_id = (
        description.software_enforced.application_id or description.hardware_enforced.application_id
    )
    if application_id is None:
        raise AppIdentityMismatchError("attestationApplicationId missing")
    names, digests = application_id.package_names, application_id.signature_digests
    if not names or not set(names) <= config.package_names:
        raise AppIdentityMismatchError("package name is not ours")
    if not digests or not all(_known_digest(d, config) for d in digests):
        raise AppIdentityMismatchError("signing certificate digest is not ours")
    return names


def _known_digest(digest: bytes, config: AndroidConfig) -> bool:
    # no early exit: every configured digest is compared in constant time
    return sum(equal(digest, known) for known in config.signing_cert_digests) > 0


def _is_secure_boot(root: ParsedRootOfTrust) -> bool:
    return root.device_locked and root.verified_boot_state is VerifiedBootState.VERIFIED


def _require_root_of_trust(
    hardware: ParsedAuthorizationList, config: AndroidConfig
) -> ParsedRootOfTrust:
    """§4.2 teeEnforced.rootOfTrust {verifiedBootState = Verified, deviceLocked = true}."""
    root = hardware.root_of_trust
    if root is None:
        raise PolicyViolationError("rootOfTrust missing from the hardware-enforced list")
    if root.verified_boot_state is VerifiedBootState.FAILED:
        raise PolicyViolationError("verified boot failed")
    if not _is_secure_boot(root) and not config.allow_unlocked:
        raise PolicyViolationError("unlocked bootloader or unverified boot")
    return root


def _require_patch_level(hardware: ParsedAuthorizationList, config: AndroidConfig) -> int | None:
    """§4.2 osPatchLevel freshness (YYYYMM), when configured."""
    level = hardware.os_patch_level
    if level is not None and level >= YYYYMMDD_MIN:
        level //= DAY_DIGITS_DIVISOR
    if config.min_os_patch_level is None:
        return level
    if level is None:
        raise PolicyViolationError("osPatchLevel missing")
    if level < config.min_os_patch_level:
        raise PolicyViolationError("OS patch level too old")
    return level
