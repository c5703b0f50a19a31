"""The hybrid KEM: ECDH P-256 plus ML-KEM-768/Kyber768 (lib-vau ``KEM.encapsulateMessage``,
``KEM.decapsulateMessages``; libasl ``derive_handshake_material``, ``derive_shared_secret``).

The shared secret is ``ECDH x-coordinate (32) ‖ KEM secret (32)``. The "ECDH ciphertext" is the
sender's ephemeral public key (the spec's misleading field name ``ECDH_ct``).
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec

from healthid.protocol.vau import kem
from healthid.protocol.vau.kem import KemMode, KemPrivateKey
from healthid.protocol.vau.primitives import (
    EcdhPublicKey,
    RandomBytes,
    ecdh,
    generate_ec_key,
)

HYBRID_SECRET_SIZE = 64


@dataclass(frozen=True, kw_only=True, slots=True)
class HybridCiphertext:
    """``ECDH_ct`` (the sender's ephemeral P-256 key) and the KEM ciphertext."""

    ecdh_ct: EcdhPublicKey
    kem_ct: bytes


def encapsulate(
    mode: KemMode, ecdh_pk: EcdhPublicKey, kem_pk: bytes, rng: RandomBytes
) -> tuple[bytes, HybridCiphertext]:
    """Encapsulate to a peer's ECDH and KEM public keys; returns ``(secret64, ciphertext)``."""
    peer = ecdh_pk.key()
    kem_secret, kem_ct = kem.encapsulate(mode, kem_pk)
    ephemeral = generate_ec_key(rng)
    secret = ecdh(ephemeral, peer) + kem_secret
    ct = HybridCiphertext(ecdh_ct=EcdhPublicKey.from_key(ephemeral.public_key()), kem_ct=kem_ct)
    return secret, ct


def decapsulate(
    mode: KemMode,
    ecdh_sk: ec.EllipticCurvePrivateKey,
    kem_sk: KemPrivateKey,
    ct: HybridCiphertext,
) -> bytes:
    """The 64-byte hybrid secret of ``ct`` under our private keys."""
    peer = ct.ecdh_ct.key()
    return ecdh(ecdh_sk, peer) + kem_sk.decapsulate(mode, ct.kem_ct)
