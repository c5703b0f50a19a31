"""The handshake messages M1-M4 as CBOR maps (gemSpec_Krypt ch. 7: A_24608 server M1 → M2,
A_24623 client M2 → M3, A_24626 server M3 → M4; coded as in lib-vau
``data/VauMessage{1,2,3,3InnerLayer,4}`` and libasl ``model.rs``).

```
M1  {"MessageType":"M1", "ECDH_PK":{crv,x,y}, <KEM>_PK: bstr(1184)}
M2  {"MessageType":"M2", "ECDH_ct":{crv,x,y}, <KEM>_ct: bstr(1088), "AEAD_ct": bstr}
M3  {"MessageType":"M3", "AEAD_ct": bstr, "AEAD_ct_key_confirmation": bstr(60)}
    inner layer of M3.AEAD_ct: {"ECDH_ct":{crv,x,y}, <KEM>_ct: bstr(1088), "ERP":bool, "ESO":bool}
M4  {"MessageType":"M4", "AEAD_ct_key_confirmation": bstr(60)}
```

``<KEM>`` is ``ML-KEM-768`` (ASL) or ``Kyber768`` (ePA VAU), see :class:`KemMode`. Unknown
extra keys are tolerated as in lib-vau (``FAIL_ON_UNKNOWN_PROPERTIES=false``); every message
is size-checked before decoding. Transcripts hash the raw received bytes, never a re-encoding.
"""

from __future__ import annotations

from dataclasses import dataclass

from healthid.protocol.vau import cbor
from healthid.protocol.vau._fields import bool_field, bytes_field, map_field, text_field
from healthid.protocol.vau.cbor import CborValue
from healthid.protocol.vau.errors import VauError, VauMalformedError, VauMessageTypeError
from healthid.protocol.vau.hybrid import HybridCiphertext
from healthid.protocol.vau.kem import CIPHERTEXT_SIZE, PUBLIC_KEY_SIZE, KemMode
from healthid.protocol.vau.primitives import (
    GCM_IV_SIZE,
    GCM_TAG_SIZE,
    HASH_SIZE,
    EcdhPublicKey,
)

MAX_SIGNED_KEYS_SIZE = 48 * 1024  # SignedPublicVauKeys incl. OCSP response / attestation
MAX_M1_SIZE = 4096  # honest: ~1.3 KB
MAX_M2_SIZE = MAX_SIGNED_KEYS_SIZE + 2048  # honest: ~2.8 KB plus the OCSP response
MAX_M3_SIZE = 4096  # honest: ~1.4 KB
MAX_M3_INNER_SIZE = 2048  # honest: ~1.25 KB
MAX_M4_SIZE = 512  # honest: ~90 B
AEAD_OVERHEAD = GCM_IV_SIZE + GCM_TAG_SIZE
KEY_CONFIRMATION_SIZE = AEAD_OVERHEAD + HASH_SIZE  # AEAD of one SHA-256 value: 60 bytes

MESSAGE_TYPE = "MessageType"
AEAD_CT = "AEAD_ct"
KEY_CONFIRMATION = "AEAD_ct_key_confirmation"


def _decode_message(data: bytes, expected: str, max_size: int) -> dict[str, CborValue]:
    m = cbor.decode_map(data, max_size=max_size)
    if text_field(m, MESSAGE_TYPE, max_size=16) != expected:
        raise VauMessageTypeError(f"expected MessageType {expected!r}")
    return m


def _aead_field(m: dict[str, CborValue], key: str, max_plaintext: int) -> bytes:
    blob = bytes_field(m, key, max_size=max_plaintext + AEAD_OVERHEAD)
    if len(blob) < AEAD_OVERHEAD:
        raise VauMalformedError(f"field {key!r} is shorter than IV and tag")
    return blob


@dataclass(frozen=True, kw_only=True, slots=True)
class Message1:
    """M1: the client's ephemeral ECDH and KEM public keys."""

    ecdh_pk: EcdhPublicKey
    kem_pk: bytes

    def encode(self, mode: KemMode) -> bytes:
        return cbor.encode(
            {
                MESSAGE_TYPE: "M1",
                "ECDH_PK": self.ecdh_pk.to_map(),
                mode.public_key_field: self.kem_pk,
            }
        )


def parse_m1(data: bytes, mode: KemMode) -> Message1:
    """Parse M1 (≤ :data:`MAX_M1_SIZE`; ``crv``/x/y and the 1184-byte KEM key checked)."""
    m = _decode_message(data, "M1", MAX_M1_SIZE)
    return Message1(
        ecdh_pk=EcdhPublicKey.from_map(map_field(m, "ECDH_PK")),
        kem_pk=bytes_field(m, mode.public_key_field, size=PUBLIC_KEY_SIZE),
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class Message2:
    """M2: the server's encapsulation to M1's keys and ``AEAD(K1_s2c, SignedPublicVauKeys)``."""

    ct: HybridCiphertext
    aead_ct: bytes

    def encode(self, mode: KemMode) -> bytes:
        return cbor.encode(
            {
                MESSAGE_TYPE: "M2",
                "ECDH_ct": self.ct.ecdh_ct.to_map(),
                mode.ciphertext_field: self.ct.kem_ct,
                AEAD_CT: self.aead_ct,
            }
        )


def parse_m2(data: bytes, mode: KemMode) -> Message2:
    """Parse M2 (≤ :data:`MAX_M2_SIZE`)."""
    m = _decode_message(data, "M2", MAX_M2_SIZE)
    return Message2(ct=_hybrid_ct(m, mode), aead_ct=_aead_field(m, AEAD_CT, MAX_SIGNED_KEYS_SIZE))


def _hybrid_ct(m: dict[str, CborValue], mode: KemMode) -> HybridCiphertext:
    return HybridCiphertext(
        ecdh_ct=EcdhPublicKey.from_map(map_field(m, "ECDH_ct")),
        kem_ct=bytes_field(m, mode.ciphertext_field, size=CIPHERTEXT_SIZE),
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class Message3Inner:
    """The plaintext of M3's ``AEAD_ct``: the client's encapsulation to the server's signed
    VAU keys and the ``ERP``/``ESO`` flags (both ``false``; we refuse ``true``)."""

    ct: HybridCiphertext
    erp: bool = False
    eso: bool = False

    def encode(self, mode: KemMode) -> bytes:
        return cbor.encode(
            {
                "ECDH_ct": self.ct.ecdh_ct.to_map(),
                mode.ciphertext_field: self.ct.kem_ct,
                "ERP": self.erp,
                "ESO": self.eso,
            }
        )


def parse_m3_inner(data: bytes, mode: KemMode) -> Message3Inner:
    m = cbor.decode_map(data, max_size=MAX_M3_INNER_SIZE)
    return Message3Inner(ct=_hybrid_ct(m, mode), erp=bool_field(m, "ERP"), eso=bool_field(m, "ESO"))


@dataclass(frozen=True, kw_only=True, slots=True)
class Message3:
    """M3: ``AEAD(K1_c2s, inner)`` and ``AEAD(K2_c2s_key_confirmation, SHA-256(M1‖M2‖AEAD_ct))``."""

    aead_ct: bytes
    key_confirmation: bytes

    def encode(self) -> bytes:
        return cbor.encode(
            {MESSAGE_TYPE: "M3", AEAD_CT: self.aead_ct, KEY_CONFIRMATION: self.key_confirmation}
        )


def parse_m3(data: bytes) -> Message3:
    """Parse M3 (≤ :data:`MAX_M3_SIZE`; the key confirmation is exactly 60 bytes)."""
    m = _decode_message(data, "M3", MAX_M3_SIZE)
    return Message3(
        aead_ct=_aead_field(m, AEAD_CT, MAX_M3_INNER_SIZE),
        key_confirmation=bytes_field(m, KEY_CONFIRMATION, size=KEY_CONFIRMATION_SIZE),
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class Message4:
    """M4: ``AEAD(K2_s2c_key_confirmation, SHA-256(M1 ‖ M2 ‖ M3))``."""

    key_confirmation: bytes

    def encode(self) -> bytes:
        return cbor.encode({MESSAGE_TYPE: "M4", KEY_CONFIRMATION: self.key_confirmation})


def parse_m4(data: bytes) -> Message4:
    """Parse M4 (≤ :data:`MAX_M4_SIZE`; the key confirmation is exactly 60 bytes)."""
    m = _decode_message(data, "M4", MAX_M4_SIZE)
    return Message4(key_confirmation=bytes_field(m, KEY_CONFIRMATION, size=KEY_CONFIRMATION_SIZE))


def error_body(error: VauError) -> bytes:
    """The CBOR body of an HTTP error reply (libasl ``ErrorResponse``), fixed texts only."""
    return cbor.encode(
        {
            MESSAGE_TYPE: "Error",
            "ErrorCode": error.error_code,
            "ErrorMessage": error.error_message,
        }
    )
