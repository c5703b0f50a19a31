"""The primitives of the VAU protocol (gemSpec_Krypt ch. 7; vau-and-tee.md §1.3).

- ECDH on P-256; the shared secret is the 32-byte x-coordinate. A public key travels as the
  CBOR map ``{"crv": "P-256", "x": bstr32, "y": bstr32}`` (lib-vau ``VauEccPublicKey``).
- HKDF-SHA256 with an empty salt (= 32 zero bytes) and empty info (lib-vau ``KEM.kdf``:
  BouncyCastle ``HKDFParameters(ikm, null, null)``; libasl ``hkdf_expand``).
- AES-256-GCM, 12-byte IV, 16-byte tag. Handshake blobs are ``IV(12, random) ‖ ct ‖ tag``
  without AAD (A_24619; lib-vau ``KEM.encryptAead``).
- SHA-256 for transcripts.

Randomness comes from the injected ``rng`` (CONVENTIONS 2), ephemeral EC keys included.

Requirement numbers (A_…) in this package are those gematik's ePA reference code tags its
implementation with (IBM ``epa`` library ``GEMREQ`` markers, lib-vau and lib-vau-csharp
comments); the gemSpec_Krypt ch. 7 text itself was not available (vau-and-tee.md §1).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from healthid.protocol.vau._fields import bytes_field, require_text
from healthid.protocol.vau.cbor import CborValue
from healthid.protocol.vau.errors import VauDecryptionError, VauError, VauMalformedError

RandomBytes = Callable[[int], bytes]  # e.g. secrets.token_bytes, injected (CONVENTIONS 2)
Clock = Callable[[], int]  # Unix time in whole seconds, injected

CURVE_NAME = "P-256"
COORDINATE_SIZE = 32
ECDH_SECRET_SIZE = 32
AES_KEY_SIZE = 32  # AES-256
GCM_IV_SIZE = 12  # A_24628
GCM_TAG_SIZE = 16  # A_24628
HASH_SIZE = 32  # SHA-256
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_CURVE = ec.SECP256R1()


@dataclass(frozen=True, kw_only=True, slots=True)
class EcdhPublicKey:
    """An uncompressed P-256 point as the VAU CBOR map ``{"crv", "x", "y"}``."""

    x: bytes
    y: bytes

    @classmethod
    def from_map(cls, m: dict[str, CborValue]) -> EcdhPublicKey:
        """Parse the map: ``crv`` must be ``"P-256"``, ``x``/``y`` exactly 32 bytes each
        (lib-vau ``verifyEccPublicKey``; libasl ``validate_ecdh_pk``)."""
        require_text(m, "crv", CURVE_NAME)
        return cls(
            x=bytes_field(m, "x", size=COORDINATE_SIZE),
            y=bytes_field(m, "y", size=COORDINATE_SIZE),
        )

    @classmethod
    def from_key(cls, key: ec.EllipticCurvePublicKey) -> EcdhPublicKey:
        numbers = key.public_numbers()
        return cls(
            x=numbers.x.to_bytes(COORDINATE_SIZE, "big"),
            y=numbers.y.to_bytes(COORDINATE_SIZE, "big"),
        )

    def to_map(self) -> dict[str, CborValue]:
        return {"crv": CURVE_NAME, "x": self.x, "y": self.y}

    def key(self) -> ec.EllipticCurvePublicKey:
        """The point as a key; refused unless it lies on P-256 (and is not the identity)."""
        try:
            return ec.EllipticCurvePublicKey.from_encoded_point(_CURVE, b"\x04" + self.x + self.y)
        except ValueError:
            raise VauMalformedError("ECDH public key is not a point on P-256") from None


def generate_ec_key(rng: RandomBytes) -> ec.EllipticCurvePrivateKey:
    """A fresh P-256 key from ``rng`` (rejection sampling of the scalar in [1, n-1])."""
    for _ in range(64):
        scalar = int.from_bytes(rng(32), "big")
        if 0 < scalar < _P256_ORDER:
            return ec.derive_private_key(scalar, _CURVE)
    raise VauError("the random source keeps returning scalars outside [1, n-1]")


def ec_private_to_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The raw 32-byte scalar (for state blobs and libasl-style key files)."""
    return key.private_numbers().private_value.to_bytes(32, "big")


def ec_private_from_bytes(raw: bytes) -> ec.EllipticCurvePrivateKey:
    """Load a raw 32-byte P-256 scalar."""
    scalar = int.from_bytes(raw, "big")
    if len(raw) != 32 or not 0 < scalar < _P256_ORDER:
        raise VauMalformedError("P-256 private scalar must be 32 bytes in [1, n-1]")
    return ec.derive_private_key(scalar, _CURVE)


def ecdh(private_key: ec.EllipticCurvePrivateKey, peer: ec.EllipticCurvePublicKey) -> bytes:
    """The 32-byte x-coordinate of the shared point (lib-vau ``EllipticCurve.getSharedSecret``)."""
    return private_key.exchange(ec.ECDH(), peer)


def hkdf(ikm: bytes, length: int) -> bytes:
    """HKDF-SHA256, salt empty (32 zero bytes), info empty (lib-vau ``KEM.kdf``)."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=b"").derive(ikm)


def sha256(*parts: bytes) -> bytes:
    """SHA-256 over the concatenation (the transcript hashes of M3 and M4)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.digest()


@dataclass(frozen=True, kw_only=True, slots=True)
class HandshakeKeys:
    """K1 = HKDF(ss_e, 64): ``K1_c2s = [0:32]``, ``K1_s2c = [32:64]`` (order fixed in lib-vau
    1.0.9; libasl ``derive_handshake_keys``)."""

    c2s: bytes = field(repr=False)
    s2c: bytes = field(repr=False)


@dataclass(frozen=True, kw_only=True, slots=True)
class SessionKeys:
    """K2 = HKDF(ss_e ‖ ss_s, 160), split in five 32-byte keys in this order (lib-vau
    ``KdfKey2``; libasl ``derive_session_keys``)."""

    c2s_key_confirmation: bytes = field(repr=False)
    c2s_app_data: bytes = field(repr=False)
    s2c_key_confirmation: bytes = field(repr=False)
    s2c_app_data: bytes = field(repr=False)
    key_id: bytes


def derive_handshake_keys(ss_e: bytes) -> HandshakeKeys:
    """K1 from the ephemeral shared secret ``ss_e`` (ECDH x ‖ KEM ss, 64 bytes)."""
    okm = hkdf(ss_e, 64)
    return HandshakeKeys(c2s=okm[:32], s2c=okm[32:])


def derive_session_keys(ss_e: bytes, ss_s: bytes) -> SessionKeys:
    """K2 from ``ss_e ‖ ss_s`` (ss_s: secret encapsulated to the server's signed VAU keys)."""
    okm = hkdf(ss_e + ss_s, 160)
    return SessionKeys(
        c2s_key_confirmation=okm[0:32],
        c2s_app_data=okm[32:64],
        s2c_key_confirmation=okm[64:96],
        s2c_app_data=okm[96:128],
        key_id=okm[128:160],
    )


def aead_seal(key: bytes, plaintext: bytes, rng: RandomBytes) -> bytes:
    """``IV(12, random) ‖ AES-256-GCM(key, plaintext) ‖ tag``, no AAD (handshake blobs)."""
    iv = rng(GCM_IV_SIZE)
    return iv + AESGCM(key).encrypt(iv, plaintext, None)


def aead_open(key: bytes, blob: bytes, *, error: type[VauError] = VauDecryptionError) -> bytes:
    """Open a handshake blob; a short blob or GCM FAIL raises ``error``."""
    if len(blob) < GCM_IV_SIZE + GCM_TAG_SIZE:
        raise error("AEAD ciphertext shorter than IV and tag")
    try:
        return AESGCM(key).decrypt(blob[:GCM_IV_SIZE], blob[GCM_IV_SIZE:], None)
    except InvalidTag:
        raise error("AES-GCM authentication failed") from None
