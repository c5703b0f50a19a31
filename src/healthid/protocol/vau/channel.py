"""The encrypted user-data message of the VAU channel (gemSpec_Krypt A_24628-01, counters
A_24629/A_24631; lib-vau
``AbstractVauStateMachine``, ``EncryptedVauMessage``; libasl ``encrypt_session``,
``decrypt_session``)::

    off len  field
    0   1    version = 0x02
    1   1    PU flag: 0x01 production (PU), 0x00 test and reference environments
    2   1    0x01 request (client → server), 0x02 response (server → client)
    3   8    request counter, uint64 big-endian
    11  32   KeyID (from K2)
    43  12   IV = 4 random bytes ‖ uint64 BE counter
    55  n+16 AES-256-GCM ciphertext ‖ tag; AAD = bytes[0:43]

This module is stateless: it builds and splits messages and runs the header checks in the
order libasl does (length, version, PU, direction, KeyID). The counters are the state
machines' business (:mod:`healthid.protocol.vau.client`, :mod:`~healthid.protocol.vau.server`).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from enum import IntEnum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from healthid.protocol.vau.cbor import MAX_UINT
from healthid.protocol.vau.errors import (
    VauDecryptionError,
    VauDirectionError,
    VauEnvironmentError,
    VauKeyIdError,
    VauLengthError,
    VauOversizedError,
    VauVersionError,
)
from healthid.protocol.vau.primitives import GCM_IV_SIZE, GCM_TAG_SIZE, RandomBytes

VERSION = 0x02
HEADER_SIZE = 43
KEY_ID_SIZE = 32
IV_RANDOM_SIZE = 4
OVERHEAD = HEADER_SIZE + GCM_IV_SIZE + GCM_TAG_SIZE  # 71
MIN_MESSAGE_SIZE = OVERHEAD + 1  # 72: lib-vau MINIMUM_CIPHERTEXT_LENGTH, libasl BadFormat
DEFAULT_MAX_PLAINTEXT_SIZE = 1024 * 1024  # one inner HTTP message; configurable per side
MAX_COUNTER = MAX_UINT


class Environment(IntEnum):
    """The PU byte: which environment a side belongs to (A_24628)."""

    TEST = 0x00  # test and reference environments ("nonPU")
    PRODUCTION = 0x01  # Produktivumgebung (PU)


class Direction(IntEnum):
    """The request/response byte (A_24628)."""

    REQUEST = 0x01
    RESPONSE = 0x02


@dataclass(frozen=True, kw_only=True, slots=True)
class VauHeader:
    """The 43-byte header, which is also the AES-GCM AAD."""

    version: int
    pu: int
    direction: int
    counter: int
    key_id: bytes

    def encode(self) -> bytes:
        return (
            bytes((self.version, self.pu, self.direction))
            + self.counter.to_bytes(8, "big")
            + self.key_id
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class SplitMessage:
    """A message cut into header, IV and ciphertext ‖ tag (nothing checked but the length)."""

    header: VauHeader
    aad: bytes
    iv: bytes
    ciphertext: bytes


def split_message(message: bytes, *, max_plaintext_size: int) -> SplitMessage:
    """Cut ``message``; refuse it when longer than ``max_plaintext_size`` + 71 or shorter than
    72 bytes, before anything else is read (A_24628; lib-vau ``EncryptedVauMessage``)."""
    if len(message) > max_plaintext_size + OVERHEAD:
        raise VauOversizedError(f"VAU message of {len(message)} bytes exceeds the limit")
    if len(message) < MIN_MESSAGE_SIZE:
        raise VauLengthError(f"VAU message must be at least {MIN_MESSAGE_SIZE} bytes")
    aad = message[:HEADER_SIZE]
    header = VauHeader(
        version=aad[0],
        pu=aad[1],
        direction=aad[2],
        counter=int.from_bytes(aad[3:11], "big"),
        key_id=aad[11:HEADER_SIZE],
    )
    return SplitMessage(
        header=header,
        aad=aad,
        iv=message[HEADER_SIZE : HEADER_SIZE + GCM_IV_SIZE],
        ciphertext=message[HEADER_SIZE + GCM_IV_SIZE :],
    )


def check_header(
    header: VauHeader, *, environment: Environment, direction: Direction, key_id: bytes
) -> None:
    """The receiver's header checks of A_24628, in libasl's order (``decrypt_session``)."""
    if header.version != VERSION:
        raise VauVersionError("VAU header version must be 0x02")
    if header.pu != environment:
        raise VauEnvironmentError("VAU header PU flag does not match this environment")
    if header.direction != direction:
        raise VauDirectionError(f"VAU header must mark a {direction.name.lower()}")
    if not hmac.compare_digest(header.key_id, key_id):
        raise VauKeyIdError("VAU header KeyID is not this session's")


def open_message(key: bytes, split: SplitMessage) -> bytes:
    """AES-256-GCM decryption with the header as AAD; FAIL raises :class:`VauDecryptionError`."""
    try:
        return AESGCM(key).decrypt(split.iv, split.ciphertext, split.aad)
    except InvalidTag:
        raise VauDecryptionError("AES-GCM authentication of the VAU message failed") from None


def seal_message(
    key: bytes,
    *,
    environment: Environment,
    direction: Direction,
    counter: int,
    key_id: bytes,
    plaintext: bytes,
    rng: RandomBytes,
) -> bytes:
    """Build ``header ‖ IV ‖ AES-256-GCM(key, plaintext, AAD=header)`` (A_24628).

    The IV is 4 random bytes and the 8-byte counter (lib-vau); each side sends every counter
    at most once per key, so no IV repeats under a key.
    """
    if not 0 < counter <= MAX_COUNTER:
        raise ValueError("counter out of range")
    if len(key_id) != KEY_ID_SIZE:
        raise ValueError("KeyID must be 32 bytes")
    if not plaintext:
        raise ValueError("a VAU message carries at least one byte (A_24628 minimum length)")
    counter_bytes = counter.to_bytes(8, "big")
    aad = bytes((VERSION, environment, direction)) + counter_bytes + key_id
    iv = rng(IV_RANDOM_SIZE) + counter_bytes
    return aad + iv + AESGCM(key).encrypt(iv, plaintext, aad)
