"""Keys, a signer and a small federation (master, RP) for the federation tests."""

from __future__ import annotations

import base64
import datetime
import json
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from healthid.protocol.federation.statements import sign_entity_statement
from healthid.protocol.jose import public_jwk

NOW = 1_750_000_000
MASTER = "https://master.example"
RP = "https://rp.example"


@dataclass(frozen=True, kw_only=True)
class Key:
    kid: str
    private: ec.EllipticCurvePrivateKey

    def jwk(self, use: str = "sig") -> dict[str, Any]:
        return public_jwk(self.private.public_key(), kid=self.kid, use=use)

    @property
    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.jwk()]}

    def sign(self, kid: str, data: bytes) -> bytes:
        assert kid == self.kid
        r, s = decode_dss_signature(self.private.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def new_key(kid: str) -> Key:
    return Key(kid=kid, private=ec.generate_private_key(ec.SECP256R1()))


def self_signed_cert_b64(key: ec.EllipticCurvePrivateKey, cn: str = "test") -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    start = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


def rp_configuration(
    rp_key: Key,
    *,
    metadata: dict[str, Any] | None = None,
    iss: str = RP,
    authority_hints: list[str] | None = None,
    exp: int = NOW + 3600,
    signing_key: Key | None = None,
    jwks: dict[str, Any] | None = None,
) -> str:
    signer = signing_key or rp_key
    claims = {
        "iss": iss,
        "sub": iss,
        "iat": NOW - 10,
        "exp": exp,
        "jwks": jwks or rp_key.jwks,
        "authority_hints": [MASTER] if authority_hints is None else authority_hints,
        "metadata": {"openid_relying_party": metadata or {}},
    }
    return sign_entity_statement(claims, kid=signer.kid, signer=signer.sign)


def unverified_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
