"""Device-key authentication: the message a bound device signs to log in.

The server issues a fresh random challenge (single use, short TTL) for one device; the device
signs, after biometrics or its PIN, ``message(challenge, device_id, counter)`` with its P-256
key (ES256, raw r||s). The counter is the device's signature counter and must go up with every
login (a replayed or cloned signature is refused: eid-egk-wallet-device.md §4.4).
"""

from __future__ import annotations

import base64
import functools
import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import load_der_public_key

CHALLENGE_BYTES = 32
SIGNATURE_BYTES = 64  # ES256 raw r||s
MAX_PUBLIC_KEY_BYTES = 512
MAX_COUNTER = 2**63 - 1
_LABEL = b"healthid-device-auth-v1\x00"


class DeviceAuthError(ValueError):
    """A device key or signature is unusable."""


def message(challenge: bytes, device_id: str, counter: int) -> bytes:
    """The exact bytes the device signs."""
    if len(challenge) != CHALLENGE_BYTES:
        raise DeviceAuthError("challenge has the wrong length")
    if not 0 <= counter <= MAX_COUNTER:
        raise DeviceAuthError("counter out of range")
    return _LABEL + challenge + b"\x00" + device_id.encode("ascii") + counter.to_bytes(8, "big")


def load_device_key(spki_der: bytes) -> ec.EllipticCurvePublicKey:
    """A P-256 public key from SubjectPublicKeyInfo DER; anything else is refused."""
    if len(spki_der) > MAX_PUBLIC_KEY_BYTES:
        raise DeviceAuthError("device key too large")
    return _device_key(spki_der)


@functools.lru_cache(maxsize=4096)
def _device_key(spki_der: bytes) -> ec.EllipticCurvePublicKey:
    """Parsed and checked once per key (the point check is a good part of a login's cost):
    public keys, which the host's device table holds anyway; a key refused is not remembered."""
    try:
        key = load_der_public_key(spki_der)
    except (ValueError, TypeError):
        raise DeviceAuthError("device key is not a DER SubjectPublicKeyInfo") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise DeviceAuthError("device key must be an EC key on P-256")
    return key


def verify(spki_der: bytes, signed: bytes, signature: bytes) -> bool:
    """Verify an ES256 (raw r||s) signature by the device key over ``signed``."""
    if len(signature) != SIGNATURE_BYTES:
        return False
    key = load_device_key(spki_der)
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    try:
        key.verify(encode_dss_signature(r, s), signed, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


_BEARER_LABEL = b"healthid-session-bearer-v1\x00"


def session_bearer(session: str) -> str:
    """The host-facing bearer of a device session ``<device id>.<secret>``: the same device
    id and a one-way function of the whole token (base64url SHA-256, 43 characters).

    A session opened through the VAU channel is known in full only to the wallet and the
    enclave; the wallet shows the host this bearer (its plain wallet API calls, the outer
    request of a channel call) and the enclave, given the full token inside the channel,
    checks that it belongs to the bearer — which the host cannot turn back into the token.
    """
    device_id, _, _ = session.partition(".")
    digest = hashlib.sha256(_BEARER_LABEL + session.encode("utf-8")).digest()
    return f"{device_id}.{base64.urlsafe_b64encode(digest).rstrip(b'=').decode('ascii')}"
