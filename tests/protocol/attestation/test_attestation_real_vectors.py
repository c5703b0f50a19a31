"""Real device data against the shipped pinned roots (see vectors/README.md for provenance).

Apple: the sample attestation of Apple's "Attestation Object Validation Guide".
Android: chains from real Pixel and Sony devices in Google's keyattestation test data.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from healthid.protocol.attestation import (
    AndroidConfig,
    AndroidDetails,
    AppIdentityMismatchError,
    AppleConfig,
    AttestedKey,
    ChallengeMismatchError,
    KeyClass,
    MalformedAttestationError,
    PolicyViolationError,
    UnsupportedKeyError,
    UntrustedChainError,
    apple_app_attestation_roots,
    google_hardware_attestation_roots,
    verify_android_attestation,
    verify_apple_attestation_with_client_data_hash,
)
from healthid.protocol.attestation.key_description import (
    KEY_DESCRIPTION_OID,
    parse_key_description,
)

VECTORS = Path(__file__).parent / "vectors"
APPLE = json.loads((VECTORS / "apple_app_attest_sample.json").read_text())
ANDROID = {
    v["name"]: v for v in json.loads((VECTORS / "android_vectors.json").read_text())["vectors"]
}


# ---------------------------------------------------------------------------------- Apple


def apple_config(**overrides: Any) -> AppleConfig:
    settings: dict[str, Any] = {
        "team_id": APPLE["team_id"],
        "bundle_id": APPLE["bundle_id"],
        "roots": apple_app_attestation_roots(),
        "production": APPLE["production"],
    }
    return AppleConfig(**(settings | overrides))


def verify_apple_sample(
    config: AppleConfig, *, now: datetime | None = None, client_data_hash: bytes | None = None
) -> AttestedKey:
    return verify_apple_attestation_with_client_data_hash(
        base64.b64decode(APPLE["attestation_b64"]),
        client_data_hash=client_data_hash or APPLE["client_data_hash_utf8"].encode(),
        key_id=base64.b64decode(APPLE["key_id_b64"]),
        config=config,
        now=now or datetime.fromisoformat(APPLE["valid_at"]),
    )


def test_apple_sample_verifies_against_the_pinned_apple_root() -> None:
    key = verify_apple_sample(apple_config())
    assert key.key_class is KeyClass.SECURE_ELEMENT
    assert key.key_id == base64.b64decode(APPLE["key_id_b64"])
    assert key.development is False


def test_apple_sample_is_refused_after_its_cred_cert_expired() -> None:
    with pytest.raises(UntrustedChainError, match="expired"):
        verify_apple_sample(apple_config(), now=datetime.fromisoformat("2024-04-21T00:00:00Z"))


def test_apple_sample_is_refused_for_another_challenge() -> None:
    with pytest.raises(ChallengeMismatchError):
        verify_apple_sample(apple_config(), client_data_hash=b"invalid_server_challenge")


def test_apple_sample_is_refused_for_another_app() -> None:
    with pytest.raises(AppIdentityMismatchError):
        verify_apple_sample(apple_config(bundle_id="com.apple.different_app_attest"))


def test_apple_sample_is_refused_by_a_development_configuration() -> None:
    with pytest.raises(PolicyViolationError):
        verify_apple_sample(apple_config(production=False))


def test_apple_sample_is_refused_under_the_google_roots() -> None:
    with pytest.raises(UntrustedChainError):
        verify_apple_sample(apple_config(roots=google_hardware_attestation_roots()))


# -------------------------------------------------------------------------------- Android


def chain_of(name: str) -> list[bytes]:
    pem = (VECTORS / "android" / f"{name}.pem").read_bytes()
    return [
        c.public_bytes(serialization.Encoding.DER) for c in x509.load_pem_x509_certificates(pem)
    ]


def android_config(vector: dict[str, Any], **overrides: Any) -> AndroidConfig:
    settings: dict[str, Any] = {
        "roots": google_hardware_attestation_roots(),
        "package_names": frozenset(vector["package_names"]),
        "signing_cert_digests": frozenset(
            base64.b64decode(d) for d in vector["signing_cert_digests_b64"]
        ),
    }
    return AndroidConfig(**(settings | overrides))


def verify_android_vector(name: str, **overrides: Any) -> AttestedKey:
    vector = ANDROID[name]
    now = overrides.pop("now", None) or datetime.fromisoformat(vector["valid_at"])
    challenge = overrides.pop("challenge", None) or base64.b64decode(vector["challenge_b64"])
    return verify_android_attestation(
        chain_of(name), challenge=challenge, config=android_config(vector, **overrides), now=now
    )


@pytest.mark.parametrize(
    ("name", "key_class"),
    [
        ("tegu_sdk36_tee_ec_2026_root", KeyClass.TEE),
        ("tegu_sdk36_sb_ec_2026_root", KeyClass.SECURE_ELEMENT),
        ("caiman_sdk36_tee_ec_rkp", KeyClass.TEE),
        ("caiman_sdk36_sb_ec_rkp", KeyClass.SECURE_ELEMENT),
    ],
)
def test_android_real_attestations_verify_against_the_pinned_google_roots(
    name: str, key_class: KeyClass
) -> None:
    key = verify_android_vector(name)
    assert key.key_class is key_class
    assert key.development is False
    details = key.details
    assert isinstance(details, AndroidDetails)
    assert details.os_patch_level == ANDROID[name]["os_patch_level"]
    assert details.package_names == tuple(ANDROID[name]["package_names"])


def test_android_real_attestation_is_refused_for_another_challenge() -> None:
    with pytest.raises(ChallengeMismatchError):
        verify_android_vector("tegu_sdk36_tee_ec_2026_root", challenge=b"\x00" * 32)


def test_android_real_attestation_is_refused_for_another_package() -> None:
    with pytest.raises(AppIdentityMismatchError):
        verify_android_vector(
            "tegu_sdk36_tee_ec_2026_root", package_names=frozenset({"de.example.other"})
        )


def test_android_real_attestation_is_refused_once_its_rkp_certificates_expired() -> None:
    vector = ANDROID["tegu_sdk36_tee_ec_2026_root"]
    later = datetime.fromisoformat(vector["valid_at"]) + timedelta(days=60)
    with pytest.raises(UntrustedChainError, match="expired"):
        verify_android_vector("tegu_sdk36_tee_ec_2026_root", now=later)


def test_android_real_tee_attestation_is_refused_when_strongbox_is_required() -> None:
    with pytest.raises(PolicyViolationError, match="StrongBox"):
        verify_android_vector("tegu_sdk36_tee_ec_2026_root", require_strongbox=True)


def test_android_real_attestation_is_refused_below_the_minimum_patch_level() -> None:
    with pytest.raises(PolicyViolationError, match="patch"):
        verify_android_vector("caiman_sdk36_tee_ec_rkp", min_os_patch_level=202512)


def test_android_real_unlocked_device_is_refused() -> None:
    with pytest.raises(PolicyViolationError, match="unlocked"):
        verify_android_vector("tegu_sdk37_tee_unlocked")


def test_android_real_unlocked_device_is_only_a_development_key_when_allowed() -> None:
    key = verify_android_vector("tegu_sdk37_tee_unlocked", allow_unlocked=True)
    assert key.development is True


def test_android_real_software_attestation_chain_is_untrusted() -> None:
    # chains to the "Android Keystore Software Attestation Root", which is not pinned
    with pytest.raises(UntrustedChainError):
        verify_android_vector("marlin_sdk29_software_root", challenge=b"c" * 16)


def test_android_real_rsa_key_is_refused() -> None:
    with pytest.raises(UnsupportedKeyError):
        verify_android_vector("akita_sdk34_tee_rsa", challenge=b"c" * 16)


def test_android_real_factory_chain_with_a_non_ca_attestation_certificate_is_refused() -> None:
    # Sony Xperia 10 III: the attestation key certificate says CA:FALSE. Google's verifier
    # accepts such chains; this package requires basicConstraints CA for every issuer.
    with pytest.raises(UntrustedChainError, match="not a CA"):
        verify_android_vector("sony_xperia10iii_sdk33_tee_ec")


def leaf_description(name: str) -> bytes:
    leaf = x509.load_pem_x509_certificates((VECTORS / "android" / f"{name}.pem").read_bytes())[0]
    extension = leaf.extensions.get_extension_for_oid(x509.ObjectIdentifier(KEY_DESCRIPTION_OID))
    assert isinstance(extension.value, x509.UnrecognizedExtension)
    return extension.value.value


def test_android_real_key_description_of_an_unlocked_pixel_3_parses() -> None:
    description = parse_key_description(leaf_description("blueline_sdk28_tee_ec_unlocked"))
    root = description.hardware_enforced.root_of_trust
    assert root is not None
    assert root.device_locked is False
    assert description.attestation_version == 3
    assert description.challenge == b"challenge"


def test_android_real_key_description_with_unordered_tags_is_refused() -> None:
    with pytest.raises(MalformedAttestationError, match="order"):
        parse_key_description(leaf_description("invalid_tags_not_in_ascending_order"))
