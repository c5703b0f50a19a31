"""ID-token encryption: JWE compact, ``ECDH-ES`` + ``A256GCM`` only (RFC 7516, RFC 7518 §4.6).

gematik sectoral IdP spec §5/§7: the signed ID token is encrypted to the RP's ``use: enc`` P-256
key with direct key agreement (not ``ECDH-ES+A256KW``), header ``cty: "JWT"``, the RP key's
``kid`` and gematik's extra header ``version`` (gsi-testsuite ID_TOKEN_004; spec §11: the
header must not be marked ``crit``). The closed lists cannot be widened by a caller.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from joserfc import jwe as joserfc_jwe
from joserfc.errors import JoseError as JoserfcError
from joserfc.jwk import ECKey
from joserfc.registry import HeaderParameter

from healthid.protocol.jose.errors import (
    AlgorithmNotAllowed,
    DecryptionFailed,
    ForbiddenHeader,
    MalformedToken,
    TokenTooLarge,
    UnsuitableKey,
    WrongType,
)
from healthid.protocol.jose.jws import MAX_COMPACT_JWS_CHARS
from healthid.protocol.jose.keys import (
    COORDINATE_BYTES,
    CURVE,
    KTY,
    b64url_decode,
    b64url_encode,
    p256_public_key,
)

ALG_ECDH_ES: Final = "ECDH-ES"
ENC_A256GCM: Final = "A256GCM"
ALLOWED_JWE_ALGORITHMS: Final = frozenset({ALG_ECDH_ES})
ALLOWED_JWE_ENCRYPTIONS: Final = frozenset({ENC_A256GCM})
CTY_JWT: Final = "JWT"  # RFC 7519 §5.2: the content is a nested JWT
# spec §5: gsi sets the JWE header ``version`` to "2.0.0" for every ID-token version.
JWE_FORMAT_VERSION: Final = "2.0.0"
# The encrypted ID token: the nested JWS, base64url'd again (4/3), plus five segments' overhead.
MAX_HEADER_SEGMENT_CHARS: Final = 2 * 1024
MAX_COMPACT_JWE_CHARS: Final = MAX_COMPACT_JWS_CHARS * 4 // 3 + 2 * MAX_HEADER_SEGMENT_CHARS
# RFC 7518 §5.3: A256GCM takes a 256-bit key and a 96-bit IV; its tag is 128 bits.
CEK_BYTES: Final = 32
IV_BYTES: Final = 12
TAG_BYTES: Final = 16
_FORBIDDEN: Final = frozenset({"jwk", "jku", "x5u", "crit", "zip"})
_GEMATIK_HEADERS: Final = {"version": HeaderParameter("gematik JWE format version", "str")}


def _registry() -> joserfc_jwe.JWERegistry:
    registry = joserfc_jwe.JWERegistry(
        header_registry=_GEMATIK_HEADERS,
        algorithms=sorted(ALLOWED_JWE_ALGORITHMS | ALLOWED_JWE_ENCRYPTIONS),
    )
    registry.max_protected_header_length = MAX_HEADER_SEGMENT_CHARS
    registry.max_ciphertext_length = MAX_COMPACT_JWE_CHARS
    return registry


_REGISTRY: Final = _registry()


def concat_kdf(
    shared: bytes, *, enc: str, key_bytes: int, apu: bytes = b"", apv: bytes = b""
) -> bytes:
    """The key that ECDH-ES derives from the shared secret ``shared`` (RFC 7518 §4.6.2: NIST
    SP 800-56A Concat KDF with SHA-256). For direct key agreement AlgorithmID is the ``enc``
    value and the length that of its key; PartyUInfo and PartyVInfo are ``apu`` and ``apv``
    (the ID token sends neither: empty)."""

    def counted(value: bytes) -> bytes:
        return len(value).to_bytes(4, "big") + value

    other_info = (
        counted(enc.encode("ascii"))
        + counted(apu)
        + counted(apv)
        + (key_bytes * 8).to_bytes(4, "big")
    )
    return ConcatKDFHash(hashes.SHA256(), key_bytes, other_info).derive(shared)


def encrypt_id_token(
    signed_id_token: str,
    *,
    recipient_jwk: Mapping[str, Any],
    version: str = JWE_FORMAT_VERSION,
) -> str:
    """Encrypt the compact JWS ``signed_id_token`` to the RP's ``use: enc`` P-256 key.

    Header: ``{alg: ECDH-ES, enc: A256GCM, cty: JWT, kid: <RP enc kid>, version, epk}``
    (spec §5). RFC 7516 §5.1 with the one algorithm pair this module allows, written out
    with ``cryptography`` (joserfc's general machinery cost as much as the cryptography):

    - a fresh ephemeral P-256 key per token, its public part as ``epk`` (RFC 7518 §4.6.1.1);
    - the CEK by the Concat KDF over the ECDH shared secret (RFC 7518 §4.6.2, direct key
      agreement: no encrypted key);
    - A256GCM with a random 96-bit IV and ``ASCII(BASE64URL(protected header))`` as the
      additional authenticated data (RFC 7516 §5.1 steps 13-15, RFC 7518 §5.3).

    :func:`decrypt_id_token` (joserfc) reads it; the tests hold the two together.
    """
    if len(signed_id_token) > MAX_COMPACT_JWS_CHARS:
        raise TokenTooLarge("the ID token exceeds the compact JWS bound")
    kid = recipient_jwk.get("kid")
    if not isinstance(kid, str) or not kid:
        raise UnsuitableKey("the RP's encryption key has no kid")
    recipient = p256_public_key(recipient_jwk, use="enc")
    ephemeral = ec.generate_private_key(ec.SECP256R1())
    point = ephemeral.public_key().public_numbers()
    epk = {
        "kty": KTY,
        "crv": CURVE,
        "x": b64url_encode(point.x.to_bytes(COORDINATE_BYTES, "big")),
        "y": b64url_encode(point.y.to_bytes(COORDINATE_BYTES, "big")),
    }
    header = {
        "alg": ALG_ECDH_ES,
        "enc": ENC_A256GCM,
        "cty": CTY_JWT,
        "kid": kid,
        "version": version,
        "epk": epk,
    }
    protected = b64url_encode(json.dumps(header, separators=(",", ":")).encode("utf-8"))
    if len(protected) > MAX_HEADER_SEGMENT_CHARS:
        raise TokenTooLarge("the JWE header exceeds its bound")
    shared = ephemeral.exchange(ec.ECDH(), recipient)
    cek = concat_kdf(shared, enc=ENC_A256GCM, key_bytes=CEK_BYTES)
    iv = os.urandom(IV_BYTES)
    sealed = AESGCM(cek).encrypt(iv, signed_id_token.encode("utf-8"), protected.encode("ascii"))
    ciphertext, tag = sealed[:-TAG_BYTES], sealed[-TAG_BYTES:]
    return ".".join(
        (protected, "", b64url_encode(iv), b64url_encode(ciphertext), b64url_encode(tag))
    )


def read_jwe_header(token: str) -> dict[str, Any]:
    """The JWE protected header after the size bounds, with the closed lists enforced."""
    if not isinstance(token, str):
        raise MalformedToken("the token is not a string")
    if len(token) > MAX_COMPACT_JWE_CHARS:
        raise TokenTooLarge("the JWE exceeds its bound")
    parts = token.split(".")
    if len(parts) != 5:  # RFC 7516 §7.1: five segments
        raise MalformedToken("a compact JWE has five segments")
    if len(parts[0]) > MAX_HEADER_SEGMENT_CHARS:
        raise TokenTooLarge("the JWE header exceeds its bound")
    try:
        header = json.loads(b64url_decode(parts[0]))
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: deep nesting
        raise MalformedToken("the JWE header is not base64url JSON") from None
    if not isinstance(header, dict):
        raise MalformedToken("the JWE header is not a JSON object")
    alg, enc = header.get("alg"), header.get("enc")
    if not isinstance(alg, str) or alg not in ALLOWED_JWE_ALGORITHMS:
        raise AlgorithmNotAllowed("only ECDH-ES is accepted")
    if not isinstance(enc, str) or enc not in ALLOWED_JWE_ENCRYPTIONS:
        raise AlgorithmNotAllowed("only A256GCM is accepted")
    if header.keys() & _FORBIDDEN:
        raise ForbiddenHeader("the JWE header carries a forbidden parameter")
    if header.get("cty") != CTY_JWT:
        raise WrongType("the JWE content type is not JWT")
    return header


def decrypt_id_token(token: str, *, private_key: ec.EllipticCurvePrivateKey) -> str:
    """The nested compact JWS of an encrypted ID token (the RP side; tests and dev tools).

    The inner JWS is returned unverified: verify it with :func:`verify_compact` next.
    """
    read_jwe_header(token)
    if not isinstance(private_key.curve, ec.SECP256R1):
        raise UnsuitableKey("the decryption key is not a P-256 key")
    try:
        obj = joserfc_jwe.decrypt_compact(token, ECKey.import_key(private_key), registry=_REGISTRY)
    except (JoserfcError, KeyError, ValueError):  # also a malformed or off-curve epk
        raise DecryptionFailed("the JWE does not decrypt with this key") from None
    plaintext = obj.plaintext or b""
    try:
        return plaintext.decode("ascii")
    except UnicodeDecodeError:
        raise MalformedToken("the JWE content is not a compact JWS") from None
