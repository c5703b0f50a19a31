"""The explicit state of both sides, between messages (CONVENTIONS 2).

Each state is a frozen dataclass that serialises to a small CBOR map (``to_bytes`` /
``from_bytes``), so a stateless server can park it in the ephemeral store under the VAU-CID
between M2 and M3 and between user-data messages. The blobs hold **secret keys**: they must
only ever leave the enclave sealed (AEAD under an enclave key), and a handshake state is a
one-time artefact the store consumes atomically (CONVENTIONS 14). ``from_bytes`` checks the
type tag, the version and every size, and raises :class:`VauStateError` on any mismatch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Self

from cryptography.hazmat.primitives.asymmetric import ec

from healthid.protocol.vau import cbor
from healthid.protocol.vau._fields import bytes_field, text_field, uint_field
from healthid.protocol.vau.cbor import CborValue
from healthid.protocol.vau.errors import VauError, VauStateError
from healthid.protocol.vau.hybrid import HYBRID_SECRET_SIZE
from healthid.protocol.vau.kem import SEED_SIZE, KemMode, SeedKemKey
from healthid.protocol.vau.primitives import (
    AES_KEY_SIZE,
    HASH_SIZE,
    ec_private_from_bytes,
    ec_private_to_bytes,
)

STATE_VERSION = 1
HANDSHAKE_TTL = 60  # seconds from M1/M2 to M3/M4 (ours; neither lib-vau nor libasl bounds it)
SESSION_TTL = 24 * 3600  # libasl server EXPIRES_AFTER_SECONDS
MAX_STATE_SIZE = 64 * 1024  # a server handshake state holds M1 ‖ M2 (≤ ~52 KB)
_KEY = AES_KEY_SIZE


def check_limits(handshake_ttl: int, session_ttl: int, max_plaintext_size: int) -> None:
    """Start-up check of a side's bounds (CONVENTIONS 7)."""
    if not 0 < handshake_ttl <= session_ttl:
        raise ValueError("need 0 < handshake_ttl <= session_ttl")
    if max_plaintext_size <= 0:
        raise ValueError("max_plaintext_size must be positive")


def _dump(kind: str, mode: KemMode, body: dict[str, CborValue]) -> bytes:
    return cbor.encode({"t": kind, "v": STATE_VERSION, "mode": mode.value, **body})


def _load(data: bytes, kind: str) -> tuple[dict[str, CborValue], KemMode]:
    try:
        m = cbor.decode_map(data, max_size=MAX_STATE_SIZE)
        if text_field(m, "t", max_size=32) != kind:
            raise VauStateError(f"state blob is not a {kind}")
        if uint_field(m, "v") != STATE_VERSION:
            raise VauStateError("unsupported state version")
        return m, KemMode(text_field(m, "mode", max_size=16))
    except VauStateError:
        raise
    except (VauError, ValueError):
        raise VauStateError(f"corrupt {kind} state blob") from None


class _State:
    """Serialisation shared by the states; ``_build`` reads a subclass's own fields."""

    __slots__ = ()
    KIND: ClassVar[str]

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Load a blob written by ``to_bytes``; anything else raises :class:`VauStateError`."""
        m, mode = _load(data, cls.KIND)
        try:
            return cls._build(m, mode)
        except VauStateError:
            raise
        except (VauError, ValueError):
            raise VauStateError(f"corrupt {cls.KIND} state blob") from None

    @classmethod
    def _build(cls, m: Mapping[str, CborValue], mode: KemMode) -> Self:
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True, slots=True)
class ServerHandshake(_State):
    """Server, after M2 and before M3: ``ss_e``, the transcript ``M1 ‖ M2`` and which signed
    keys went out in M2 (their SHA-256)."""

    KIND: ClassVar[str] = "vau-server-handshake"

    mode: KemMode
    ss_e: bytes = field(repr=False)
    transcript: bytes = field(repr=False)
    keys_hash: bytes
    expires_at: int

    def to_bytes(self) -> bytes:
        return _dump(
            self.KIND,
            self.mode,
            {
                "ss_e": self.ss_e,
                "transcript": self.transcript,
                "keys_hash": self.keys_hash,
                "exp": self.expires_at,
            },
        )

    @classmethod
    def _build(cls, m: Mapping[str, CborValue], mode: KemMode) -> Self:
        return cls(
            mode=mode,
            ss_e=bytes_field(m, "ss_e", size=HYBRID_SECRET_SIZE),
            transcript=bytes_field(m, "transcript"),
            keys_hash=bytes_field(m, "keys_hash", size=HASH_SIZE),
            expires_at=uint_field(m, "exp"),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class _Session(_State):
    """After M4, either side: the application keys, the KeyID and both counters."""

    mode: KemMode
    key_id: bytes
    k2_c2s_app_data: bytes = field(repr=False)
    k2_s2c_app_data: bytes = field(repr=False)
    last_request: int = 0
    last_response: int = 0
    expires_at: int

    def to_bytes(self) -> bytes:
        return _dump(
            self.KIND,
            self.mode,
            {
                "key_id": self.key_id,
                "c2s": self.k2_c2s_app_data,
                "s2c": self.k2_s2c_app_data,
                "req": self.last_request,
                "resp": self.last_response,
                "exp": self.expires_at,
            },
        )

    @classmethod
    def _build(cls, m: Mapping[str, CborValue], mode: KemMode) -> Self:
        return cls(
            mode=mode,
            key_id=bytes_field(m, "key_id", size=_KEY),
            k2_c2s_app_data=bytes_field(m, "c2s", size=_KEY),
            k2_s2c_app_data=bytes_field(m, "s2c", size=_KEY),
            last_request=uint_field(m, "req"),
            last_response=uint_field(m, "resp"),
            expires_at=uint_field(m, "exp"),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class ServerSession(_Session):
    """Server, after M4: the application keys, the KeyID and both counters.

    ``last_request`` is the highest request counter accepted (requests must go strictly
    upwards); ``last_response`` the highest counter answered (each request at most once).
    """

    KIND: ClassVar[str] = "vau-server-session"


@dataclass(frozen=True, kw_only=True, slots=True)
class ClientHandshake(_State):
    """Client, after M1 and before M2: the ephemeral private keys and M1's bytes."""

    KIND: ClassVar[str] = "vau-client-handshake"

    mode: KemMode
    ecdh_sk: ec.EllipticCurvePrivateKey = field(repr=False)
    kem_sk: SeedKemKey = field(repr=False)
    m1: bytes = field(repr=False)
    expires_at: int

    def to_bytes(self) -> bytes:
        return _dump(
            self.KIND,
            self.mode,
            {
                "ecdh_sk": ec_private_to_bytes(self.ecdh_sk),
                "kem_seed": self.kem_sk.seed,
                "m1": self.m1,
                "exp": self.expires_at,
            },
        )

    @classmethod
    def _build(cls, m: Mapping[str, CborValue], mode: KemMode) -> Self:
        return cls(
            mode=mode,
            ecdh_sk=ec_private_from_bytes(bytes_field(m, "ecdh_sk", size=32)),
            kem_sk=SeedKemKey.from_seed(bytes_field(m, "kem_seed", size=SEED_SIZE)),
            m1=bytes_field(m, "m1"),
            expires_at=uint_field(m, "exp"),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class ClientKeyConfirmation(_State):
    """Client, after M3 and before M4: K2 (minus what M3 used up), the transcript hash M4
    must confirm, and the validity end of the server's signed keys."""

    KIND: ClassVar[str] = "vau-client-key-confirmation"

    mode: KemMode
    key_id: bytes
    k2_c2s_app_data: bytes = field(repr=False)
    k2_s2c_app_data: bytes = field(repr=False)
    k2_s2c_key_confirmation: bytes = field(repr=False)
    transcript_hash: bytes
    server_keys_exp: int
    expires_at: int

    def to_bytes(self) -> bytes:
        return _dump(
            self.KIND,
            self.mode,
            {
                "key_id": self.key_id,
                "c2s": self.k2_c2s_app_data,
                "s2c": self.k2_s2c_app_data,
                "s2c_kc": self.k2_s2c_key_confirmation,
                "hash": self.transcript_hash,
                "keys_exp": self.server_keys_exp,
                "exp": self.expires_at,
            },
        )

    @classmethod
    def _build(cls, m: Mapping[str, CborValue], mode: KemMode) -> Self:
        return cls(
            mode=mode,
            key_id=bytes_field(m, "key_id", size=_KEY),
            k2_c2s_app_data=bytes_field(m, "c2s", size=_KEY),
            k2_s2c_app_data=bytes_field(m, "s2c", size=_KEY),
            k2_s2c_key_confirmation=bytes_field(m, "s2c_kc", size=_KEY),
            transcript_hash=bytes_field(m, "hash", size=HASH_SIZE),
            server_keys_exp=uint_field(m, "keys_exp"),
            expires_at=uint_field(m, "exp"),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class ClientSession(_Session):
    """Client, after M4: the application keys, the KeyID and both counters.

    ``last_request`` is the counter of the last request sent; ``last_response`` the counter
    of the last response accepted (a response must answer exactly the outstanding request).
    """

    KIND: ClassVar[str] = "vau-client-session"
