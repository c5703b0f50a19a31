"""A TEST eGK CA for development and tests. Never for production: its cards prove nothing.

It issues certificates shaped like gematik's C.CH.AUT_E256 test cards (spec
eid-egk-wallet-device.md §2.4): brainpoolP256r1 keys, ecdsa-with-SHA256, subject
``C, O, OU=IK, OU=KVNR, SN, GN, CN``, basicConstraints cA FALSE and keyUsage digitalSignature
(both critical), certificate type oid_egk_aut and the Admission extension with professionOID
oid_versicherter. :meth:`TestCard.sign` answers a challenge the way the card does (raw r||s),
so a development wallet can play an eGK. Configure :attr:`TestEgkCa.certificate` as the eGK CA
only in development mode.

With a directory, the CA's key and certificate are written there (and loaded from there next
time), every file named and headed as test material.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from healthid.protocol.egk import POLICY_OID_EGK_AUT, PROFESSION_OID_VERSICHERTER

TEST_CA_COMMON_NAME = "healthid TEST eGK CA \u2014 not for production"
TEST_ORGANIZATION = "healthid TEST-ONLY NOT-VALID"
TEST_KASSE = "healthid TEST-ONLY Krankenkasse NOT-VALID"
TEST_MARKER = "TEST-ONLY"
CA_LIFETIME = timedelta(days=10 * 365)
CARD_LIFETIME = timedelta(days=5 * 365)  # gematik test cards: five years
BACKDATE = timedelta(hours=1)  # tolerate a verifier clock slightly behind ours
MAX_CN_CHARS = 64  # X.520 ub-common-name
CA_KEY_FILE = "TEST-ONLY-egk-ca.key.pem"
CA_CERTIFICATE_FILE = "TEST-ONLY-egk-ca.cert.pem"
README_FILE = "TEST-ONLY-README.txt"
_BANNER = (
    b"healthid TEST eGK CA material - TEST ONLY, NOT FOR PRODUCTION.\n"
    b"Cards signed by this CA prove nothing about anybody.\n"
)
_README = _BANNER + (
    b"\nThis directory holds the key and certificate of the development eGK CA written by\n"
    b"healthid.demo.egk_test_ca. Never configure it as an eGK CA outside development mode.\n"
)


@dataclass(frozen=True, kw_only=True)
class TestCard:
    """A development eGK: its C.CH.AUT_E256 certificate and PrK.CH.AUT.E256."""

    __test__ = False  # not a pytest test class

    certificate_der: bytes
    private_key: ec.EllipticCurvePrivateKey

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.certificate_der)

    def sign(self, challenge: bytes) -> bytes:
        """ECDSA-SHA256 over ``challenge`` as raw r||s, the form the card and the wallet use."""
        size = (self.private_key.curve.key_size + 7) // 8
        r, s = decode_dss_signature(self.private_key.sign(challenge, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")


@dataclass(frozen=True, kw_only=True)
class TestEgkCa:
    """The development eGK CA: a self-signed brainpoolP256r1 CA that issues test cards."""

    __test__ = False  # not a pytest test class

    private_key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @property
    def certificate_der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @classmethod
    def create(
        cls,
        directory: Path | None = None,
        *,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
    ) -> TestEgkCa:
        """Load the CA from ``directory`` if it holds one, else generate it (and write it there).

        ``not_before``/``not_after`` apply to a newly generated CA only (tests use them to make
        an expired CA).
        """
        if directory is not None and (directory / CA_KEY_FILE).exists():
            return cls._load(directory)
        start = not_before or datetime.now(UTC) - BACKDATE
        ca = cls._generate(not_before=start, not_after=not_after or start + CA_LIFETIME)
        if directory is not None:
            ca._write(directory)
        return ca

    def issue_card(
        self,
        kvnr: str,
        ik: str | None,
        given_name: str,
        family_name: str,
        *,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        profession_oid: str | None = PROFESSION_OID_VERSICHERTER.dotted_string,
    ) -> TestCard:
        """A fresh card for the given person; ``profession_oid=None`` leaves out the Admission.

        Nothing is validated: tests need cards with wrong check digits too.
        """
        key = ec.generate_private_key(ec.BrainpoolP256R1())
        start = not_before or datetime.now(UTC) - BACKDATE
        builder = (
            x509.CertificateBuilder()
            .subject_name(_card_subject(kvnr, ik, given_name, family_name))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(not_after or start + CARD_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True), critical=True)
            .add_extension(self._authority_key_identifier(), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.CertificatePolicies([x509.PolicyInformation(POLICY_OID_EGK_AUT, None)]),
                critical=False,
            )
        )
        if profession_oid is not None:
            builder = builder.add_extension(admission(profession_oid), critical=False)
        cert = builder.sign(self.private_key, hashes.SHA256())
        return TestCard(
            certificate_der=cert.public_bytes(serialization.Encoding.DER), private_key=key
        )

    def _authority_key_identifier(self) -> x509.AuthorityKeyIdentifier:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(self.private_key.public_key())

    @classmethod
    def _generate(cls, *, not_before: datetime, not_after: datetime) -> TestEgkCa:
        key = ec.generate_private_key(ec.BrainpoolP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, TEST_ORGANIZATION),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "TEST eGK CA"),
                x509.NameAttribute(NameOID.COMMON_NAME, TEST_CA_COMMON_NAME),
            ]
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        return cls(private_key=key, certificate=cert)

    @classmethod
    def _load(cls, directory: Path) -> TestEgkCa:
        key = serialization.load_pem_private_key((directory / CA_KEY_FILE).read_bytes(), None)
        cert = x509.load_pem_x509_certificate((directory / CA_CERTIFICATE_FILE).read_bytes())
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("the test eGK CA key is not an EC key")
        if key.public_key() != cert.public_key():
            raise ValueError("the test eGK CA key does not match its certificate")
        common_names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if [attribute.value for attribute in common_names] != [TEST_CA_COMMON_NAME]:
            raise ValueError("the directory holds a CA that is not the healthid TEST eGK CA")
        return cls(private_key=key, certificate=cert)

    def _write(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / README_FILE).write_bytes(_README)
        key_pem = self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),  # test material, like gematik's published test keys
        )
        _write_private(directory / CA_KEY_FILE, _BANNER + key_pem)
        cert_pem = self.certificate.public_bytes(serialization.Encoding.PEM)
        (directory / CA_CERTIFICATE_FILE).write_bytes(_BANNER + cert_pem)


def admission(profession_oid: str, profession_item: str = "Versicherte/-r") -> x509.Admissions:
    """The Admission extension as on gematik's eGK test cards (one entry, one professionOID)."""
    info = x509.ProfessionInfo(
        naming_authority=None,
        profession_items=[profession_item],
        profession_oids=[x509.ObjectIdentifier(profession_oid)],
        registration_number=None,
        add_profession_info=None,
    )
    entry = x509.Admission(admission_authority=None, naming_authority=None, profession_infos=[info])
    return x509.Admissions(authority=None, admissions=[entry])


def _card_subject(kvnr: str, ik: str | None, given_name: str, family_name: str) -> x509.Name:
    suffix = f" {TEST_MARKER}"
    common_name = f"{given_name} {family_name}"[: MAX_CN_CHARS - len(suffix)] + suffix
    attributes = [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, TEST_KASSE),
    ]
    if ik is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ik))
    attributes += [
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, kvnr),
        x509.NameAttribute(NameOID.SURNAME, family_name),
        x509.NameAttribute(NameOID.GIVEN_NAME, given_name),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ]
    return x509.Name(attributes)


def _key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _write_private(path: Path, data: bytes) -> None:
    """Create ``path`` readable by the owner only (a key, even a test key)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
