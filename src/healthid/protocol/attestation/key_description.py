"""The Android KeyDescription certificate extension (OID 1.3.6.1.4.1.11129.2.1.17).

Source: ../shared/spec/eid-egk-wallet-device.md §4.2; schema from the AOSP key attestation
documentation (source.android.com/docs/security/features/keystore/attestation#schema)::

    KeyDescription ::= SEQUENCE {
        attestationVersion INTEGER, attestationSecurityLevel SecurityLevel,
        keyMintVersion INTEGER, keyMintSecurityLevel SecurityLevel,
        attestationChallenge OCTET STRING, uniqueId OCTET STRING,
        softwareEnforced AuthorizationList, hardwareEnforced AuthorizationList }

Only the AuthorizationList fields this package checks are in the schema. Because every field
of an AuthorizationList is an optional explicit tag and asn1crypto matches fields by position,
unknown tags (KeyMint adds new ones with each version) are first filtered out of the sequence;
duplicate or out-of-order tags (not DER, and ambiguous) are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from asn1crypto import core, parser

from .common import AndroidSecurityLevel, MalformedAttestationError, VerifiedBootState

KEY_DESCRIPTION_OID = "1.3.6.1.4.1.11129.2.1.17"

# KeyMint tag numbers (AOSP hardware/interfaces/security/keymint Tag.aidl, without type bits)
TAG_PURPOSE = 1
TAG_ALGORITHM = 2
TAG_KEY_SIZE = 3
TAG_EC_CURVE = 10
TAG_NO_AUTH_REQUIRED = 503
TAG_USER_AUTH_TYPE = 504
TAG_ORIGIN = 702
TAG_ROOT_OF_TRUST = 704
TAG_OS_VERSION = 705
TAG_OS_PATCH_LEVEL = 706
TAG_ATTESTATION_APPLICATION_ID = 709

_CLASS_UNIVERSAL, _CLASS_CONTEXT = 0, 2
_CONSTRUCTED = 1
_TAG_SEQUENCE = 16

_SECURITY_LEVELS = {
    0: AndroidSecurityLevel.SOFTWARE,
    1: AndroidSecurityLevel.TRUSTED_ENVIRONMENT,
    2: AndroidSecurityLevel.STRONGBOX,
}
_BOOT_STATES = {
    0: VerifiedBootState.VERIFIED,
    1: VerifiedBootState.SELF_SIGNED,
    2: VerifiedBootState.UNVERIFIED,
    3: VerifiedBootState.FAILED,
}


# asn1crypto ships no type information: its base classes are Any to mypy.
class _IntegerSet(core.SetOf):  # type: ignore[misc]
    _child_spec = core.Integer


class RootOfTrust(core.Sequence):  # type: ignore[misc]
    _fields = [  # noqa: RUF012 - asn1crypto schema declaration
        ("verified_boot_key", core.OctetString),
        ("device_locked", core.Boolean),
        ("verified_boot_state", core.Enumerated),
        ("verified_boot_hash", core.OctetString, {"optional": True}),  # version >= 3
    ]


class AuthorizationList(core.Sequence):  # type: ignore[misc]
    _fields = [  # noqa: RUF012 - asn1crypto schema declaration
        ("purpose", _IntegerSet, {"explicit": TAG_PURPOSE, "optional": True}),
        ("algorithm", core.Integer, {"explicit": TAG_ALGORITHM, "optional": True}),
        ("key_size", core.Integer, {"explicit": TAG_KEY_SIZE, "optional": True}),
        ("ec_curve", core.Integer, {"explicit": TAG_EC_CURVE, "optional": True}),
        ("no_auth_required", core.Null, {"explicit": TAG_NO_AUTH_REQUIRED, "optional": True}),
        ("user_auth_type", core.Integer, {"explicit": TAG_USER_AUTH_TYPE, "optional": True}),
        ("origin", core.Integer, {"explicit": TAG_ORIGIN, "optional": True}),
        ("root_of_trust", RootOfTrust, {"explicit": TAG_ROOT_OF_TRUST, "optional": True}),
        ("os_version", core.Integer, {"explicit": TAG_OS_VERSION, "optional": True}),
        ("os_patch_level", core.Integer, {"explicit": TAG_OS_PATCH_LEVEL, "optional": True}),
        (
            "attestation_application_id",
            core.OctetString,
            {"explicit": TAG_ATTESTATION_APPLICATION_ID, "optional": True},
        ),
    ]


_KNOWN_TAGS = frozenset(
    {
        TAG_PURPOSE,
        TAG_ALGORITHM,
        TAG_KEY_SIZE,
        TAG_EC_CURVE,
        TAG_NO_AUTH_REQUIRED,
        TAG_USER_AUTH_TYPE,
        TAG_ORIGIN,
        TAG_ROOT_OF_TRUST,
        TAG_OS_VERSION,
        TAG_OS_PATCH_LEVEL,
        TAG_ATTESTATION_APPLICATION_ID,
    }
)


class KeyDescription(core.Sequence):  # type: ignore[misc]
    _fields = [  # noqa: RUF012 - asn1crypto schema declaration
        ("attestation_version", core.Integer),
        ("attestation_security_level", core.Enumerated),
        ("keymint_version", core.Integer),
        ("keymint_security_level", core.Enumerated),
        ("attestation_challenge", core.OctetString),
        ("unique_id", core.OctetString),
        # AuthorizationList, filtered by _known_fields() before it is parsed
        ("software_enforced", core.Any),
        ("hardware_enforced", core.Any),
    ]


class AttestationPackageInfo(core.Sequence):  # type: ignore[misc]
    _fields = [  # noqa: RUF012 - asn1crypto schema declaration
        ("package_name", core.OctetString),
        ("version", core.Integer),
    ]


class _PackageInfos(core.SetOf):  # type: ignore[misc]
    _child_spec = AttestationPackageInfo


class _Digests(core.SetOf):  # type: ignore[misc]
    _child_spec = core.OctetString


class AttestationApplicationId(core.Sequence):  # type: ignore[misc]
    _fields = [  # noqa: RUF012 - asn1crypto schema declaration
        ("package_infos", _PackageInfos),
        ("signature_digests", _Digests),
    ]


@dataclass(frozen=True, kw_only=True, slots=True)
class ParsedRootOfTrust:
    verified_boot_key: bytes
    device_locked: bool
    verified_boot_state: VerifiedBootState


@dataclass(frozen=True, kw_only=True, slots=True)
class ParsedApplicationId:
    package_names: tuple[str, ...]
    signature_digests: tuple[bytes, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class ParsedAuthorizationList:
    purposes: frozenset[int] | None
    algorithm: int | None
    key_size: int | None
    ec_curve: int | None
    no_auth_required: bool
    user_auth_type: int | None
    origin: int | None
    root_of_trust: ParsedRootOfTrust | None
    os_version: int | None
    os_patch_level: int | None
    application_id: ParsedApplicationId | None


@dataclass(frozen=True, kw_only=True, slots=True)
class ParsedKeyDescription:
    attestation_version: int
    attestation_security_level: AndroidSecurityLevel
    keymint_version: int
    keymint_security_level: AndroidSecurityLevel
    challenge: bytes
    software_enforced: ParsedAuthorizationList
    hardware_enforced: ParsedAuthorizationList


_T = TypeVar("_T")
_ASN1_ERRORS = (ValueError, TypeError, KeyError, IndexError, OverflowError, RecursionError)


def parse_key_description(der: bytes) -> ParsedKeyDescription:
    """Parse the extension value completely (asn1crypto is lazy) or raise Malformed."""
    try:
        description = KeyDescription.load(der, strict=True)
        return ParsedKeyDescription(
            attestation_version=int(description["attestation_version"].native),
            attestation_security_level=_enum(
                description["attestation_security_level"], _SECURITY_LEVELS
            ),
            keymint_version=int(description["keymint_version"].native),
            keymint_security_level=_enum(description["keymint_security_level"], _SECURITY_LEVELS),
            challenge=bytes(description["attestation_challenge"].native),
            software_enforced=_authorization_list(description["software_enforced"].dump()),
            hardware_enforced=_authorization_list(description["hardware_enforced"].dump()),
        )
    except MalformedAttestationError:
        raise
    except _ASN1_ERRORS as exc:
        raise MalformedAttestationError("KeyDescription does not match its schema") from exc


def parse_application_id(der: bytes) -> ParsedApplicationId:
    """AttestationApplicationId ::= SEQUENCE { SET OF PackageInfo, SET OF OCTET STRING }."""
    try:
        parsed = AttestationApplicationId.load(der, strict=True)
        names = tuple(
            bytes(info["package_name"].native).decode("utf-8") for info in parsed["package_infos"]
        )
        digests = tuple(bytes(d.native) for d in parsed["signature_digests"])
    except _ASN1_ERRORS as exc:  # UnicodeDecodeError is a ValueError
        raise MalformedAttestationError("AttestationApplicationId is malformed") from exc
    return ParsedApplicationId(package_names=names, signature_digests=digests)


def _enum(value: core.Enumerated, mapping: dict[int, _T]) -> _T:
    number = int(value)
    if number not in mapping:
        raise MalformedAttestationError("unknown enumerated value")
    return mapping[number]


def _optional_int(value: core.Asn1Value) -> int | None:
    return None if isinstance(value, core.Void) else int(value.native)


def _known_fields(authorization_list: bytes) -> bytes:
    """Re-encode an AuthorizationList keeping only the tags in the schema, in order."""
    class_, method, tag, _, contents, trailer = parser.parse(authorization_list, strict=True)
    if (class_, method, tag) != (_CLASS_UNIVERSAL, _CONSTRUCTED, _TAG_SEQUENCE) or trailer:
        raise MalformedAttestationError("an AuthorizationList is a definite-length SEQUENCE")
    kept: list[bytes] = []
    offset, previous = 0, -1
    while offset < len(contents):
        class_, method, tag, header, body, trailer = parser.parse(contents[offset:])
        size = len(header) + len(body) + len(trailer)
        if class_ != _CLASS_CONTEXT or method != _CONSTRUCTED or trailer:
            raise MalformedAttestationError("an AuthorizationList entry is an explicit tag")
        if tag <= previous:
            raise MalformedAttestationError("AuthorizationList tags repeat or are out of order")
        if tag in _KNOWN_TAGS:
            kept.append(contents[offset : offset + size])
        offset, previous = offset + size, tag
    return bytes(parser.emit(_CLASS_UNIVERSAL, _CONSTRUCTED, _TAG_SEQUENCE, b"".join(kept)))


def _authorization_list(der: bytes) -> ParsedAuthorizationList:
    parsed = AuthorizationList.load(_known_fields(der), strict=True)
    purposes = parsed["purpose"]
    root = parsed["root_of_trust"]
    application_id = parsed["attestation_application_id"]
    return ParsedAuthorizationList(
        purposes=None if isinstance(purposes, core.Void) else frozenset(purposes.native),
        algorithm=_optional_int(parsed["algorithm"]),
        key_size=_optional_int(parsed["key_size"]),
        ec_curve=_optional_int(parsed["ec_curve"]),
        no_auth_required=not isinstance(parsed["no_auth_required"], core.Void),
        user_auth_type=_optional_int(parsed["user_auth_type"]),
        origin=_optional_int(parsed["origin"]),
        root_of_trust=None if isinstance(root, core.Void) else _root_of_trust(root),
        os_version=_optional_int(parsed["os_version"]),
        os_patch_level=_optional_int(parsed["os_patch_level"]),
        application_id=(
            None
            if isinstance(application_id, core.Void)
            else parse_application_id(bytes(application_id.native))
        ),
    )


def _root_of_trust(root: RootOfTrust) -> ParsedRootOfTrust:
    locked = root["device_locked"]
    if len(locked.contents) != 1:
        raise MalformedAttestationError("deviceLocked is a one-byte BOOLEAN")
    return ParsedRootOfTrust(
        verified_boot_key=bytes(root["verified_boot_key"].native),
        # BER: any non-zero octet is TRUE (some devices encode 0x01, not DER's 0xFF)
        device_locked=locked.contents != b"\x00",
        verified_boot_state=_enum(root["verified_boot_state"], _BOOT_STATES),
    )
