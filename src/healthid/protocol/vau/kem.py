"""The post-quantum half of the hybrid KEM, in two modes (vau-and-tee.md §1.3, §1.7).

- :attr:`KemMode.MLKEM768` (default): plain FIPS 203 ML-KEM-768 as gematik's ASL uses it
  (libasl ``model.rs``: fields ``ML-KEM-768_PK`` / ``ML-KEM-768_ct``).
- :attr:`KemMode.KYBER768`: Kyber768 round 3 (v3.0.2) as on the ePA VAU wire (lib-vau
  ``VauMessage1`` …: fields ``Kyber768_PK`` / ``Kyber768_ct``). Keys and ciphertexts have the
  same format as ML-KEM-768's; only the shared secret differs, and lib-vau computes the
  Kyber-v3 secret from ML-KEM's as ``SHAKE256(ss_mlkem ‖ SHA3-256(ct))[0:32]``
  (``KyberEncoding.java``, after words.filippo.io "ML-KEM as Kyber v3"). We do the same with
  ``cryptography``'s constant-time ML-KEM, and the tests check it against ``kyber_py``'s
  round-3 ``Kyber768`` in both directions.

Private keys come in two forms. :class:`SeedKemKey` (the 64-byte FIPS 203 seed ``d ‖ z``,
``cryptography``) is what we generate and use in production. :class:`ExpandedKemKey` (the
2400-byte expanded decapsulation key that gematik's fixtures and libasl key files hold) cannot
be loaded by ``cryptography``; it decapsulates with the pure-Python ``kyber_py`` (round-3
``Kyber768`` or ``ML_KEM_768``), which is neither fast nor constant-time: for interoperability
tests and fixtures only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum

from cryptography.hazmat.primitives.asymmetric import mlkem

from healthid.protocol.vau.errors import VauMalformedError
from healthid.protocol.vau.primitives import RandomBytes

PUBLIC_KEY_SIZE = 1184  # ML-KEM-768 ek / Kyber768 pk
CIPHERTEXT_SIZE = 1088
SHARED_SECRET_SIZE = 32
SEED_SIZE = 64  # FIPS 203 d ‖ z
EXPANDED_KEY_SIZE = 2400  # dk_pke(1152) ‖ ek(1184) ‖ H(ek)(32) ‖ z(32)
_EK_OFFSET = 1152
_HASH_OFFSET = _EK_OFFSET + PUBLIC_KEY_SIZE


class KemMode(StrEnum):
    """Which KEM the handshake uses; it fixes the CBOR field names and the shared secret."""

    MLKEM768 = "mlkem768"
    KYBER768 = "kyber768"

    @property
    def public_key_field(self) -> str:
        """``ML-KEM-768_PK`` (ASL) or ``Kyber768_PK`` (ePA VAU) in M1 and VauPublicKeys."""
        return "ML-KEM-768_PK" if self is KemMode.MLKEM768 else "Kyber768_PK"

    @property
    def ciphertext_field(self) -> str:
        """``ML-KEM-768_ct`` (ASL) or ``Kyber768_ct`` (ePA VAU) in M2 and M3's inner layer."""
        return "ML-KEM-768_ct" if self is KemMode.MLKEM768 else "Kyber768_ct"


def kyber_v3_secret(mlkem_secret: bytes, ciphertext: bytes) -> bytes:
    """Kyber v3.0.2's shared secret from ML-KEM's: ``SHAKE256(K ‖ SHA3-256(c))[0:32]``."""
    return hashlib.shake_256(mlkem_secret + hashlib.sha3_256(ciphertext).digest()).digest(32)


def encapsulate(mode: KemMode, public_key: bytes) -> tuple[bytes, bytes]:
    """Encapsulate to ``public_key``; returns ``(shared_secret, ciphertext)``.

    The key is refused unless it is 1184 bytes and passes FIPS 203's modulus check. The
    encapsulation randomness comes from OpenSSL's CSPRNG (``cryptography`` takes no RNG).
    """
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise VauMalformedError(f"{mode.public_key_field} must be {PUBLIC_KEY_SIZE} bytes")
    try:
        key = mlkem.MLKEM768PublicKey.from_public_bytes(public_key)
    except ValueError:
        raise VauMalformedError(f"{mode.public_key_field} is not a valid key") from None
    secret, ciphertext = key.encapsulate()
    if mode is KemMode.KYBER768:
        secret = kyber_v3_secret(secret, ciphertext)
    return secret, ciphertext


def _check_ciphertext(mode: KemMode, ciphertext: bytes) -> None:
    if len(ciphertext) != CIPHERTEXT_SIZE:
        raise VauMalformedError(f"{mode.ciphertext_field} must be {CIPHERTEXT_SIZE} bytes")


@dataclass(frozen=True, slots=True)
class SeedKemKey:
    """An ML-KEM-768 private key held as its 64-byte seed (``cryptography``, constant time)."""

    seed: bytes = field(repr=False)
    _key: mlkem.MLKEM768PrivateKey = field(repr=False, compare=False)
    public_key: bytes = field(repr=False, compare=False)

    @classmethod
    def from_seed(cls, seed: bytes) -> SeedKemKey:
        if len(seed) != SEED_SIZE:
            raise VauMalformedError(f"ML-KEM-768 seed must be {SEED_SIZE} bytes")
        key = mlkem.MLKEM768PrivateKey.from_seed_bytes(seed)
        return cls(seed, key, key.public_key().public_bytes_raw())

    @classmethod
    def generate(cls, rng: RandomBytes) -> SeedKemKey:
        return cls.from_seed(rng(SEED_SIZE))

    def decapsulate(self, mode: KemMode, ciphertext: bytes) -> bytes:
        _check_ciphertext(mode, ciphertext)
        secret = self._key.decapsulate(ciphertext)
        if mode is KemMode.KYBER768:
            return kyber_v3_secret(secret, ciphertext)
        return secret


@dataclass(frozen=True, slots=True)
class ExpandedKemKey:
    """A 2400-byte expanded decapsulation key (gematik fixtures, libasl ``ML-KEM-768_SK``).

    Decapsulation runs in pure Python (``kyber_py``): slow and not constant-time, so this
    form is for interoperability tests only; production keys are :class:`SeedKemKey`.
    """

    expanded: bytes = field(repr=False)

    def __post_init__(self) -> None:
        # FIPS 203 §7.3 decapsulation-key check; Kyber v3 keys share the layout.
        if len(self.expanded) != EXPANDED_KEY_SIZE:
            raise VauMalformedError(f"expanded KEM key must be {EXPANDED_KEY_SIZE} bytes")
        embedded_hash = self.expanded[_HASH_OFFSET : _HASH_OFFSET + 32]
        if hashlib.sha3_256(self.public_key).digest() != embedded_hash:
            raise VauMalformedError("expanded KEM key: H(ek) does not match the embedded ek")

    @property
    def public_key(self) -> bytes:
        return self.expanded[_EK_OFFSET:_HASH_OFFSET]

    def decapsulate(self, mode: KemMode, ciphertext: bytes) -> bytes:
        _check_ciphertext(mode, ciphertext)
        if mode is KemMode.KYBER768:
            from kyber_py.kyber import Kyber768  # type: ignore[import-untyped]

            return bytes(Kyber768.decaps(self.expanded, ciphertext))
        from kyber_py.ml_kem import ML_KEM_768  # type: ignore[import-untyped]

        return bytes(ML_KEM_768.decaps(self.expanded, ciphertext))


KemPrivateKey = SeedKemKey | ExpandedKemKey
