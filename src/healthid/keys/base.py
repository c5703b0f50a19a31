"""The signing key store port: ES256 (ECDSA on P-256 with SHA-256) and nothing else.

RFC 7518 §3.4: an ES256 JOSE signature is R || S, each a 32-octet big-endian integer.
RFC 7638: a key's ``kid`` is its JWK SHA-256 thumbprint (base64url, 43 characters), so it is
unique per public key and anyone holding the public key can check it.
CONVENTIONS.md rule 5: the algorithm list is closed; no setting selects another algorithm.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Protocol

# RFC 7518 §3.1 / §6.2.1.1: the only algorithm and curve a healthid signing key can have.
ALGORITHM: Final = "ES256"
CURVE: Final = "P-256"
# RFC 7638 §3 with SHA-256: 32 octets, base64url without padding = 43 characters.
KID_LEN: Final = 43
# signing_keys.purpose is String(32) (store/sql/schema.py).
MAX_PURPOSE_LEN: Final = 32

_KID_RE: Final = re.compile(rf"[A-Za-z0-9_-]{{{KID_LEN}}}")
_PURPOSE_RE: Final = re.compile(rf"[a-z0-9][a-z0-9._-]{{0,{MAX_PURPOSE_LEN - 1}}}")


class KeyStoreError(Exception):
    """A key store operation failed. Messages never contain a PIN or key material."""


class KeyNotFound(KeyStoreError):  # noqa: N818 - the name says the state
    """No key with this kid exists in the store (or the kid is malformed)."""


class KeyStoreUnavailable(KeyStoreError):  # noqa: N818 - the name says the state
    """The key store (HSM, token, module) cannot be reached or logged in to; fail closed."""


@dataclass(frozen=True, kw_only=True)
class KeyInfo:
    """A newly generated key: its kid, purpose, backend and public JWK (for publication)."""

    kid: str
    purpose: str
    backend: str
    public_jwk: Mapping[str, str]

    def __post_init__(self) -> None:
        object.__setattr__(self, "public_jwk", MappingProxyType(dict(self.public_jwk)))


class SigningKeyStore(Protocol):
    """Holds ES256 private keys and signs with them; the private half never leaves the store.

    Calls are synchronous and short (local file or PKCS#11 token); async callers run them in
    a worker thread.
    """

    @property
    def backend(self) -> str:
        """The backend name recorded with each key (``file``, ``pkcs11``)."""
        ...

    def generate(self, purpose: str) -> KeyInfo:
        """Create a new P-256 key pair for ``purpose``; its kid is the RFC 7638 thumbprint."""
        ...

    def sign(self, kid: str, data: bytes) -> bytes:
        """The ES256 JOSE signature of ``data`` (RFC 7518 §3.4: SHA-256, raw R || S)."""
        ...

    def public_jwk(self, kid: str) -> dict[str, str]:
        """The public JWK of ``kid`` with ``kid``, ``use: sig`` and ``alg: ES256``."""
        ...

    def list_kids(self) -> list[str]:
        """The kids of every key in the store, sorted."""
        ...

    def delete(self, kid: str) -> None:
        """Destroy the key pair ``kid``; ``KeyNotFound`` if there is none."""
        ...


def is_kid(value: str) -> bool:
    """Whether ``value`` has the form of an RFC 7638 SHA-256 thumbprint."""
    return _KID_RE.fullmatch(value) is not None


def check_kid(kid: str) -> str:
    """``kid`` if well-formed; a malformed kid cannot name a key, so ``KeyNotFound``.

    This also keeps kids from untrusted input out of file names (no path traversal).
    """
    if not is_kid(kid):
        raise KeyNotFound("kid is not an RFC 7638 SHA-256 thumbprint")
    return kid


def check_purpose(purpose: str) -> str:
    """``purpose`` if it is a short lowercase token (it becomes a column and a label)."""
    if _PURPOSE_RE.fullmatch(purpose) is None:
        raise ValueError(
            f"key purpose must match [a-z0-9][a-z0-9._-]* and be at most "
            f"{MAX_PURPOSE_LEN} characters"
        )
    return purpose
