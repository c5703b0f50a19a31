"""The vault: per-policyholder data keys, AEAD records and blind indexes.

DESIGN.md "Per-user keys": every policyholder has a random data key wrapped by the enclave
root key; every record is AES-256-GCM encrypted with the policyholder's pseudonym, the record
type and the record version as associated data, so a record moved to another policyholder, to
another type or to another version fails to decrypt. Lookups use blind indexes (HMAC-SHA-256
under a key derived from the root key), never plaintext. Deleting the wrapped data key
crypto-shreds every record of that policyholder, backups included.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

ROOT_KEY_LEN = 32
DATA_KEY_LEN = 32
NONCE_LEN = 12
PSEUDONYM_BYTES = 16
CIPHERTEXT_FORMAT = 1  # first byte of every blob; bump when the layout changes
MAX_RECORD_LEN = 64 * 1024  # a master-data record is a few hundred bytes
_RECORD_AAD_LABEL = b"healthid/record/v1"
_WRAP_AAD_LABEL = b"healthid/data-key/v1"


class VaultError(Exception):
    """Base class of vault failures. Messages name pseudonyms at most, never personal data."""


class RecordIntegrityError(VaultError):
    """A record or wrapped key does not decrypt under its stated owner, type and version."""


class WrongRootKeyError(VaultError):
    """A wrapped key was made under another root key than the one this enclave holds."""


@dataclass(frozen=True, kw_only=True, repr=False)
class RootKey:
    """The enclave root secret. Never leaves the enclave in plaintext (sealed at rest)."""

    key_id: str
    secret: bytes

    def __post_init__(self) -> None:
        if len(self.secret) != ROOT_KEY_LEN:
            raise ValueError("root key must be 32 bytes")

    def __repr__(self) -> str:
        return f"RootKey(key_id={self.key_id!r}, secret=<redacted>)"

    @classmethod
    def from_secret(cls, secret: bytes) -> RootKey:
        return cls(key_id=_derive(secret, b"healthid/v1/root-key-id")[:8].hex(), secret=secret)


@dataclass(frozen=True, kw_only=True)
class WrappedKey:
    root_key_id: str
    blob: bytes


def _derive(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


def _encode_fields(label: bytes, *fields: str | int) -> bytes:
    """Unambiguous AAD: a label, then each field length-prefixed (no delimiter confusion)."""
    parts = [label]
    for field in fields:
        raw = str(field).encode("utf-8")
        parts += (len(raw).to_bytes(2, "big"), raw)
    return b"".join(parts)


_FORMAT_BYTE = bytes([CIPHERTEXT_FORMAT])


def _seal(aead: AESGCM, plaintext: bytes, aad: bytes, rng: Callable[[int], bytes]) -> bytes:
    nonce = rng(NONCE_LEN)
    return _FORMAT_BYTE + nonce + aead.encrypt(nonce, plaintext, aad)


def _open(aead: AESGCM, blob: bytes, aad: bytes) -> bytes:
    if len(blob) < 1 + NONCE_LEN + 16 or blob[0] != CIPHERTEXT_FORMAT:
        raise RecordIntegrityError("ciphertext has an unknown format")
    nonce, body = blob[1 : 1 + NONCE_LEN], blob[1 + NONCE_LEN :]
    try:
        return aead.decrypt(nonce, body, aad)
    except InvalidTag:
        raise RecordIntegrityError(
            "ciphertext does not belong to this owner/type/version"
        ) from None


class Vault:
    """Cryptographic operations of the enclave over ciphertext held by the host."""

    def __init__(self, root: RootKey, *, rng: Callable[[int], bytes] = os.urandom) -> None:
        self._root_key_id = root.key_id
        self._kek = AESGCM(_derive(root.secret, b"healthid/v1/key-encryption-key"))
        self._index_root = _derive(root.secret, b"healthid/v1/blind-index")
        self._index_macs: dict[str, hmac.HMAC] = {}
        self._tag_root = _derive(root.secret, b"healthid/v1/enclave-tags")
        self._tag_macs: dict[str, hmac.HMAC] = {}
        self._rng = rng

    @property
    def root_key_id(self) -> str:
        return self._root_key_id

    def new_pseudonym(self) -> str:
        """A random pseudonym: 128 bits, not derived from any attribute of the person."""
        return self._rng(PSEUDONYM_BYTES).hex()

    def new_data_key(self) -> bytes:
        return self._rng(DATA_KEY_LEN)

    def wrap(self, pseudonym: str, data_key: bytes) -> WrappedKey:
        aad = _encode_fields(_WRAP_AAD_LABEL, pseudonym, self._root_key_id)
        return WrappedKey(
            root_key_id=self._root_key_id, blob=_seal(self._kek, data_key, aad, self._rng)
        )

    def unwrap(self, pseudonym: str, wrapped: WrappedKey) -> bytes:
        if not hmac.compare_digest(wrapped.root_key_id, self._root_key_id):
            raise WrongRootKeyError(f"data key of {pseudonym} was wrapped under another root key")
        aad = _encode_fields(_WRAP_AAD_LABEL, pseudonym, self._root_key_id)
        key = _open(self._kek, wrapped.blob, aad)
        if len(key) != DATA_KEY_LEN:
            raise RecordIntegrityError("wrapped data key has the wrong length")
        return key

    def seal(
        self, data_key: bytes, *, pseudonym: str, record_type: str, version: int, plaintext: bytes
    ) -> bytes:
        if len(plaintext) > MAX_RECORD_LEN:
            raise VaultError(f"record larger than {MAX_RECORD_LEN} bytes")
        aad = _encode_fields(_RECORD_AAD_LABEL, pseudonym, record_type, version)
        return _seal(AESGCM(data_key), plaintext, aad, self._rng)

    def open(
        self, data_key: bytes, *, pseudonym: str, record_type: str, version: int, blob: bytes
    ) -> bytes:
        aad = _encode_fields(_RECORD_AAD_LABEL, pseudonym, record_type, version)
        return _open(AESGCM(data_key), blob, aad)

    def blind_index(self, kind: str, normalised_value: str) -> bytes:
        """HMAC-SHA-256 of a normalised lookup value under a per-kind key."""
        base = self._index_macs.get(kind)
        if base is None:
            key = _derive(self._index_root, b"kind:" + kind.encode("ascii"))
            base = self._index_macs[kind] = hmac.new(key, digestmod=hashlib.sha256)
        mac = base.copy()  # copying the keyed state is ~10x cheaper than a fresh HMAC
        mac.update(normalised_value.encode("utf-8"))
        return mac.digest()

    def tag(self, purpose: str, message: bytes) -> bytes:
        """HMAC-SHA-256 of ``message`` under a per-purpose key only enclaves holding this root
        key have: the enclave's word on something the host keeps (proofs, device bindings,
        session tickets, login challenges)."""
        base = self._tag_macs.get(purpose)
        if base is None:
            key = _derive(self._tag_root, b"purpose:" + purpose.encode("ascii"))
            base = self._tag_macs[purpose] = hmac.new(key, digestmod=hashlib.sha256)
        mac = base.copy()
        mac.update(message)
        return mac.digest()

    def random(self, length: int) -> bytes:
        return self._rng(length)
