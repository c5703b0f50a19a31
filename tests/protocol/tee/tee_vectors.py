"""The dcap-qvl sample quotes (vectors/README.md): paths, the time they verify at, the SGX
sample's measurements, and test-only helpers for attestation documents."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from healthid.protocol.jose.keys import public_jwk

VECTORS = Path(__file__).parent / "vectors"
# TCB info issueDate + 1 h: the samples verify offline at this time (vectors/README.md).
SAMPLE_NOW = datetime(2025, 6, 19, 11, 56, tzinfo=UTC)
SAMPLE_MRENCLAVE = bytes.fromhex("33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb")
SAMPLE_MRSIGNER = bytes.fromhex("815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6")
SAMPLE_REPORT_DATA = b"Hello, world!" + bytes(51)
NONCE = bytes(range(32))


def identity_jwk(seed: int = 1) -> dict[str, str]:
    """A deterministic TEST P-256 public JWK (private scalar = seed)."""
    key = ec.derive_private_key(seed, ec.SECP256R1()).public_key()
    return public_jwk(key, kid="identity", use="sig")
