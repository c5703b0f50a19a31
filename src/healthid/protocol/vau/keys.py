"""The server's VAU keys: the signed public keys M2 carries and the private keys behind them.

Structures (lib-vau ``data/VauPublicKeys``, ``data/SignedPublicVauKeys`` 1.0.16; libasl
``AslKeys``, ``SignedAslKeys``)::

    VauPublicKeys        {"ECDH_PK": {crv,x,y}, <KEM>_PK: bstr(1184), "iat": int, "exp": int,
                          "comment": tstr}
    SignedPublicVauKeys  {"signed_pub_keys": bstr = CBOR(VauPublicKeys),
                          "signature-ES256": bstr (raw r‖s since lib-vau 1.0.13),
                          "cert_hash": SHA-256(DER AUT-VAU cert), "cdv": int,
                          "ocsp_response": bstr}

Signing is pluggable: :func:`sign_public_keys` takes any ``sign(bytes) -> signature``
callable (an HSM, later the enclave's identity key whose attestation binds it), the server
state machine takes the finished blob, and the client checks it with a :data:`KeyVerifier`
(A_24624-01; :func:`es256_verifier` implements step 5 for a known P-256 key). Extra keys in
``SignedPublicVauKeys`` are kept (lib-vau tolerates them, so an attestation can ride along);
``VauPublicKeys`` itself never gets extra keys, because lib-vau parses it strictly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from healthid.protocol.vau import cbor
from healthid.protocol.vau._fields import bytes_field, map_field, text_field, uint_field
from healthid.protocol.vau.cbor import CborValue
from healthid.protocol.vau.errors import VauMalformedError, VauServerKeysError
from healthid.protocol.vau.kem import (
    EXPANDED_KEY_SIZE,
    PUBLIC_KEY_SIZE,
    SEED_SIZE,
    ExpandedKemKey,
    KemMode,
    KemPrivateKey,
    SeedKemKey,
)
from healthid.protocol.vau.messages import MAX_SIGNED_KEYS_SIZE
from healthid.protocol.vau.primitives import (
    EcdhPublicKey,
    RandomBytes,
    ec_private_from_bytes,
    ec_private_to_bytes,
    generate_ec_key,
)

MAX_PUBLIC_KEYS_SIZE = 4096  # CBOR(VauPublicKeys); honest: ~1.4 KB
MAX_COMMENT_LENGTH = 1024
MAX_SIGNATURE_SIZE = 256  # raw r‖s is 64; old lib-vau DER ≤ 72
MAX_CERT_HASH_SIZE = 64
MAX_KEY_VALIDITY = 30 * 24 * 3600  # lib-vau VauServerStateMachine: exp - iat ≤ 30 days
IAT_SKEW = 300  # seconds a client tolerates an iat in its future
ES256_SIGNATURE_SIZE = 64
SIGNED_FIELDS = ("signed_pub_keys", "signature-ES256", "cert_hash", "cdv", "ocsp_response")


@dataclass(frozen=True, kw_only=True, slots=True)
class VauPublicKeys:
    """The server's long-term (≤ 30 days) VAU public keys (``VauPublicKeys``)."""

    ecdh_pk: EcdhPublicKey
    kem_pk: bytes = field(repr=False)
    iat: int
    exp: int
    comment: str = ""

    def encode(self, mode: KemMode) -> bytes:
        """CBOR in lib-vau's field order; these are the bytes that get signed."""
        return cbor.encode(
            {
                "ECDH_PK": self.ecdh_pk.to_map(),
                mode.public_key_field: self.kem_pk,
                "iat": self.iat,
                "exp": self.exp,
                "comment": self.comment,
            }
        )

    def check_validity(self, now: int) -> None:
        """Refuse keys valid for more than 30 days (lib-vau server), not yet valid (beyond
        :data:`IAT_SKEW`) or expired: ``exp`` must lie after ``now`` (A_24624-01 step 6)."""
        if self.exp - self.iat > MAX_KEY_VALIDITY:
            raise VauServerKeysError("VAU keys: exp - iat exceeds 30 days")
        if self.exp <= self.iat:
            raise VauServerKeysError("VAU keys: exp is not after iat")
        if self.iat > now + IAT_SKEW:
            raise VauServerKeysError("VAU keys: iat lies in the future")
        if self.exp <= now:
            raise VauServerKeysError("VAU keys have expired")


def parse_public_keys(data: bytes, mode: KemMode) -> VauPublicKeys:
    """Parse ``signed_pub_keys`` (≤ :data:`MAX_PUBLIC_KEYS_SIZE`)."""
    m = cbor.decode_map(data, max_size=MAX_PUBLIC_KEYS_SIZE)
    return VauPublicKeys(
        ecdh_pk=EcdhPublicKey.from_map(map_field(m, "ECDH_PK")),
        kem_pk=bytes_field(m, mode.public_key_field, size=PUBLIC_KEY_SIZE),
        iat=uint_field(m, "iat"),
        exp=uint_field(m, "exp"),
        comment=text_field(m, "comment", max_size=MAX_COMMENT_LENGTH),
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class SignedPublicVauKeys:
    """``SignedPublicVauKeys``: the encoded public keys, their signature and certificate
    references, plus any extra keys (``extensions``) a sender added."""

    signed_pub_keys: bytes
    signature: bytes
    cert_hash: bytes = b""
    cdv: int = 1
    ocsp_response: bytes = b""
    extensions: Mapping[str, CborValue] = field(default_factory=lambda: MappingProxyType({}))

    def encode(self) -> bytes:
        body: dict[str, CborValue] = {
            "signed_pub_keys": self.signed_pub_keys,
            "signature-ES256": self.signature,
            "cert_hash": self.cert_hash,
            "cdv": self.cdv,
            "ocsp_response": self.ocsp_response,
        }
        for key, value in self.extensions.items():
            if key in body:
                raise ValueError(f"extension {key!r} shadows a signed-keys field")
            body[key] = value
        return cbor.encode(body)

    def public_keys(self, mode: KemMode) -> VauPublicKeys:
        return parse_public_keys(self.signed_pub_keys, mode)


def parse_signed_public_keys(data: bytes) -> SignedPublicVauKeys:
    """Parse ``SignedPublicVauKeys`` (≤ :data:`MAX_SIGNED_KEYS_SIZE`). The pre-1.0.13 form with
    ``cert`` instead of ``cert_hash``/``cdv`` is refused. ``ocsp_response`` may be absent
    (libasl: ``Option``)."""
    m = cbor.decode_map(data, max_size=MAX_SIGNED_KEYS_SIZE)
    ocsp = b""
    if "ocsp_response" in m:
        ocsp = bytes_field(m, "ocsp_response")
    return SignedPublicVauKeys(
        signed_pub_keys=bytes_field(m, "signed_pub_keys", max_size=MAX_PUBLIC_KEYS_SIZE),
        signature=bytes_field(m, "signature-ES256", max_size=MAX_SIGNATURE_SIZE),
        cert_hash=bytes_field(m, "cert_hash", max_size=MAX_CERT_HASH_SIZE),
        cdv=uint_field(m, "cdv"),
        ocsp_response=ocsp,
        extensions=MappingProxyType({k: v for k, v in m.items() if k not in SIGNED_FIELDS}),
    )


Signer = Callable[[bytes], bytes]
"""Signs the exact ``signed_pub_keys`` bytes (ES256, raw r‖s)."""

KeyVerifier = Callable[[SignedPublicVauKeys], bool]
"""The client's check of the server's signed keys (A_24624-01): True only if the signature
over ``signed_pub_keys`` verifies under a trusted identity (and whatever else the caller
requires: certificate, OCSP, attestation)."""


def sign_public_keys(
    public_keys: VauPublicKeys,
    mode: KemMode,
    sign: Signer,
    *,
    cert_hash: bytes = b"",
    cdv: int = 1,
    ocsp_response: bytes = b"",
    extensions: Mapping[str, CborValue] | None = None,
) -> bytes:
    """Encode and sign ``public_keys``; returns the ``SignedPublicVauKeys`` blob for M2."""
    signed = public_keys.encode(mode)
    return SignedPublicVauKeys(
        signed_pub_keys=signed,
        signature=sign(signed),
        cert_hash=cert_hash,
        cdv=cdv,
        ocsp_response=ocsp_response,
        extensions=MappingProxyType(dict(extensions or {})),
    ).encode()


def es256_signer(private_key: ec.EllipticCurvePrivateKey) -> Signer:
    """ES256 with a raw 64-byte r‖s signature (lib-vau ``SHA256withPLAIN-ECDSA``)."""

    def sign(data: bytes) -> bytes:
        r, s = decode_dss_signature(private_key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    return sign


def es256_verifier(public_key: ec.EllipticCurvePublicKey) -> KeyVerifier:
    """A_24624-01 step 5 for a known P-256 key: ``signature-ES256`` (raw r‖s, 64 bytes) over
    the exact ``signed_pub_keys`` bytes."""
    if not isinstance(public_key.curve, ec.SECP256R1):
        raise ValueError("ES256 needs a P-256 key")

    def verify(signed: SignedPublicVauKeys) -> bool:
        if len(signed.signature) != ES256_SIGNATURE_SIZE:
            return False
        r = int.from_bytes(signed.signature[:32], "big")
        s = int.from_bytes(signed.signature[32:], "big")
        try:
            public_key.verify(
                encode_dss_signature(r, s), signed.signed_pub_keys, ec.ECDSA(hashes.SHA256())
            )
        except InvalidSignature:
            return False
        return True

    return verify


@dataclass(frozen=True, kw_only=True, slots=True)
class ServerPrivateKeys:
    """The private halves of the VAU keys: a P-256 ECDH key and an ML-KEM-768 key."""

    ecdh: ec.EllipticCurvePrivateKey = field(repr=False)
    kem: KemPrivateKey = field(repr=False)

    @classmethod
    def generate(cls, rng: RandomBytes) -> ServerPrivateKeys:
        return cls(ecdh=generate_ec_key(rng), kem=SeedKemKey.generate(rng))

    def public_keys(self, *, iat: int, exp: int, comment: str = "") -> VauPublicKeys:
        """The matching :class:`VauPublicKeys` to sign."""
        return VauPublicKeys(
            ecdh_pk=EcdhPublicKey.from_key(self.ecdh.public_key()),
            kem_pk=self.kem.public_key,
            iat=iat,
            exp=exp,
            comment=comment,
        )

    def check_matches(self, public_keys: VauPublicKeys) -> None:
        """The signed public keys must belong to these private keys (start-up check)."""
        if EcdhPublicKey.from_key(self.ecdh.public_key()) != public_keys.ecdh_pk:
            raise VauServerKeysError("signed ECDH_PK does not match the ECDH private key")
        if self.kem.public_key != public_keys.kem_pk:
            raise VauServerKeysError("signed KEM public key does not match the KEM private key")

    def to_bytes(self) -> bytes:
        """CBOR ``{"ECDH_SK": raw32, "KEM_seed": 64 | "ML-KEM-768_SK": 2400}`` (secret!)."""
        body: dict[str, CborValue] = {"ECDH_SK": ec_private_to_bytes(self.ecdh)}
        if isinstance(self.kem, SeedKemKey):
            body["KEM_seed"] = self.kem.seed
        else:
            body["ML-KEM-768_SK"] = self.kem.expanded
        return cbor.encode(body)


def parse_server_private_keys(data: bytes) -> ServerPrivateKeys:
    """Load private keys from ours (:meth:`ServerPrivateKeys.to_bytes`), libasl's
    ``AslPrivateKeys`` (``ECDH_SK`` raw, ``ML-KEM-768_SK`` expanded) or lib-vau's test key file
    (``ECDH_PrivKey`` PKCS#8 DER, ``Kyber768_PrivKey`` expanded)."""
    m = cbor.decode_map(data, max_size=8192)
    if "ECDH_PrivKey" in m:
        ecdh = _load_pkcs8_p256(bytes_field(m, "ECDH_PrivKey", max_size=512))
    else:
        ecdh = ec_private_from_bytes(bytes_field(m, "ECDH_SK", size=32))
    kem: KemPrivateKey
    if "KEM_seed" in m:
        kem = SeedKemKey.from_seed(bytes_field(m, "KEM_seed", size=SEED_SIZE))
    elif "Kyber768_PrivKey" in m:
        kem = ExpandedKemKey(bytes_field(m, "Kyber768_PrivKey", size=EXPANDED_KEY_SIZE))
    else:
        kem = ExpandedKemKey(bytes_field(m, "ML-KEM-768_SK", size=EXPANDED_KEY_SIZE))
    return ServerPrivateKeys(ecdh=ecdh, kem=kem)


def _load_pkcs8_p256(der: bytes) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise VauMalformedError("ECDH_PrivKey is not a PKCS#8 private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise VauMalformedError("ECDH_PrivKey is not a P-256 key")
    return key
