"""The card's signature over the server challenge (spec eid-egk-wallet-device.md §2.4).

After PACE (CAN) and VERIFY PIN.CH the wallet has the card sign the challenge with
PrK.CH.AUT.E256: ECDSA on brainpoolP256r1 over SHA-256(challenge). The card returns the plain
r||s (32 + 32 bytes, the form of gematik's BP256R1 JWS signatures) and the wallet SDK sends it
unchanged. A DER ``ECDSA-Sig-Value`` is accepted too, for clients that re-encode. The two forms
are told apart by length: 64 bytes is r||s.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from healthid.protocol.egk.errors import EgkSignatureInvalid

COMPONENT_BYTES = 32  # brainpoolP256r1: r and s are 256-bit integers
RAW_SIGNATURE_BYTES = 2 * COMPONENT_BYTES  # what the wallet sends
MAX_DER_SIGNATURE_BYTES = 72  # SEQUENCE{INTEGER(33), INTEGER(33)}: 2 + 2 * (2 + 33)
MAX_SIGNATURE_BYTES = MAX_DER_SIGNATURE_BYTES


def verify_challenge_signature(
    key: ec.EllipticCurvePublicKey, *, challenge: bytes, signature: bytes
) -> None:
    """Raise :class:`EgkSignatureInvalid` unless ``signature`` is the card's over ``challenge``."""
    try:
        key.verify(_as_der(signature), challenge, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise EgkSignatureInvalid("the card's signature over the challenge is invalid") from None


def _as_der(signature: bytes) -> bytes:
    if len(signature) == RAW_SIGNATURE_BYTES:
        r = int.from_bytes(signature[:COMPONENT_BYTES], "big")
        s = int.from_bytes(signature[COMPONENT_BYTES:], "big")
        return encode_dss_signature(r, s)
    try:
        r, s = decode_dss_signature(signature)
        return encode_dss_signature(r, s)  # canonical DER, whatever encoding came in
    except ValueError:
        raise EgkSignatureInvalid("the signature is neither raw r||s nor DER") from None
