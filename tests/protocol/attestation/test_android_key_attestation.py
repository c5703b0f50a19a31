"""Android Key Attestation (spec §4.2), on synthetic TEST-root chains."""

from __future__ import annotations

import dataclasses
import time
from datetime import timedelta
from typing import Any

import cbor2
import pytest
from attestation_factory import (
    CHALLENGE,
    KEY_DESCRIPTION_OID,
    NOW,
    OTHER_CHALLENGE,
    PACKAGE_NAME,
    SIGNING_CERT_DIGEST,
    AndroidPki,
    android_attestation,
    application_id,
    authorization_list,
    der,
    enumerated,
    explicit,
    hardware_enforced,
    integer,
    key_description,
    make_ca,
    make_leaf,
    make_root,
    null,
    octets,
    p256,
    p384,
    root_of_trust,
    sequence,
    set_of,
    sha256,
    software_enforced,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from healthid.protocol.attestation import (
    AndroidConfig,
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
    UntrustedChainError,
    VerifiedBootState,
    verify_android_attestation,
    verify_android_key_attestation,
)
from healthid.protocol.attestation.key_description import parse_key_description


def verify(
    chain: list[bytes],
    config: AndroidConfig,
    challenge: bytes = CHALLENGE,
    revoked: frozenset[int] = frozenset(),
) -> AttestedKey:
    return verify_android_attestation(
        chain, challenge=challenge, config=config, now=NOW, revoked_serials=revoked
    )


def with_description(pki: AndroidPki, **kwargs: Any) -> list[bytes]:
    return android_attestation(pki, description=key_description(**kwargs)).chain


def raw_description(hardware_list: bytes) -> bytes:
    """A KeyDescription whose hardware-enforced list is given as raw DER."""
    return sequence(
        integer(400),
        enumerated(1),
        integer(400),
        enumerated(1),
        octets(CHALLENGE),
        octets(b""),
        authorization_list(software_enforced()),
        hardware_list,
    )


def test_android_accepts_a_tee_attestation(
    android_pki: AndroidPki, android_config: AndroidConfig
) -> None:
    case = android_attestation(android_pki)
    key = verify_android_attestation(
        case.chain, challenge=CHALLENGE, config=android_config, now=NOW
    )
    assert key.format is AttestationFormat.ANDROID_KEY
    assert key.key_class is KeyClass.TEE
    assert key.development is False
    assert key.sign_count == 0
    assert isinstance(key.details, AndroidDetails)
    assert key.details.security_level is AndroidSecurityLevel.TRUSTED_ENVIRONMENT
    assert key.details.os_patch_level == 202605
    assert key.details.verified_boot_state is VerifiedBootState.VERIFIED
    assert key.details.device_locked is True
    assert key.details.package_names == (PACKAGE_NAME,)
    assert key.details.user_auth_required is False
    assert key.details.chain_serial_numbers[0] == case.leaf.serial_number
    assert len(key.details.chain_serial_numbers) == 3


def test_android_accepts_a_chain_without_the_root(
    android_pki: AndroidPki, android_config: AndroidConfig
) -> None:
    case = android_attestation(android_pki, include_root=False)
    assert verify(case.chain, android_config)


def test_android_maps_strongbox_to_secure_element(
    android_pki: AndroidPki, android_config: AndroidConfig
) -> None:
    chain = with_description(android_pki, security_level=2)
    config = dataclasses.replace(android_config, require_strongbox=True)
    key = verify_android_attestation(chain, challenge=CHALLENGE, config=config, now=NOW)
    assert key.key_class is KeyClass.SECURE_ELEMENT


def test_android_rejects_tee_when_strongbox_is_required(
    android_pki: AndroidPki, android_config: AndroidConfig
) -> None:
    chain = android_attestation(android_pki).chain
    with pytest.raises(PolicyViolationError, match="StrongBox"):
        verify(chain, dataclasses.replace(android_config, require_strongbox=True))


def test_android_rejects_software_security_level(
    android_pki: AndroidPki, android_config: AndroidConfig
) -> None:
    with pytest.raises(PolicyViolationError, match="software"):
        verify(with_description(android_pki, security_level=0), android_config)


def test_android_rejects_a_keymint_level_below_the_attestation_level(
    android_pki: AndroidPki, android_config: AndroidConfig
) -> None:
    chain = with_description(android_pki, security_level=1, keymint_level=0)
    with pytest.raises(PolicyViolationError, match="differ"):
        verify(chain, android_config)


def test_android_rejects_an_unknown_security_level(
    android_pki: AndroidPki, android_config: AndroidConfig
) -> None:
    with pytest.raises(MalformedAttestationError):
        verify(with_description(android_pki, security_level=7), android_config)


def test_android_rejects_the_wrong_challenge(
    android_pki: AndroidPki, android_config: AndroidConfig
) -> None:
    with pytest.raises(ChallengeMismatchError):
        verify(with_description(android_pki, challenge=OTHER_CHALLENGE), android_config)


def test_android_rejects_a_replayed_attestation_for_a_new_challenge(
    android_pki: AndroidPki, android_config: AndroidConfig
) -> None:
    chain = android_attestation(android_pki).chain
    verify(chain, android_config, CHALLENGE)
    with pytest.raises(ChallengeMismatchError):
        verify(chain, android_config, OTHER_CHALLENGE)


def test_android_rejects_a_tampered_leaf(
    android_pki: AndroidPki, android_config: AndroidConfig
) -> None:
    chain = android_attestation(android_pki).chain
    leaf = chain[0].replace(CHALLENGE, OTHER_CHALLENGE)  # re-bind to another challenge
    with pytest.raises(UntrustedChainError):
        verify([leaf, *chain[1:]], android_config, OTHER_CHALLENGE)


@pytest.mark.parametrize(
    ("packages", "digests"),
    [
        (["de.example.other"], [SIGNING_CERT_DIGEST]),
        ([PACKAGE_NAME, "de.example.other"], [SIGNING_CERT_DIGEST]),
        ([PACKAGE_NAME], [sha256(b"another signer")]),
        ([PACKAGE_NAME], [SIGNING_CERT_DIGEST, sha256(b"another signer")]),
        ([PACKAGE_NAME], []),
        ([], [SIGNING_CERT_DIGEST]),
    ],
)
def test_android_rejects_another_app_identity(
    android_pki: AndroidPki,
    android_config: AndroidConfig,
    packages: list[str],
    digests: list[bytes],
) -> None:
    software = software_enforced(
        attestation_application_id=octets(application_id(packages, digests))
    )
    with pytest.raises(AppIdentityMismatchError):
        verify(with_description(android_pki, software=software), android_config)


def test_android_rejects_a_missing_application_id(
    android_pki: AndroidPki, android_config: AndroidConfig
) -> None:
    software = software_enforced(attestation_application_id=None)
    with pytest.raises(AppIdentityMismatchError):
        verify(with_description(android_pki, software=software), android_config)


def test_android_rejects_a_chain_to_an_untrusted_root(android_config: AndroidConfig) -> None:
    rogue = AndroidPki.create()
    with pytest.raises(UntrustedChainError):
        verify(android_attestation(rogue).chain, android_config)


def test_android_rejects_a_chain_embedding_its_own_self_signed_root(
    android_pki: AndroidPki, android_config: AndroidConfig
) -> None:
    rogue_root = make_root("Test Key Attestation CA1")  # same name as the pinned root
    rogue_intermediate = make_ca(rogue_root, "Test Droid CA2")
    rogue = AndroidPki(
        rogue_root, rogue_intermediate, make_ca(rogue_intermediate, "test-attestation-key", "TEE")
    )
    with pytest.raises(UntrustedChainError):
        verify(android_attestation(rogue).chain, android_config)


def test_android_rejects_an_expired_attestation_certificate(
    android_pki: AndroidPki, android_config: AndroidConfig
) -> None:
    expired = make_ca(
        android_pki.intermediate, "expired-attestation-key", "TEE", not_after=NOW - timedelta(1)
    )
    pki = dataclasses.replace(android_pki, attestation=expired)
    with pytest.raises(UntrustedChainError, match="expired"):
        verify(android_attestation(pki).chain, android_config)


def test_android_rejects_a_revoked_attestation_certificate(
    android_pki: AndroidPki, android_config: AndroidConfig
) -> None:
    chain = android_attestation(android_pki).chain
    revoked = frozenset({android_pki.attestation.certificate.serial_number})
    with pytest.raises(UntrustedChainError, match="revoked"):
        verify(chain, android_config, revoked=revoked)


def test_android_rejects_a_leaf_without_the_key_description(
    android_pki: AndroidPki, android_config: AndroidConfig
) -> None:
    chain = android_attestation(android_pki, with_extension=False).chain
    with pytest.raises(MalformedAttestationError, match="no KeyDescription"):
        verify(chain, android_config)


def test_android_rejects_a_forged_leaf_below_a_genuine_attested_key(
    android_pki: AndroidPki, android_config: AndroidConfig
) -> None:
    # chain extension attack: the attested key signs a leaf carrying a forged description
    genuine = android_attestation(android_pki)
    forged_key = p256()
    forged_leaf = x509.CertificateBuilder().subject_name(genuine.leaf.subject)
    forged_leaf = (
        forged_leaf.issuer_name(genuine.leaf.subject)
        .public_key(forged_key.public_key())
        .serial_number(7)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
        .add_extension(
            x509.UnrecognizedExtension(KEY_DESCRIPTION_OID, key_description(security_level=2)),
            critical=False,
        )
    )
    signed = forged_leaf.sign(genuine.device_key, hashes.SHA256())
    with pytest.raises((UntrustedChainError, MalformedAttestationError)):
        verify([der(signed), *genuine.chain], android_config)


def test_android_rejects_a_key_description_below_the_leaf(
    android_pki: AndroidPki, android_config: AndroidConfig
) -> None:
    extension = x509.UnrecognizedExtension(KEY_DESCRIPTION_OID, key_description())
    attestation = make_ca(
        android_pki.intermediate,
        "attestation-key-with-description",
        "TEE",
        extensions=[(extension, False)],
    )
    pki = dataclasses.replace(android_pki, attestation=attestation)
    with pytest.raises(MalformedAttestationError, match="below the leaf"):
        verify(android_attestation(pki).chain, android_config)


def test_android_rejects_a_p384_device_key(
    android_pki: AndroidPki, android_config: AndroidConfig
) -> None:
    chain = android_attestation(android_pki, device_key=p384()).chain
    with pytest.raises(UnsupportedKeyError):
        verify(chain, android_config)


@pytest.mark.parametrize(
    "override",
    [
        {"ec_curve": integer(2)},  # P-384 claimed
        {"key_size": integer(384)},
        {"algorithm": integer(1)},  # RSA
        {"algorithm": None},
        {"purpose": set_of(integer(3))},  # VERIFY only
        {"purpose": None},
    ],
)
def test_android_rejects_a_key_that_is_not_a_p256_signing_key(
    android_pki: AndroidPki, android_config: AndroidConfig, override: dict[str, bytes | None]
) -> None:
    chain = with_description(android_pki, hardware=hardware_enforced(**override))
    with pytest.raises(UnsupportedKeyError):
        verify(chain, android_config)


def test_android_rejects_an_imported_key(
    android_pki: AndroidPki, android_config: AndroidConfig
) -> None:
    chain = with_description(android_pki, hardware=hardware_enforced(origin=integer(2)))
    with pytest.raises(PolicyViolationError, match="generated"):
        verify(chain, android_config)


def test_android_rejects_an_unlocked_bootloader(
    android_pki: AndroidPki, android_config: AndroidConfig
) -> None:
    hardware = hardware_enforced(root_of_trust=root_of_trust(locked=False, state=2))
    with pytest.raises(PolicyViolationError, match="unlocked"):
        verify(with_description(android_pki, hardware=hardware), android_config)


@pytest.mark.parametrize("state", [1, 2])
def test_android_rejects_unverified_boot_on_a_locked_device(
    android_pki: AndroidPki, android_config: AndroidConfig, state: int
) -> None:
    hardware = hardware_enforced(root_of_trust=root_of_trust(locked=True, state=state))
    with pytest.raises(PolicyViolationError):
        verify(with_description(android_pki, hardware=hardware), android_config)


def test_android_accepts_an_unlocked_device_only_as_development_when_allowed(
    android_pki: AndroidPki, android_config: AndroidConfig
) -> None:
    hardware = hardware_enforced(root_of_trust=root_of_trust(locked=False, state=2))
    chain = with_description(android_pki, hardware=hardware)
    config = dataclasses.replace(android_config, allow_unlocked=True)
    key = verify_android_attestation(chain, challenge=CHALLENGE, config=config, now=NOW)
    assert key.development is True


def test_android_rejects_failed_verified_boot_even_when_unlocked_is_allowed(
    android_pki: AndroidPki, android_config: AndroidConfig
) -> None:
    hardware = hardware_enforced(root_of_trust=root_of_trust(locked=False, state=3))
    config = dataclasses.replace(android_config, allow_unlocked=True)
    with pytest.raises(PolicyViolationError, match="failed"):
        verify(with_description(android_pki, hardware=hardware), config)


def test_android_rejects_a_root_of_trust_outside_the_hardware_list(
    android_pki: AndroidPki, android_config: AndroidConfig
) -> None:
    hardware = hardware_enforced(root_of_trust=None)
    with pytest.raises(PolicyViolationError, match="rootOfTrust"):
        verify(with_description(android_pki, hardware=hardware), android_config)


def test_android_rejects_an_old_patch_level(
    android_pki: AndroidPki, android_config: AndroidConfig
) -> None:
    config = dataclasses.replace(android_config, min_os_patch_level=202606)
    with pytest.raises(PolicyViolationError, match="patch"):
        verify(android_attestation(android_pki).chain, config)


def test_android_rejects_a_missing_patch_level_when_one_is_required(
    android_pki: AndroidPki, android_config: AndroidConfig
) -> None:
    chain = with_description(android_pki, hardware=hardware_enforced(os_patch_level=None))
    config = dataclasses.replace(android_config, min_os_patch_level=202601)
    with pytest.raises(PolicyViolationError, match="osPatchLevel"):
        verify(chain, config)


def test_android_reads_a_day_precise_patch_level_as_its_month(
    android_pki: AndroidPki, android_config: AndroidConfig
) -> None:
    chain = with_description(
        android_pki, hardware=hardware_enforced(os_patch_level=integer(20260505))
    )
    config = dataclasses.replace(android_config, min_os_patch_level=202605)
    key = verify_android_attestation(chain, challenge=CHALLENGE, config=config, now=NOW)
    assert isinstance(key.details, AndroidDetails)
    assert key.details.os_patch_level == 202605


def test_android_rejects_a_key_without_user_auth_when_required(
    android_pki: AndroidPki, android_config: AndroidConfig
) -> None:
    config = dataclasses.replace(android_config, require_user_auth=True)
    with pytest.raises(PolicyViolationError, match="user authentication"):
        verify(android_attestation(android_pki).chain, config)


def test_android_accepts_a_biometric_key_when_user_auth_is_required(
    android_pki: AndroidPki, android_config: AndroidConfig
) -> None:
    hardware = hardware_enforced(no_auth_required=None, user_auth_type=integer(2))
    config = dataclasses.replace(android_config, require_user_auth=True)
    chain = with_description(android_pki, hardware=hardware)
    key = verify_android_attestation(chain, challenge=CHALLENGE, config=config, now=NOW)
    assert isinstance(key.details, AndroidDetails)
    assert key.details.user_auth_required is True


def test_android_reads_checked_tags_past_unknown_ones(android_pki: AndroidPki) -> None:
    # digest [5] sits between keySize [3] and ecCurve [10]; [718], [719], [724] follow
    description = parse_key_description(key_description())
    assert description.hardware_enforced.ec_curve == 1
    assert description.hardware_enforced.root_of_trust is not None
    assert description.hardware_enforced.os_patch_level == 202605
    assert description.software_enforced.application_id is not None


@pytest.mark.parametrize(
    "hardware",
    [
        [(2, integer(3)), (1, set_of(integer(2)))],  # out of order
        [(2, integer(3)), (2, integer(1))],  # duplicate: which algorithm?
        [(1, set_of(integer(2))), (704, root_of_trust()), (704, root_of_trust(locked=False))],
    ],
)
def test_android_rejects_repeated_or_unordered_tags(
    android_pki: AndroidPki, android_config: AndroidConfig, hardware: list[tuple[int, bytes]]
) -> None:
    with pytest.raises(MalformedAttestationError, match="order"):
        verify(with_description(android_pki, hardware=hardware), android_config)


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"\x30\x00",
        b"\x04\x03abc",
        key_description() + b"\x00",
        key_description()[:-1],
        # an AuthorizationList entry that is not an explicit tag
        raw_description(sequence(explicit(1, set_of(integer(2))), integer(5))),
        # an AuthorizationList that is not a SEQUENCE
        raw_description(set_of(explicit(1, set_of(integer(2))))),
        # an explicit tag holding the wrong type
        raw_description(sequence(explicit(2, null()))),
        # rootOfTrust with a two-byte BOOLEAN
        key_description(
            hardware=hardware_enforced(
                root_of_trust=sequence(octets(b""), b"\x01\x02\xff\xff", enumerated(0))
            )
        ),
        # rootOfTrust with an unknown verifiedBootState
        key_description(hardware=hardware_enforced(root_of_trust=root_of_trust(state=9))),
        # attestationApplicationId that is not DER
        key_description(
            software=software_enforced(attestation_application_id=octets(b"\x30\x05junk"))
        ),
    ],
)
def test_android_rejects_a_malformed_key_description(
    android_pki: AndroidPki, android_config: AndroidConfig, value: bytes
) -> None:
    chain = android_attestation(android_pki, description=value).chain
    with pytest.raises(MalformedAttestationError):
        verify(chain, android_config)


def test_android_rejects_10_megabytes_before_parsing(android_config: AndroidConfig) -> None:
    started = time.perf_counter()
    with pytest.raises(AttestationTooLargeError):
        verify([b"\x30" * 10_000_000], android_config)
    with pytest.raises(AttestationTooLargeError):
        verify([b"\x30"] * 1_000_000, android_config)
    assert time.perf_counter() - started < 0.5


def test_android_config_refuses_insecure_or_incomplete_settings(android_pki: AndroidPki) -> None:
    roots = (android_pki.root.certificate,)
    packages = frozenset({PACKAGE_NAME})
    digests = frozenset({SIGNING_CERT_DIGEST})
    with pytest.raises(ValueError, match="root"):
        AndroidConfig(roots=(), package_names=packages, signing_cert_digests=digests)
    with pytest.raises(ValueError, match="package"):
        AndroidConfig(roots=roots, package_names=frozenset(), signing_cert_digests=digests)
    with pytest.raises(ValueError, match="SHA-256"):
        AndroidConfig(roots=roots, package_names=packages, signing_cert_digests=frozenset())
    with pytest.raises(ValueError, match="YYYYMM"):
        AndroidConfig(
            roots=roots,
            package_names=packages,
            signing_cert_digests=digests,
            min_os_patch_level=20260101,
        )


def test_android_rejects_a_leaf_that_is_a_ca(
    android_pki: AndroidPki, android_config: AndroidConfig
) -> None:
    leaf = make_leaf(android_pki.attestation, p256().public_key(), ca=True)
    chain = [der(leaf), der(android_pki.attestation.certificate)]
    with pytest.raises(UntrustedChainError):
        verify([*chain, der(android_pki.intermediate.certificate)], android_config)


def test_android_accepts_the_cbor_wire_format(
    android_pki: AndroidPki, android_config: AndroidConfig
) -> None:
    case = android_attestation(android_pki)
    key = verify_android_key_attestation(
        cbor2.dumps(case.chain), challenge=CHALLENGE, config=android_config, now=NOW
    )
    assert key.key_class is KeyClass.TEE


@pytest.mark.parametrize(
    "attestation",
    [cbor2.dumps({"x5c": []}), cbor2.dumps(["text"]), cbor2.dumps([]), b"\x30\x82"],
)
def test_android_wire_format_rejects_anything_but_an_array_of_certificates(
    android_config: AndroidConfig, attestation: bytes
) -> None:
    with pytest.raises(MalformedAttestationError):
        verify_android_key_attestation(
            attestation, challenge=CHALLENGE, config=android_config, now=NOW
        )


def test_android_wire_format_rejects_10_megabytes_before_parsing(
    android_config: AndroidConfig,
) -> None:
    started = time.perf_counter()
    with pytest.raises(AttestationTooLargeError):
        verify_android_key_attestation(
            b"\x81" + b"\x00" * 10_000_000, challenge=CHALLENGE, config=android_config, now=NOW
        )
    assert time.perf_counter() - started < 0.1
