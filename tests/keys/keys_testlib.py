"""Shared helpers for tests/keys (imported by name: pytest puts this directory on sys.path)."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from joserfc.jwk import ECKey

VECTORS = Path(__file__).parent / "vectors"


def b64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verify_es256(jwk: dict[str, str], data: bytes, signature: bytes) -> bool:
    """RFC 7518 §3.4 verification with cryptography only: JWK -> key, R || S -> DER."""
    assert jwk["kty"] == "EC"
    assert jwk["crv"] == "P-256"
    numbers = ec.EllipticCurvePublicNumbers(
        int.from_bytes(b64u(jwk["x"]), "big"), int.from_bytes(b64u(jwk["y"]), "big"), ec.SECP256R1()
    )
    if len(signature) != 64:
        return False
    der = encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )
    try:
        numbers.public_key().verify(der, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def joserfc_thumbprint(jwk: Mapping[str, str]) -> str:
    """RFC 7638 thumbprint by an independent implementation (joserfc)."""
    members: dict[str, str | list[str]] = {k: jwk[k] for k in ("kty", "crv", "x", "y")}
    return ECKey.import_key(members).thumbprint()


def load_vector(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / f"{name}.json").read_text())
    return data


class FakeClock:
    """An injected clock: Unix seconds, moved by the test."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: int) -> None:
        self.now += seconds
