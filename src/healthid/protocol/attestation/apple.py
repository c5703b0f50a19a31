"""Apple App Attest: attestation and assertion verification.

Source: ../shared/spec/eid-egk-wallet-device.md §4.1 (Apple, "Validating apps that connect to
your server" and "Attestation Object Validation Guide"). The attestation is the CBOR map
``{fmt: "apple-appattest", attStmt: {x5c: [credCert, intermediate], receipt}, authData}``;
the assertion is ``{signature, authenticatorData}``. App Attest keys live in the Secure
Enclave, so a verified key has :attr:`KeyClass.SECURE_ELEMENT`.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from .chain import verify_chain
from .common import (
    KEY_ID_BYTES,
    AppIdentityMismatchError,
    AppleDetails,
    AttestationFormat,
    AttestedKey,
    ChallengeMismatchError,
    CounterReplayError,
    InvalidSignatureError,
    KeyClass,
    MalformedAttestationError,
    PolicyViolationError,
    cbor_bytes,
    cbor_map,
    decode_cbor,
    equal,
    key_id_of,
    load_p256_spki,
    p256_public_key,
    require_challenge,
    require_size,
    sha256,
    spki_der,
    uncompressed_point,
)

APPLE_FORMAT = "apple-appattest"
# §4.1 step 4: credCert extension holding the nonce
NONCE_EXTENSION_OID = x509.ObjectIdentifier("1.2.840.113635.100.8.2")
# DER of that extension: SEQUENCE { [1] EXPLICIT OCTET STRING (32) } followed by the nonce
NONCE_EXTENSION_PREFIX = bytes.fromhex("3024a1220420")
# §4.1 step 8
AAGUID_PRODUCTION = b"appattest" + b"\x00" * 7
AAGUID_DEVELOPMENT = b"appattestdevelop"

RP_ID_HASH_BYTES = 32
AUTH_DATA_HEADER_BYTES = 37  # rpIdHash(32) flags(1) signCount(4)
AAGUID_BYTES = 16
CREDENTIAL_ID_LENGTH_BYTES = 2
FLAG_ATTESTED_CREDENTIAL_DATA = 0x40
FLAG_EXTENSION_DATA = 0x80
MAX_SIGN_COUNT = 2**32 - 1
COSE_EC2_COORDINATE_BYTES = 32
# COSE_Key labels and values (RFC 9053): kty EC2, alg ES256, crv P-256
COSE_KTY, COSE_ALG, COSE_CRV, COSE_X, COSE_Y = 1, 3, -1, -2, -3
COSE_KTY_EC2, COSE_ALG_ES256, COSE_CRV_P256 = 2, -7, 1

TEAM_ID_PATTERN = re.compile(r"[A-Z0-9]{10}")
BUNDLE_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,154}")


@dataclass(frozen=True, kw_only=True, slots=True)
class AppleConfig:
    """Which app may attest and under which roots; ``production`` selects the aaguid."""

    team_id: str
    bundle_id: str
    roots: tuple[x509.Certificate, ...]
    production: bool

    def __post_init__(self) -> None:
        if not TEAM_ID_PATTERN.fullmatch(self.team_id):
            raise ValueError("an Apple Team ID is ten upper-case letters or digits")
        if not BUNDLE_ID_PATTERN.fullmatch(self.bundle_id):
            raise ValueError("not a bundle identifier")
        if not self.roots or not all(isinstance(r, x509.Certificate) for r in self.roots):
            raise ValueError("at least one pinned App Attest root certificate is required")

    @property
    def app_id(self) -> str:
        return f"{self.team_id}.{self.bundle_id}"

    @property
    def rp_id_hash(self) -> bytes:
        """§4.1 step 6: SHA-256 of "<TeamID>.<bundleID>"."""
        return sha256(self.app_id.encode("ascii"))


@dataclass(frozen=True, kw_only=True, slots=True)
class AuthenticatorData:
    """WebAuthn authenticator data as App Attest lays it out (§4.1)."""

    rp_id_hash: bytes
    flags: int
    sign_count: int
    aaguid: bytes | None = None
    credential_id: bytes | None = None
    credential_point: bytes | None = None  # uncompressed P-256 point from the COSE key


def verify_apple_attestation(
    attestation: bytes,
    *,
    challenge: bytes,
    config: AppleConfig,
    now: datetime,
    key_id: bytes | None = None,
) -> AttestedKey:
    """Verify an App Attest attestation object (§4.1 steps 1-9) for ``challenge``.

    ``key_id`` is the key identifier the app reported (raw 32 bytes, not base64). Without
    it, the keyId is derived from credCert (step 5) and step 9 checks credentialId against it.
    Step 2: clientDataHash = SHA-256(challenge). Store the returned key and counter 0.
    """
    require_challenge(challenge)
    return verify_apple_attestation_with_client_data_hash(
        attestation, client_data_hash=sha256(challenge), key_id=key_id, config=config, now=now
    )


def verify_apple_attestation_with_client_data_hash(
    attestation: bytes,
    *,
    client_data_hash: bytes,
    config: AppleConfig,
    now: datetime,
    key_id: bytes | None = None,
) -> AttestedKey:
    """Steps 1 and 3-9 for an app that passed ``client_data_hash`` to ``attestKey``."""
    require_size(attestation)
    x5c, receipt, auth_data = _attestation_object(attestation)
    if key_id is not None and len(key_id) != KEY_ID_BYTES:
        raise MalformedAttestationError("a keyId is 32 bytes")
    cred_cert = verify_chain(x5c, config.roots, now)[0]  # step 1
    nonce = sha256(auth_data + client_data_hash)  # step 3
    if not equal(_certificate_nonce_extension(cred_cert), NONCE_EXTENSION_PREFIX + nonce):
        raise ChallengeMismatchError("credCert nonce does not match")  # step 4
    public_key = p256_public_key(cred_cert.public_key())
    if key_id is None:
        key_id = key_id_of(public_key)
    elif not equal(key_id_of(public_key), key_id):
        raise MalformedAttestationError("credCert key does not match the keyId")  # step 5
    parsed = parse_authenticator_data(auth_data, attested=True)
    if not equal(parsed.rp_id_hash, config.rp_id_hash):
        raise AppIdentityMismatchError("rpIdHash is not our App ID")  # step 6
    if parsed.sign_count != 0:
        raise CounterReplayError("the counter of a new key is 0")  # step 7
    expected_aaguid = AAGUID_PRODUCTION if config.production else AAGUID_DEVELOPMENT
    if parsed.aaguid != expected_aaguid:
        raise PolicyViolationError("App Attest environment not accepted")  # step 8
    if parsed.credential_id is None or not equal(parsed.credential_id, key_id):
        raise MalformedAttestationError("credentialId does not match the keyId")  # step 9
    if parsed.credential_point is None or not equal(
        parsed.credential_point, uncompressed_point(public_key)
    ):
        raise MalformedAttestationError("the COSE key is not the credCert key")
    return AttestedKey(
        format=AttestationFormat.APPLE_APP_ATTEST,
        key_class=KeyClass.SECURE_ELEMENT,
        public_key=spki_der(public_key),
        key_id=key_id,
        sign_count=0,
        development=not config.production,
        details=AppleDetails(receipt=receipt),
    )


def verify_apple_assertion(
    assertion: bytes,
    *,
    client_data: bytes,
    public_key: bytes,
    previous_sign_count: int,
    config: AppleConfig,
) -> int:
    """Verify an App Attest assertion (§4.1 "Assertion"); return the new counter to store.

    ``public_key`` is the stored SubjectPublicKeyInfo. ``client_data`` is authenticated here,
    byte for byte; the caller then checks that it embeds the one-time challenge it issued
    (its layout is the app's). Counter: strictly greater than ``previous_sign_count``.
    """
    require_size(assertion)
    if not 0 <= previous_sign_count <= MAX_SIGN_COUNT:
        raise ValueError("a stored counter is a 32-bit unsigned integer")
    fields = cbor_map(decode_cbor(assertion), frozenset({"signature", "authenticatorData"}))
    signature = cbor_bytes(fields["signature"])
    auth_data = cbor_bytes(fields["authenticatorData"])
    parsed = parse_authenticator_data(auth_data, attested=False)
    key = load_p256_spki(public_key)
    nonce = sha256(auth_data + sha256(client_data))
    try:
        key.verify(signature, nonce, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError) as exc:
        raise InvalidSignatureError("assertion signature does not verify") from exc
    if not equal(parsed.rp_id_hash, config.rp_id_hash):
        raise AppIdentityMismatchError("rpIdHash is not our App ID")
    if parsed.sign_count <= previous_sign_count:
        raise CounterReplayError("the assertion counter did not increase")
    return parsed.sign_count


def parse_authenticator_data(data: bytes, *, attested: bool) -> AuthenticatorData:
    """rpIdHash(32) flags(1) signCount(4) [aaguid(16) credIdLen(2) credId COSE_Key].

    An attestation must carry attested credential data; App Attest never sets the
    extension-data flag, and nothing may follow the COSE key.
    """
    if len(data) < AUTH_DATA_HEADER_BYTES:
        raise MalformedAttestationError("authenticator data too short")
    flags = data[RP_ID_HASH_BYTES]
    header = AuthenticatorData(
        rp_id_hash=data[:RP_ID_HASH_BYTES],
        flags=flags,
        sign_count=int.from_bytes(data[RP_ID_HASH_BYTES + 1 : AUTH_DATA_HEADER_BYTES], "big"),
    )
    if flags & FLAG_EXTENSION_DATA:
        raise MalformedAttestationError("unexpected extension data")
    if not attested:
        if flags & FLAG_ATTESTED_CREDENTIAL_DATA or len(data) != AUTH_DATA_HEADER_BYTES:
            raise MalformedAttestationError("unexpected data in assertion authenticator data")
        return header
    if not flags & FLAG_ATTESTED_CREDENTIAL_DATA:
        raise MalformedAttestationError("attested credential data missing")
    stream = io.BytesIO(data[AUTH_DATA_HEADER_BYTES:])
    aaguid = _read(stream, AAGUID_BYTES)
    credential_id = _read(stream, int.from_bytes(_read(stream, CREDENTIAL_ID_LENGTH_BYTES), "big"))
    point = _cose_p256_point(decode_cbor(stream.read(), text_keys_only=False))
    return AuthenticatorData(
        rp_id_hash=header.rp_id_hash,
        flags=flags,
        sign_count=header.sign_count,
        aaguid=aaguid,
        credential_id=credential_id,
        credential_point=point,
    )


def _read(stream: io.BytesIO, size: int) -> bytes:
    chunk = stream.read(size)
    if len(chunk) != size:
        raise MalformedAttestationError("authenticator data truncated")
    return chunk


def _cose_p256_point(item: object) -> bytes:
    """The uncompressed point of a COSE_Key that must be EC2 / P-256 (/ ES256 if stated)."""
    if not isinstance(item, dict) or not set(item) <= {
        COSE_KTY,
        COSE_ALG,
        COSE_CRV,
        COSE_X,
        COSE_Y,
    }:
        raise MalformedAttestationError("unexpected COSE key layout")
    if item.get(COSE_KTY) != COSE_KTY_EC2 or item.get(COSE_CRV) != COSE_CRV_P256:
        raise MalformedAttestationError("the COSE key is not EC2 P-256")
    if item.get(COSE_ALG, COSE_ALG_ES256) != COSE_ALG_ES256:
        raise MalformedAttestationError("the COSE key algorithm is not ES256")
    x, y = item.get(COSE_X), item.get(COSE_Y)
    if not (isinstance(x, bytes) and isinstance(y, bytes)):
        raise MalformedAttestationError("COSE key coordinates missing")
    if len(x) != COSE_EC2_COORDINATE_BYTES or len(y) != COSE_EC2_COORDINATE_BYTES:
        raise MalformedAttestationError("COSE key coordinates have the wrong size")
    return b"\x04" + x + y


def _attestation_object(attestation: bytes) -> tuple[tuple[bytes, ...], bytes, bytes]:
    """(x5c, receipt, authData) of ``{fmt, attStmt: {x5c, receipt}, authData}``."""
    top = cbor_map(decode_cbor(attestation), frozenset({"fmt", "attStmt", "authData"}))
    if top["fmt"] != APPLE_FORMAT:
        raise MalformedAttestationError("fmt is not apple-appattest")
    statement = cbor_map(top["attStmt"], frozenset({"x5c", "receipt"}))
    x5c = statement["x5c"]
    if not isinstance(x5c, list):
        raise MalformedAttestationError("x5c is not an array")
    return (
        tuple(cbor_bytes(c) for c in x5c),
        cbor_bytes(statement["receipt"]),
        cbor_bytes(top["authData"]),
    )


def _certificate_nonce_extension(cred_cert: x509.Certificate) -> bytes:
    try:
        extension = cred_cert.extensions.get_extension_for_oid(NONCE_EXTENSION_OID)
    except x509.ExtensionNotFound as exc:
        raise MalformedAttestationError("credCert lacks the nonce extension") from exc
    except ValueError as exc:
        raise MalformedAttestationError("credCert extensions are malformed") from exc
    value = extension.value
    if not isinstance(value, x509.UnrecognizedExtension):
        raise MalformedAttestationError("unexpected nonce extension type")
    return value.value
