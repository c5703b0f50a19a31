"""Device attestation verifiers: Apple App Attest, Android Key Attestation, software (dev).

Source: ../shared/spec/eid-egk-wallet-device.md §4. Pure: no I/O, the clock is an argument,
trust anchors come from configuration (:mod:`.roots` holds the published ones).
"""

from .android import AndroidConfig, verify_android_attestation, verify_android_key_attestation
from .apple import (
    AppleConfig,
    verify_apple_assertion,
    verify_apple_attestation,
    verify_apple_attestation_with_client_data_hash,
)
from .chain import verify_chain
from .common import (
    MAX_ATTESTATION_BYTES,
    AndroidDetails,
    AndroidSecurityLevel,
    AppIdentityMismatchError,
    AppleDetails,
    AttestationError,
    AttestationFormat,
    AttestationTooLargeError,
    AttestedKey,
    ChallengeMismatchError,
    CounterReplayError,
    InvalidSignatureError,
    KeyClass,
    MalformedAttestationError,
    PolicyViolationError,
    UnsupportedKeyError,
    UntrustedChainError,
    VerifiedBootState,
)
from .roots import apple_app_attestation_roots, google_hardware_attestation_roots
from .software import make_software_attestation, verify_software_attestation

__all__ = [
    "MAX_ATTESTATION_BYTES",
    "AndroidConfig",
    "AndroidDetails",
    "AndroidSecurityLevel",
    "AppIdentityMismatchError",
    "AppleConfig",
    "AppleDetails",
    "AttestationError",
    "AttestationFormat",
    "AttestationTooLargeError",
    "AttestedKey",
    "ChallengeMismatchError",
    "CounterReplayError",
    "InvalidSignatureError",
    "KeyClass",
    "MalformedAttestationError",
    "PolicyViolationError",
    "UnsupportedKeyError",
    "UntrustedChainError",
    "VerifiedBootState",
    "apple_app_attestation_roots",
    "google_hardware_attestation_roots",
    "make_software_attestation",
    "verify_android_attestation",
    "verify_android_key_attestation",
    "verify_apple_assertion",
    "verify_apple_attestation",
    "verify_apple_attestation_with_client_data_hash",
    "verify_chain",
    "verify_software_attestation",
]
