"""A TEST component-PKI CA that certifies the IdP's ID-token signing keys in development.

gematik requires the ID-token key in the signed JWKS with an ``x5c`` chain from the TI
component PKI (spec §3.1, gsi-testsuite SIGNED_JWKS_004). In production those certificates
come from the Komp-PKI and are configured (``HEALTHID_TOKEN_CERTIFICATES_DIR``); in
development this CA issues them for whatever token key the key ring holds. Its certificates
prove nothing: every file is named TEST-ONLY.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CA_NAME = "healthid TEST Komp-PKI CA - not for production"
CA_KEY_FILE = "TEST-ONLY-komp-ca.key.pem"
CA_CERT_FILE = "TEST-ONLY-komp-ca.cert.pem"
CA_LIFETIME = timedelta(days=3650)
LEAF_LIFETIME = timedelta(days=365)


def _b64u_int(value: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), "big")


def public_key_of(jwk: dict[str, Any]) -> ec.EllipticCurvePublicKey:
    numbers = ec.EllipticCurvePublicNumbers(
        _b64u_int(jwk["x"]), _b64u_int(jwk["y"]), ec.SECP256R1()
    )
    return numbers.public_key()


@dataclass(frozen=True, kw_only=True)
class TestKompCa:
    __test__ = False  # not a pytest test class

    directory: Path
    private_key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @classmethod
    def create(cls, directory: Path) -> TestKompCa:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        key_path, cert_path = directory / CA_KEY_FILE, directory / CA_CERT_FILE
        if key_path.exists() and cert_path.exists():
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{key_path} is not an EC key")
            return cls(
                directory=directory,
                private_key=key,
                certificate=x509.load_pem_x509_certificate(cert_path.read_bytes()),
            )
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + CA_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256())
        )
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(directory=directory, private_key=key, certificate=cert)

    def x5c_for(self, jwk: dict[str, Any]) -> list[str]:
        """The chain (leaf, CA) certifying the token key ``jwk``, cached per kid."""
        kid = str(jwk["kid"])
        leaf_path = self.directory / f"TEST-ONLY-token-{kid}.cert.pem"
        if leaf_path.exists():
            leaf = x509.load_pem_x509_certificate(leaf_path.read_bytes())
        else:
            now = datetime.now(UTC)
            leaf = (
                x509.CertificateBuilder()
                .subject_name(
                    x509.Name(
                        [x509.NameAttribute(NameOID.COMMON_NAME, f"healthid TEST token {kid[:16]}")]
                    )
                )
                .issuer_name(self.certificate.subject)
                .public_key(public_key_of(jwk))
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(hours=1))
                .not_valid_after(now + LEAF_LIFETIME)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .sign(self.private_key, hashes.SHA256())
            )
            leaf_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
        return [
            base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode("ascii")
            for c in (leaf, self.certificate)
        ]
