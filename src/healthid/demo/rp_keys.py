"""TEST-ONLY key material of the DEMO relying party (spec §1.3, §4, §7).

Three P-256 keys, generated on first start under the demo RP's data directory (spec §7: an RP's
TLS and enc keys are P-256; gsi-testsuite asserts ``crv: P-256``):

- ``puk_fd_sig``: signs the RP's entity configuration (its federation key, what the master
  vouches for);
- ``puk_tls_sig``: the mTLS client key with a self-signed certificate
  (``self_signed_tls_client_auth``, RFC 8705 §2.2), published as ``use: sig`` + ``x5c``;
- ``puk_fd_enc``: the ID-token encryption key (``use: enc``, spec §5).

Files are created ``O_EXCL | O_NOFOLLOW`` with mode 0600, named and headed TEST-ONLY, and
refused on load when group or others may read them.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from healthid.keys import es256
from healthid.protocol.jose import Signer, public_jwk

SIG_KID: Final = "puk_fd_sig"  # spec §7: the RP's entity-statement key
TLS_KID: Final = "puk_tls_sig"  # spec §7: the RP's mTLS certificate key
ENC_KID: Final = "puk_fd_enc"  # spec §5/§7: the RP's ID-token encryption key
SIG_KEY_FILE: Final = "TEST-ONLY-demo-rp-sig.key.pem"
TLS_KEY_FILE: Final = "TEST-ONLY-demo-rp-tls.key.pem"
TLS_CERT_FILE: Final = "TEST-ONLY-demo-rp-tls.cert.pem"
ENC_KEY_FILE: Final = "TEST-ONLY-demo-rp-enc.key.pem"
FEDERATION_JWKS_FILE: Final = "demo-rp-federation-jwks.json"  # for the dev master's config
README_FILE: Final = "TEST-ONLY-README.txt"
FILE_MODE: Final = 0o600
DIR_MODE: Final = 0o700
# A self-signed development certificate; re-issued (same key) when it has expired.
CERTIFICATE_LIFETIME: Final = timedelta(days=365)
CERTIFICATE_BACKDATE: Final = timedelta(hours=1)
_README: Final = (
    "healthid DEMO relying party - TEST ONLY, NOT FOR PRODUCTION.\n"
    "The *.key.pem files are UNENCRYPTED private keys of a development relying party.\n"
    f"{FEDERATION_JWKS_FILE} is its federation key set: list it as the RP's jwks_file in the\n"
    "development federation master's config (healthid fedmaster --config ...).\n"
)
_PEM_HEADER: Final = (
    b"# TEST-ONLY key of the healthid demo relying party. Never use it elsewhere.\n"
)


class DemoRpKeyError(ValueError):
    """A key file of the demo RP cannot be used; the message says which and why."""


@dataclass(frozen=True, kw_only=True)
class DemoRpKeys:
    """The demo RP's private keys and its TLS client certificate."""

    signing_key: ec.EllipticCurvePrivateKey
    tls_key: ec.EllipticCurvePrivateKey
    tls_certificate: x509.Certificate
    encryption_key: ec.EllipticCurvePrivateKey

    def federation_jwks(self) -> dict[str, Any]:
        """The entity-statement key set (top-level ``jwks``, OpenID Federation §3)."""
        return {"keys": [public_jwk(self.signing_key.public_key(), kid=SIG_KID, use="sig")]}

    def relying_party_jwks(self) -> dict[str, Any]:
        """``openid_relying_party.jwks``: the TLS cert key (sig + x5c) and the enc key (spec §4)."""
        der = self.tls_certificate.public_bytes(serialization.Encoding.DER)
        tls = public_jwk(self.tls_key.public_key(), kid=TLS_KID, use="sig")
        enc = public_jwk(self.encryption_key.public_key(), kid=ENC_KID, use="enc")
        # RFC 7517 §4.7: x5c holds standard (not url-safe) base64 DER.
        return {"keys": [{**tls, "x5c": [base64.b64encode(der).decode("ascii")]}, enc]}

    def certificate_pem(self) -> str:
        return self.tls_certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")

    def signer(self) -> Signer:
        """An ES256 :data:`~healthid.protocol.jose.Signer` for the entity-statement key."""
        key = self.signing_key

        def sign(kid: str, data: bytes) -> bytes:
            if kid != SIG_KID:
                raise ValueError("the demo RP signs statements only with its federation key")
            return es256.sign(key, data)

        return sign


def _write_new(path: Path, data: bytes) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        os.write(fd, data)
    finally:
        os.close(fd)


def _check_private(path: Path) -> bytes:
    st = path.lstat()
    if not stat.S_ISREG(st.st_mode):
        raise DemoRpKeyError(f"{path} is not a regular file")
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise DemoRpKeyError(f"{path} is readable by group or others (chmod 600)")
    return path.read_bytes()


def _load_or_create_key(path: Path) -> ec.EllipticCurvePrivateKey:
    if not path.exists():
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _write_new(path, _PEM_HEADER + pem)
        return key
    pem = _check_private(path)
    try:
        loaded = serialization.load_pem_private_key(pem, password=None)
    except ValueError:
        raise DemoRpKeyError(f"{path} is not a PEM private key") from None
    if not isinstance(loaded, ec.EllipticCurvePrivateKey) or not isinstance(
        loaded.curve, ec.SECP256R1
    ):
        raise DemoRpKeyError(f"{path} is not a P-256 private key")
    return loaded


def self_signed_certificate(
    key: ec.EllipticCurvePrivateKey, *, common_name: str, now: datetime
) -> x509.Certificate:
    """A self-signed TLS client certificate (RFC 8705 §2.2), marked TEST-ONLY in its subject."""
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "healthid demo RP TEST-ONLY"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64] or "demo-rp"),
        ]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CERTIFICATE_BACKDATE)
        .not_valid_after(now + CERTIFICATE_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .sign(key, hashes.SHA256())
    )


def _load_or_create_certificate(
    path: Path, key: ec.EllipticCurvePrivateKey, *, common_name: str
) -> x509.Certificate:
    now = datetime.now(UTC)
    if path.exists():
        raw = _check_private(path)
        try:
            cert = x509.load_pem_x509_certificate(raw)
        except ValueError:
            raise DemoRpKeyError(f"{path} is not a PEM certificate") from None
        if cert.public_key() != key.public_key():
            raise DemoRpKeyError(f"{path} does not certify {TLS_KEY_FILE}")
        if cert.not_valid_after_utc > now:
            return cert
        path.unlink()  # expired: re-issue for the same key
    cert = self_signed_certificate(key, common_name=common_name, now=now)
    _write_new(path, cert.public_bytes(serialization.Encoding.PEM))
    return cert


def load_or_create_rp_keys(data_dir: Path, *, common_name: str) -> DemoRpKeys:
    """The demo RP's keys under ``data_dir``, generated on first start (module docstring).

    Also (re)writes its public federation JWKS, for the development master's config.
    """
    data_dir.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    tls_key = _load_or_create_key(data_dir / TLS_KEY_FILE)
    keys = DemoRpKeys(
        signing_key=_load_or_create_key(data_dir / SIG_KEY_FILE),
        tls_key=tls_key,
        tls_certificate=_load_or_create_certificate(
            data_dir / TLS_CERT_FILE, tls_key, common_name=common_name
        ),
        encryption_key=_load_or_create_key(data_dir / ENC_KEY_FILE),
    )
    (data_dir / README_FILE).write_text(_README, encoding="utf-8")
    (data_dir / FEDERATION_JWKS_FILE).write_text(
        json.dumps(keys.federation_jwks(), indent=2) + "\n", encoding="utf-8"
    )
    return keys
