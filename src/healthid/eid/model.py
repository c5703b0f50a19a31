"""Typed values of the BSI TR-03130-1 (v2.4.0) eID-Interface (§3.3 data types).

Pure: enumerations and frozen, ``kw_only`` dataclasses, no I/O. Everything that can hold
personal data (:class:`PersonalData`, the place types) or a secret (:class:`PreSharedKey`)
has a redacting ``repr`` so that it cannot end up in a log or traceback by accident
(CONVENTIONS.md rule 15).
"""

from __future__ import annotations

import datetime as dt
import hmac
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from types import MappingProxyType


class Attribute(StrEnum):
    """Elements of OperationsRequestorType / OperationsResponderType (§3.3.7, §3.3.8), in order."""

    DOCUMENT_TYPE = "DocumentType"
    ISSUING_STATE = "IssuingState"
    DATE_OF_EXPIRY = "DateOfExpiry"
    GIVEN_NAMES = "GivenNames"
    FAMILY_NAMES = "FamilyNames"
    ARTISTIC_NAME = "ArtisticName"
    ACADEMIC_TITLE = "AcademicTitle"
    DATE_OF_BIRTH = "DateOfBirth"
    PLACE_OF_BIRTH = "PlaceOfBirth"
    NATIONALITY = "Nationality"
    BIRTH_NAME = "BirthName"
    PLACE_OF_RESIDENCE = "PlaceOfResidence"
    COMMUNITY_ID = "CommunityID"
    RESIDENCE_PERMIT_I = "ResidencePermitI"
    RESTRICTED_ID = "RestrictedID"
    AGE_VERIFICATION = "AgeVerification"
    PLACE_VERIFICATION = "PlaceVerification"


# Functions of the eID application rather than data groups; this client does not request them.
VERIFICATION_OPERATIONS = frozenset({Attribute.AGE_VERIFICATION, Attribute.PLACE_VERIFICATION})


class AttributeRequest(StrEnum):
    """§3.3.21: REQUIRED goes to the RequiredCHAT, ALLOWED to the OptionalCHAT."""

    REQUIRED = "REQUIRED"
    ALLOWED = "ALLOWED"
    PROHIBITED = "PROHIBITED"


class AttributeResponse(StrEnum):
    """§3.3.22: what the eID-Server could effectively read."""

    ALLOWED = "ALLOWED"
    PROHIBITED = "PROHIBITED"
    NOTONCHIP = "NOTONCHIP"


class EidType(StrEnum):
    """§3.3.13 / §3.3.17: the eID types of the Smart-eID amendment to TR-03110."""

    CARD_CERTIFIED = "CardCertified"
    SE_CERTIFIED = "SECertified"
    SE_ENDORSED = "SEEndorsed"
    HW_KEY_STORE = "HWKeyStore"


class EidTypeSelection(StrEnum):
    """§3.3.23."""

    ALLOWED = "ALLOWED"
    DENIED = "DENIED"


class LevelOfAssurance(StrEnum):
    """§3.3.12 (note the spelling "substantiell"); eIDAS URIs are for the eSAML profile only."""

    UNDEFINED = "http://bsi.bund.de/eID/LoA/undefined"
    NORMAL = "http://bsi.bund.de/eID/LoA/normal"
    SUBSTANTIELL = "http://bsi.bund.de/eID/LoA/substantiell"
    HOCH = "http://bsi.bund.de/eID/LoA/hoch"
    EIDAS_LOW = "http://eidas.europa.eu/LoA/low"
    EIDAS_SUBSTANTIAL = "http://eidas.europa.eu/LoA/substantial"
    EIDAS_HIGH = "http://eidas.europa.eu/LoA/high"


# §3.3.12: "When used in a national context only the values from the authority bsi.bund.de
# SHALL be used."
NATIONAL_LEVELS = frozenset(
    {
        LevelOfAssurance.UNDEFINED,
        LevelOfAssurance.NORMAL,
        LevelOfAssurance.SUBSTANTIELL,
        LevelOfAssurance.HOCH,
    }
)

# Random bytes of a PSK we generate (TLS-PSK between eID-Client and eID-Server), and of its ID.
PSK_KEY_BYTES = 32
PSK_ID_BYTES = 16

_HEX = re.compile(r"[0-9A-Fa-f]+")


def _hex_bytes(value: str) -> bytes:
    if len(value) % 2 or not _HEX.fullmatch(value):
        raise ValueError("not a hexBinary value")
    return bytes.fromhex(value)


@dataclass(frozen=True, kw_only=True)
class PreSharedKey:
    """§3.3.18: the PSK for the eID-Client's TLS channel; ``id`` goes into the TC Token."""

    id: str
    key: str = field(repr=False)

    def __post_init__(self) -> None:
        _hex_bytes(self.id)
        _hex_bytes(self.key)

    @classmethod
    def generate(cls, random_bytes: Callable[[int], bytes] = secrets.token_bytes) -> PreSharedKey:
        return cls(id=random_bytes(PSK_ID_BYTES).hex(), key=random_bytes(PSK_KEY_BYTES).hex())

    def matches(self, other: PreSharedKey) -> bool:
        """Same ID and key as hexBinary values (case-insensitive), compared in constant time."""
        same_id = hmac.compare_digest(_hex_bytes(self.id), _hex_bytes(other.id))
        same_key = hmac.compare_digest(_hex_bytes(self.key), _hex_bytes(other.key))
        return same_id & same_key


# --- places (§3.3.4, §3.3.5) ------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, repr=False)
class StructuredPlace:
    city: str
    country: str
    street: str | None = None
    state: str | None = None
    zip_code: str | None = None

    def __repr__(self) -> str:
        return "StructuredPlace(<redacted>)"


@dataclass(frozen=True, kw_only=True, repr=False)
class FreetextPlace:
    text: str

    def __repr__(self) -> str:
        return "FreetextPlace(<redacted>)"


@dataclass(frozen=True, kw_only=True, repr=False)
class NoPlaceInfo:
    text: str

    def __repr__(self) -> str:
        return "NoPlaceInfo(<redacted>)"


Place = StructuredPlace | FreetextPlace | NoPlaceInfo


# --- dates (§3.3.19) --------------------------------------------------------------------------

DATE_STRING_LENGTH = 8
_DATE_STRING = re.compile(r"[0-9 ]{8}")


def _part_known(part: str) -> bool:
    if part.isspace():
        return False
    if not part.isdigit():
        raise ValueError("each part of a DateString is all digits or all spaces")
    return int(part) != 0


def partial_iso_date(date_string: str) -> str | None:
    """``YYYY-MM-DD``, ``YYYY-MM`` or ``YYYY`` for a DateString (``None``: year unknown).

    §3.3.19: yyyymmdd, with spaces where a part is unknown (``"1964    "``, ``"196408  "``);
    a part of zeros is read as unknown too (``"1964  00"``). Raises ``ValueError`` for a
    malformed or impossible date.
    """
    if not _DATE_STRING.fullmatch(date_string):
        raise ValueError("a DateString is 8 characters of digits and spaces")
    year, month, day = date_string[:4], date_string[4:6], date_string[6:]
    if not _part_known(year):
        return None
    if not _part_known(month):
        return year
    if not 1 <= int(month) <= 12:
        raise ValueError("the month of a DateString is out of range")
    if not _part_known(day):
        return f"{year}-{month}"
    return dt.date(int(year), int(month), int(day)).isoformat()


def complete_date(date_string: str) -> dt.date | None:
    """The date if the DateString is complete, else ``None`` (``ValueError`` if malformed)."""
    iso = partial_iso_date(date_string)
    if iso is None or len(iso) != len("YYYY-MM-DD"):
        return None
    return dt.date.fromisoformat(iso)


# --- results ----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, repr=False)
class PersonalData:
    """§3.3.3 PersonalDataType, the data groups we model (each ``None`` when not released).

    ``date_of_birth`` is the raw 8-character DateString; :attr:`date_of_birth_iso` gives the
    known part. ``restricted_id`` is the sector-specific pseudonym (§3.3.2) in upper-case hex
    (the canonical form of xs:hexBinary); it is a linking key, not a person key.
    """

    document_type: str | None = None
    issuing_state: str | None = None
    date_of_expiry: dt.date | None = None
    given_names: str | None = None
    family_names: str | None = None
    artistic_name: str | None = None
    academic_title: str | None = None
    date_of_birth: str | None = None
    place_of_birth: Place | None = None
    nationality: str | None = None
    birth_name: str | None = None
    place_of_residence: Place | None = None
    community_id: str | None = None
    residence_permit_i: str | None = None
    restricted_id: str | None = None
    restricted_id2: str | None = None

    def __post_init__(self) -> None:
        if self.date_of_birth is not None:
            partial_iso_date(self.date_of_birth)
        for value in (self.restricted_id, self.restricted_id2):
            if value is not None:
                _hex_bytes(value)

    def __repr__(self) -> str:
        present = [f.name for f in fields(self) if getattr(self, f.name) is not None]
        return f"PersonalData(<redacted: {', '.join(present)}>)"

    @property
    def date_of_birth_iso(self) -> str | None:
        """``YYYY-MM-DD`` / ``YYYY-MM`` / ``YYYY`` (partial birth dates are common)."""
        return None if self.date_of_birth is None else partial_iso_date(self.date_of_birth)

    def has(self, attribute: Attribute) -> bool:
        """Whether the data group ``attribute`` was released (verification functions: no)."""
        name = ATTRIBUTE_FIELDS.get(attribute)
        return name is not None and getattr(self, name) is not None


# Attribute -> PersonalData field (RestrictedID's second value rides along with the first).
ATTRIBUTE_FIELDS: Mapping[Attribute, str] = MappingProxyType(
    {
        Attribute.DOCUMENT_TYPE: "document_type",
        Attribute.ISSUING_STATE: "issuing_state",
        Attribute.DATE_OF_EXPIRY: "date_of_expiry",
        Attribute.GIVEN_NAMES: "given_names",
        Attribute.FAMILY_NAMES: "family_names",
        Attribute.ARTISTIC_NAME: "artistic_name",
        Attribute.ACADEMIC_TITLE: "academic_title",
        Attribute.DATE_OF_BIRTH: "date_of_birth",
        Attribute.PLACE_OF_BIRTH: "place_of_birth",
        Attribute.NATIONALITY: "nationality",
        Attribute.BIRTH_NAME: "birth_name",
        Attribute.PLACE_OF_RESIDENCE: "place_of_residence",
        Attribute.COMMUNITY_ID: "community_id",
        Attribute.RESIDENCE_PERMIT_I: "residence_permit_i",
        Attribute.RESTRICTED_ID: "restricted_id",
    }
)


@dataclass(frozen=True, kw_only=True)
class AssurancePolicy:
    """What useID asks for: a minimum LoA (§3.3.12) and eID types allowed/denied (§3.3.13).

    The default is LoA *hoch* with only the physical card and the certified Smart-eID
    explicitly allowed (SEEndorsed and HWKeyStore are *substantiell*, spec §1.1 [inf]).
    """

    level_of_assurance: LevelOfAssurance | None = LevelOfAssurance.HOCH
    eid_types: Mapping[EidType, EidTypeSelection] = field(
        default_factory=lambda: MappingProxyType(
            {
                EidType.CARD_CERTIFIED: EidTypeSelection.ALLOWED,
                EidType.SE_CERTIFIED: EidTypeSelection.ALLOWED,
                EidType.SE_ENDORSED: EidTypeSelection.DENIED,
                EidType.HW_KEY_STORE: EidTypeSelection.DENIED,
            }
        )
    )


# The attributes healthid's enrolment reads (all REQUIRED: the user cannot deselect them).
DEFAULT_ATTRIBUTES: Mapping[Attribute, AttributeRequest] = MappingProxyType(
    {
        Attribute.GIVEN_NAMES: AttributeRequest.REQUIRED,
        Attribute.FAMILY_NAMES: AttributeRequest.REQUIRED,
        Attribute.BIRTH_NAME: AttributeRequest.REQUIRED,
        Attribute.DATE_OF_BIRTH: AttributeRequest.REQUIRED,
        Attribute.PLACE_OF_RESIDENCE: AttributeRequest.REQUIRED,
        Attribute.RESTRICTED_ID: AttributeRequest.REQUIRED,
    }
)


@dataclass(frozen=True, kw_only=True)
class UseIdRequest:
    """§3.2.1.1 useIDRequest (the subset we declare). Unlisted attributes are PROHIBITED."""

    attributes: Mapping[Attribute, AttributeRequest] = field(
        default_factory=lambda: DEFAULT_ATTRIBUTES
    )
    policy: AssurancePolicy = field(default_factory=AssurancePolicy)
    psk: PreSharedKey | None = None
    age_verification: int | None = None
    place_verification: str | None = None

    def requested(self, attribute: Attribute) -> AttributeRequest:
        return self.attributes.get(attribute, AttributeRequest.PROHIBITED)


@dataclass(frozen=True, kw_only=True)
class UseIdResult:
    """§3.2.1.2 useIDResponse: put exactly this PSK and address into the TC Token (§3.5.3)."""

    session_id: str
    psk_id: str
    psk_key: str = field(repr=False)
    ecard_server_address: str | None = None

    @property
    def psk(self) -> PreSharedKey:
        return PreSharedKey(id=self.psk_id, key=self.psk_key)


@dataclass(frozen=True, kw_only=True)
class GetResultOutcome:
    """§3.2.2.2 getResultResponse of a successful Online-Authentication."""

    personal_data: PersonalData
    operations_allowed: Mapping[Attribute, AttributeResponse]
    level_of_assurance: LevelOfAssurance | None = None
    eid_type: EidType | None = None
