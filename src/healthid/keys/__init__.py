"""Signing keys: the ES256 key store port, its file (development) and PKCS#11 (HSM)
backends, and key rotation. Import backends from their modules (``healthid.keys.file``,
``healthid.keys.pkcs11``) so that python-pkcs11 loads only where it is used.
"""

from healthid.keys.base import (
    ALGORITHM,
    CURVE,
    KeyInfo,
    KeyNotFound,
    KeyStoreError,
    KeyStoreUnavailable,
    SigningKeyStore,
)

__all__ = [
    "ALGORITHM",
    "CURVE",
    "KeyInfo",
    "KeyNotFound",
    "KeyStoreError",
    "KeyStoreUnavailable",
    "SigningKeyStore",
]
