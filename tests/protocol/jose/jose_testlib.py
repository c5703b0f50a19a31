"""Keys and a signer for the JOSE tests: P-256 keys generated per test run, signed like an HSM."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from healthid.protocol.jose import public_jwk


@dataclass(frozen=True, kw_only=True)
class TestKey:
    kid: str
    private: ec.EllipticCurvePrivateKey

    @property
    def jwk(self) -> dict[str, str]:
        return public_jwk(self.private.public_key(), kid=self.kid, use="sig")

    @property
    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [self.jwk]}

    def sign(self, kid: str, data: bytes) -> bytes:
        assert kid == self.kid
        r, s = decode_dss_signature(self.private.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def new_key(kid: str, curve: ec.EllipticCurve | None = None) -> TestKey:
    return TestKey(kid=kid, private=ec.generate_private_key(curve or ec.SECP256R1()))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(obj: object) -> str:
    return b64(json.dumps(obj, separators=(",", ":")).encode())


def unb64(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
