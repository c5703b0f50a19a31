"""Synthetic attestations under TEST roots generated at test time (no key files).

Builds App Attest attestation objects and assertions (spec §4.1) and Android Key Attestation
chains with a hand-encoded KeyDescription (spec §4.2). The DER encoder here is deliberately
independent of the schema in ``healthid.protocol.attestation.key_description`` so that the
parser is tested against bytes it did not produce, including malformed ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
CHALLENGE = bytes(range(32))
OTHER_CHALLENGE = bytes(range(1, 33))
TEAM_ID = "ABCDE12345"
BUNDLE_ID = "de.example.healthid.wallet"
PACKAGE_NAME = "de.example.healthid.wallet"
SIGNING_CERT_DIGEST = hashlib.sha256(b"test APK signing certificate").digest()

APPLE_NONCE_OID = x509.ObjectIdentifier("1.2.840.113635.100.8.2")
KEY_DESCRIPTION_OID = x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.1.17")
AAGUID_PRODUCTION = b"appattest" + b"\x00" * 7
AAGUID_DEVELOPMENT = b"appattestdevelop"

ANY_KEY = ec.EllipticCurvePrivateKey


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


def point(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def p256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def p384() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


# --------------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class Ca:
    certificate: x509.Certificate
    key: ANY_KEY


def _name(common_name: str, organisation: str = "HealthID Test") -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


CA_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)
LEAF_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)


def certificate(
    *,
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    issuer: Ca | None,
    signing_key: ANY_KEY | None = None,
    ca: bool,
    path_length: int | None = None,
    basic_constraints: bool = True,
    key_usage: x509.KeyUsage | None = None,
    extensions: Iterable[tuple[x509.ExtensionType, bool]] = (),
    not_before: datetime = NOW - timedelta(days=30),
    not_after: datetime = NOW + timedelta(days=365),
    serial: int | None = None,
) -> x509.Certificate:
    """One certificate; ``issuer=None`` makes it self-signed with ``signing_key``."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject if issuer else subject)
        .public_key(public_key)
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if basic_constraints:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True
        )
    if key_usage is not None:
        builder = builder.add_extension(key_usage, critical=True)
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    key = issuer.key if issuer else signing_key
    assert key is not None
    return builder.sign(
        key, hashes.SHA384() if isinstance(key.curve, ec.SECP384R1) else hashes.SHA256()
    )


def make_root(common_name: str = "Test Root", key: ANY_KEY | None = None, **kwargs: object) -> Ca:
    key = key or p384()
    cert = certificate(
        subject=_name(common_name),
        public_key=key.public_key(),
        issuer=None,
        signing_key=key,
        ca=True,
        key_usage=CA_USAGE,
        not_before=NOW - timedelta(days=3650),
        not_after=NOW + timedelta(days=3650),
        **kwargs,
    )
    return Ca(cert, key)


def make_ca(
    issuer: Ca, common_name: str, organisation: str = "HealthID Test", **kwargs: object
) -> Ca:
    key = p256()
    kwargs.setdefault("key_usage", CA_USAGE)
    cert = certificate(
        subject=_name(common_name, organisation),
        public_key=key.public_key(),
        issuer=issuer,
        ca=True,
        **kwargs,
    )
    return Ca(cert, key)


def make_leaf(
    issuer: Ca, public_key: ec.EllipticCurvePublicKey, common_name: str = "Leaf", **kwargs: object
) -> x509.Certificate:
    kwargs.setdefault("key_usage", LEAF_USAGE)
    kwargs.setdefault("ca", False)
    return certificate(
        subject=_name(common_name),
        public_key=public_key,
        issuer=issuer,
        **kwargs,
    )


# --------------------------------------------------------------------------- Apple App Attest


@dataclass(frozen=True)
class ApplePki:
    root: Ca
    intermediate: Ca

    @classmethod
    def create(cls) -> ApplePki:
        root = make_root("Test App Attestation Root CA")
        return cls(root, make_ca(root, "Test App Attestation CA 1", path_length=0))


@dataclass(frozen=True)
class AppleAttestation:
    attestation: bytes
    key_id: bytes
    device_key: ec.EllipticCurvePrivateKey
    auth_data: bytes


def cose_key(public_key: ec.EllipticCurvePublicKey) -> bytes:
    numbers = public_key.public_numbers()
    size = (public_key.curve.key_size + 7) // 8
    return cbor2.dumps(
        {
            1: 2,
            3: -7,
            -1: 1,
            -2: numbers.x.to_bytes(size, "big"),
            -3: numbers.y.to_bytes(size, "big"),
        }
    )


def apple_auth_data(
    *,
    rp_id: str,
    sign_count: int = 0,
    flags: int = 0x40,
    aaguid: bytes = AAGUID_PRODUCTION,
    credential_id: bytes,
    cose: bytes,
) -> bytes:
    return (
        sha256(rp_id.encode())
        + bytes([flags])
        + sign_count.to_bytes(4, "big")
        + aaguid
        + len(credential_id).to_bytes(2, "big")
        + credential_id
        + cose
    )


def apple_attestation(
    pki: ApplePki,
    *,
    challenge: bytes = CHALLENGE,
    app_id: str = f"{TEAM_ID}.{BUNDLE_ID}",
    device_key: ec.EllipticCurvePrivateKey | None = None,
    sign_count: int = 0,
    aaguid: bytes = AAGUID_PRODUCTION,
    credential_id: bytes | None = None,
    cose: bytes | None = None,
    auth_data: bytes | None = None,
    nonce_extension: bytes | None = None,
    cred_cert_kwargs: dict[str, object] | None = None,
    x5c: Sequence[bytes] | None = None,
    fmt: str = "apple-appattest",
) -> AppleAttestation:
    """A genuine-looking attestation; every keyword overrides one ingredient to break it."""
    device_key = device_key or p256()
    key_id = sha256(point(device_key.public_key()))
    if auth_data is None:
        auth_data = apple_auth_data(
            rp_id=app_id,
            sign_count=sign_count,
            aaguid=aaguid,
            credential_id=key_id if credential_id is None else credential_id,
            cose=cose_key(device_key.public_key()) if cose is None else cose,
        )
    nonce = sha256(auth_data + sha256(challenge))
    if nonce_extension is None:
        nonce_extension = bytes.fromhex("3024a1220420") + nonce
    extensions = [(x509.UnrecognizedExtension(APPLE_NONCE_OID, nonce_extension), False)]
    cred_cert = make_leaf(
        pki.intermediate,
        device_key.public_key(),
        key_id.hex(),
        extensions=extensions,
        **(cred_cert_kwargs or {}),
    )
    chain = list(x5c) if x5c is not None else [der(cred_cert), der(pki.intermediate.certificate)]
    attestation = cbor2.dumps(
        {"fmt": fmt, "attStmt": {"x5c": chain, "receipt": b"test receipt"}, "authData": auth_data}
    )
    return AppleAttestation(attestation, key_id, device_key, auth_data)


def apple_assertion(
    device_key: ec.EllipticCurvePrivateKey,
    *,
    client_data: bytes,
    sign_count: int,
    app_id: str = f"{TEAM_ID}.{BUNDLE_ID}",
    flags: int = 0x00,
    trailing: bytes = b"",
) -> bytes:
    authenticator_data = sha256(app_id.encode()) + bytes([flags]) + sign_count.to_bytes(4, "big")
    authenticator_data += trailing
    nonce = sha256(authenticator_data + sha256(client_data))
    signature = device_key.sign(nonce, ec.ECDSA(hashes.SHA256()))
    return cbor2.dumps({"signature": signature, "authenticatorData": authenticator_data})


# --------------------------------------------------------------------------- DER (Android)


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _length(len(content)) + content


def integer(n: int) -> bytes:
    return tlv(0x02, n.to_bytes(n.bit_length() // 8 + 1, "big", signed=True))


def enumerated(n: int) -> bytes:
    return tlv(0x0A, n.to_bytes(n.bit_length() // 8 + 1, "big", signed=True))


def octets(data: bytes) -> bytes:
    return tlv(0x04, data)


def boolean(value: bool) -> bytes:
    return tlv(0x01, b"\xff" if value else b"\x00")


def null() -> bytes:
    return tlv(0x05, b"")


def sequence(*items: bytes) -> bytes:
    return tlv(0x30, b"".join(items))


def set_of(*items: bytes) -> bytes:
    return tlv(0x31, b"".join(sorted(items)))


def explicit(tag_number: int, content: bytes) -> bytes:
    """[tag_number] EXPLICIT, context class, constructed (high-tag-number form above 30)."""
    if tag_number < 31:
        return bytes([0xA0 | tag_number]) + _length(len(content)) + content
    digits = []
    while True:
        digits.append(tag_number & 0x7F)
        tag_number >>= 7
        if not tag_number:
            break
    encoded = bytes(d | 0x80 for d in reversed(digits[1:])) + bytes([digits[0]])
    return b"\xbf" + encoded + _length(len(content)) + content


def root_of_trust(*, locked: bool = True, state: int = 0) -> bytes:
    return sequence(octets(b"\x11" * 32), boolean(locked), enumerated(state), octets(b"\x22" * 32))


def application_id(
    packages: Sequence[str] = (PACKAGE_NAME,), digests: Sequence[bytes] = (SIGNING_CERT_DIGEST,)
) -> bytes:
    infos = [sequence(octets(p.encode()), integer(1)) for p in packages]
    return sequence(set_of(*infos), set_of(*(octets(d) for d in digests)))


def hardware_enforced(**overrides: bytes | None) -> dict[int, bytes]:
    """A TEE-enforced list of an EC P-256 signing key; ``name=None`` removes a tag.

    It includes tags the verifier does not know (digest [5], vendor/boot patch level
    [718]/[719]) between the ones it checks.
    """
    entries: dict[str, tuple[int, bytes]] = {
        "purpose": (1, set_of(integer(2), integer(3))),
        "algorithm": (2, integer(3)),
        "key_size": (3, integer(256)),
        "digest": (5, set_of(integer(4))),
        "ec_curve": (10, integer(1)),
        "no_auth_required": (503, null()),
        "origin": (702, integer(0)),
        "root_of_trust": (704, root_of_trust()),
        "os_version": (705, integer(160000)),
        "os_patch_level": (706, integer(202605)),
        "vendor_patch_level": (718, integer(20260505)),
        "boot_patch_level": (719, integer(20260505)),
    }
    tags = {"user_auth_type": 504}
    result = {tag: value for tag, value in entries.values()}
    for name, value in overrides.items():
        tag = entries[name][0] if name in entries else tags[name]
        if value is None:
            result.pop(tag, None)
        else:
            result[tag] = value
    return result


def software_enforced(**overrides: bytes | None) -> dict[int, bytes]:
    entries = {
        "creation_date_time": (701, integer(1_780_000_000_000)),
        "attestation_application_id": (709, octets(application_id())),
        "module_hash": (724, octets(b"\x33" * 32)),
    }
    result = {tag: value for tag, value in entries.values()}
    for name, value in overrides.items():
        if value is None:
            result.pop(entries[name][0], None)
        else:
            result[entries[name][0]] = value
    return result


def authorization_list(entries: dict[int, bytes] | Sequence[tuple[int, bytes]]) -> bytes:
    """Sorted by tag from a dict; in the given order (duplicates allowed) from a sequence."""
    items = sorted(entries.items()) if isinstance(entries, dict) else list(entries)
    return sequence(*(explicit(tag, value) for tag, value in items))


def key_description(
    *,
    challenge: bytes = CHALLENGE,
    security_level: int = 1,
    keymint_level: int | None = None,
    version: int = 400,
    hardware: dict[int, bytes] | Sequence[tuple[int, bytes]] | None = None,
    software: dict[int, bytes] | Sequence[tuple[int, bytes]] | None = None,
) -> bytes:
    return sequence(
        integer(version),
        enumerated(security_level),
        integer(version),
        enumerated(security_level if keymint_level is None else keymint_level),
        octets(challenge),
        octets(b""),
        authorization_list(software if software is not None else software_enforced()),
        authorization_list(hardware if hardware is not None else hardware_enforced()),
    )


# --------------------------------------------------------------------------- Android chains


@dataclass(frozen=True)
class AndroidPki:
    root: Ca
    intermediate: Ca
    attestation: Ca

    @classmethod
    def create(cls, *, security_level_name: str = "TEE") -> AndroidPki:
        root = make_root("Test Key Attestation CA1")
        intermediate = make_ca(root, "Test Droid CA2", path_length=2)
        return cls(
            root, intermediate, make_ca(intermediate, "test-attestation-key", security_level_name)
        )


@dataclass(frozen=True)
class AndroidAttestation:
    chain: list[bytes]
    device_key: ec.EllipticCurvePrivateKey
    leaf: x509.Certificate = field(repr=False)


def android_attestation(
    pki: AndroidPki,
    *,
    description: bytes | None = None,
    device_key: ec.EllipticCurvePrivateKey | None = None,
    include_root: bool = True,
    leaf_kwargs: dict[str, object] | None = None,
    with_extension: bool = True,
) -> AndroidAttestation:
    """Leaf (Android Keystore Key) > attestation key > intermediate > root."""
    device_key = device_key or p256()
    extensions = []
    if with_extension:
        value = description if description is not None else key_description()
        extensions.append((x509.UnrecognizedExtension(KEY_DESCRIPTION_OID, value), False))
    leaf = make_leaf(
        pki.attestation,
        device_key.public_key(),
        "Android Keystore Key",
        basic_constraints=False,
        extensions=extensions,
        not_before=datetime(1970, 1, 1, tzinfo=UTC),
        not_after=datetime(2048, 1, 1, tzinfo=UTC),
        **(leaf_kwargs or {}),
    )
    chain = [der(leaf), der(pki.attestation.certificate), der(pki.intermediate.certificate)]
    if include_root:
        chain.append(der(pki.root.certificate))
    return AndroidAttestation(chain, device_key, leaf)
