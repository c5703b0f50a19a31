"""The development TEST eGK CA: clearly test material, reloadable, and its cards verify."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID

from healthid.demo.egk_test_ca import (
    CA_CERTIFICATE_FILE,
    CA_KEY_FILE,
    README_FILE,
    TEST_CA_COMMON_NAME,
    TestEgkCa,
)
from healthid.protocol.egk import RAW_SIGNATURE_BYTES, verify_egk_authentication

KVNR = "A123456780"
IK = "109500969"


def test_ca_is_named_as_test_material() -> None:
    ca = TestEgkCa.create()
    [common_name] = ca.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert common_name.value == TEST_CA_COMMON_NAME
    assert "TEST" in TEST_CA_COMMON_NAME and "not for production" in TEST_CA_COMMON_NAME


def test_ca_is_a_brainpool_ca_limited_to_issuing_cards() -> None:
    ca = TestEgkCa.create()
    constraints = ca.certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    assert ca.certificate.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    key = ca.certificate.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert isinstance(key.curve, ec.BrainpoolP256R1)


def test_ca_written_to_a_directory_is_marked_and_loaded_again(tmp_path: Path) -> None:
    directory = tmp_path / "egk-ca"
    first = TestEgkCa.create(directory)
    again = TestEgkCa.create(directory)
    assert again.certificate == first.certificate
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        [CA_KEY_FILE, CA_CERTIFICATE_FILE, README_FILE]
    )
    for path in directory.iterdir():
        assert path.name.startswith("TEST-ONLY")
        assert path.read_bytes().startswith(b"healthid TEST eGK CA material - TEST ONLY")


def test_ca_key_file_is_readable_by_the_owner_only(tmp_path: Path) -> None:
    TestEgkCa.create(tmp_path)
    assert (tmp_path / CA_KEY_FILE).stat().st_mode & 0o777 == 0o600


def test_ca_refuses_to_load_a_ca_that_is_not_the_test_ca(tmp_path: Path) -> None:
    TestEgkCa.create(tmp_path)
    key = ec.generate_private_key(ec.BrainpoolP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "GEM.EGK-CA51")])
    now = datetime.now(UTC)
    foreign = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (tmp_path / CA_KEY_FILE).write_bytes(pem)
    (tmp_path / CA_CERTIFICATE_FILE).write_bytes(foreign.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(ValueError, match="not the healthid TEST eGK CA"):
        TestEgkCa.create(tmp_path)


def test_ca_refuses_a_key_that_does_not_match_its_certificate(tmp_path: Path) -> None:
    TestEgkCa.create(tmp_path)
    other = TestEgkCa.create()
    (tmp_path / CA_CERTIFICATE_FILE).write_bytes(
        other.certificate.public_bytes(serialization.Encoding.PEM)
    )
    with pytest.raises(ValueError, match="does not match"):
        TestEgkCa.create(tmp_path)


def test_card_signs_raw_r_s_like_the_wallet_sends() -> None:
    card = TestEgkCa.create().issue_card(KVNR, IK, "Erika", "Mustermann")
    challenge = os.urandom(32)
    signature = card.sign(challenge)
    assert len(signature) == RAW_SIGNATURE_BYTES
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    key = card.certificate.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    key.verify(encode_dss_signature(r, s), challenge, ec.ECDSA(hashes.SHA256()))


def test_card_from_a_reloaded_ca_verifies_with_default_validity(tmp_path: Path) -> None:
    TestEgkCa.create(tmp_path)
    ca = TestEgkCa.create(tmp_path)
    card = ca.issue_card(KVNR, IK, "Jürgen", "Größe-Übel")
    challenge = os.urandom(32)
    identity = verify_egk_authentication(
        certificate_der=card.certificate_der,
        signature=card.sign(challenge),
        challenge=challenge,
        trusted_cas=[ca.certificate],
        now=datetime.now(UTC),
    )
    assert (identity.kvnr, identity.family_name) == (KVNR, "Größe-Übel")


def test_card_common_name_is_marked_and_bounded() -> None:
    card = TestEgkCa.create().issue_card(KVNR, IK, "A" * 40, "B" * 40)
    [common_name] = card.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert isinstance(common_name.value, str)
    assert common_name.value.endswith("TEST-ONLY") and len(common_name.value) <= 64


def test_test_ca_module_needs_no_test_only_packages() -> None:
    code = (
        "import sys, healthid.demo.egk_test_ca\n"
        "assert not {'pytest', 'hypothesis'} & set(sys.modules), 'test-only import'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
