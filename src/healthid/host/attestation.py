"""Which device attestation formats the wallet API accepts, and their verification.

The verifiers are pure (``healthid.protocol.attestation``); this module picks one per format
and applies the deployment's policy: pinned roots and app identities for Apple App Attest and
Android Key Attestation, and the reference client's software attestation in development only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from healthid.protocol.attestation import (
    MAX_ATTESTATION_BYTES,
    AndroidConfig,
    AppleConfig,
    AttestationError,
    verify_android_key_attestation,
    verify_apple_assertion,
    verify_apple_attestation,
    verify_software_attestation,
)
from healthid.protocol.attestation.common import key_id_of, load_p256_spki

FORMAT_APPLE = "apple-appattest"
FORMAT_ANDROID = "android-key"
FORMAT_SOFTWARE = "healthid-software"


@dataclass(frozen=True, kw_only=True)
class AttestationPolicy:
    app_id: str  # the app identity the software attestation names
    allow_software: bool  # development only
    apple: AppleConfig | None = None
    android: AndroidConfig | None = None


@dataclass(frozen=True, kw_only=True)
class VerifiedDevice:
    key_class: str  # healthid.protocol.oidc.loa.DeviceKeyClass value
    sign_count: int


class AttestationRejected(Exception):  # noqa: N818
    """The attestation does not prove what it must (status 400, safe message)."""


def verify_device_attestation(
    policy: AttestationPolicy,
    *,
    fmt: str,
    attestation: bytes,
    public_key: bytes,
    challenge: bytes,
) -> VerifiedDevice:
    """Verify ``attestation`` over ``challenge`` and that it attests ``public_key``."""
    from healthid.host.wallet_service import WalletError

    if len(attestation) > MAX_ATTESTATION_BYTES:
        raise WalletError(f"attestation larger than {MAX_ATTESTATION_BYTES} bytes")
    now = datetime.now(UTC)
    try:
        if fmt == FORMAT_SOFTWARE:
            attested = verify_software_attestation(
                attestation,
                challenge=challenge,
                app_id=policy.app_id,
                allow_software=policy.allow_software,
            )
        elif fmt == FORMAT_APPLE and policy.apple is not None:
            attested = verify_apple_attestation(
                attestation,
                challenge=challenge,
                key_id=key_id_of(load_p256_spki(public_key)),
                config=policy.apple,
                now=now,
            )
        elif fmt == FORMAT_ANDROID and policy.android is not None:
            # a CBOR array of DER certificates, leaf first
            attested = verify_android_key_attestation(
                attestation, challenge=challenge, config=policy.android, now=now
            )
        else:
            raise WalletError(f"attestation format {fmt!r} is not accepted here")
    except AttestationError as exc:
        raise WalletError(f"attestation refused: {exc}") from None
    if attested.public_key != public_key:
        raise WalletError("the attestation is for another key")
    return VerifiedDevice(key_class=attested.key_class.value, sign_count=attested.sign_count)


def verify_login_assertion(
    policy: AttestationPolicy,
    *,
    fmt: str,
    public_key: bytes,
    signed: bytes,
    signature: bytes,
    counter: int,
    stored_counter: int,
) -> int | None:
    """App Attest devices log in with an assertion over ``signed`` (its clientData).

    Returns the counter to store, or None when the device uses plain ES256 signatures (the
    caller verifies those). Raises WalletError when the assertion is invalid.
    """
    from healthid.host.wallet_service import Unauthorized

    if fmt != FORMAT_APPLE:
        return None
    if policy.apple is None:
        raise Unauthorized("device authentication failed")
    try:
        new_count = verify_apple_assertion(
            signature,
            client_data=signed,
            public_key=public_key,
            previous_sign_count=stored_counter,
            config=policy.apple,
        )
    except (AttestationError, ValueError):
        raise Unauthorized("device authentication failed") from None
    if new_count != counter:
        raise Unauthorized("device authentication failed")
    return new_count
