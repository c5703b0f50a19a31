"""The policyholder master data (Versichertenstammdaten) and its normalisation.

Field names follow the VSD (spec eid-egk-wallet-device.md §2.3): KVNR, IK (Kostenträger), names,
birth date (partial dates allowed, as on eID cards and in the VSD), sex (M/W/X/D), address,
insured type (Versichertenart 1 member, 3 family insured, 5 pensioner) and coverage validity.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, fields
from datetime import date
from typing import Any

import cbor2

RECORD_TYPE = "master_data"
RECORD_VERSION = 1
SEXES = frozenset({"M", "W", "X", "D"})
INSURED_TYPES = frozenset({"1", "3", "5"})
MAX_NAME_LEN = 100
MAX_TEXT_LEN = 200
BIRTH_DATE_PATTERN = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")
# VSD Wohnsitzlaendercode: country codes of 1-3 upper-case letters ("D", "A", "CH", "NL" ...)
COUNTRY_PATTERN = re.compile(r"[A-Z]{1,3}")
POSTAL_CODE_PATTERN = re.compile(r"[0-9A-Z -]{2,10}")

REQUIRED_FIELDS = (
    "kvnr",
    "ik",
    "given_name",
    "family_name",
    "birth_date",
    "sex",
    "insured_type",
    "valid_from",
)
OPTIONAL_FIELDS = (
    "birth_name",
    "street",
    "house_number",
    "postal_code",
    "city",
    "country",
    "valid_until",
    "email",
)
ALL_FIELDS = REQUIRED_FIELDS + OPTIONAL_FIELDS


@dataclass(frozen=True, kw_only=True)
class Policyholder:
    kvnr: str
    ik: str
    given_name: str
    family_name: str
    birth_date: str  # YYYY-MM-DD, YYYY-MM or YYYY
    sex: str
    insured_type: str
    valid_from: str  # YYYY-MM-DD
    birth_name: str | None = None
    street: str | None = None
    house_number: str | None = None
    postal_code: str | None = None
    city: str | None = None
    country: str | None = None
    valid_until: str | None = None
    email: str | None = None

    def to_cbor(self) -> bytes:
        values = {name: getattr(self, name) for name in _FIELD_NAMES}
        return bytes(cbor2.dumps({k: v for k, v in values.items() if v is not None}))

    @classmethod
    def from_cbor(cls, raw: bytes) -> Policyholder:
        data: dict[str, Any] = cbor2.loads(raw)
        return cls(**{k: v for k, v in data.items() if k in _FIELD_NAMES})

    def covered_on(self, day: date) -> bool:
        """Whether the insurance coverage is valid on ``day``."""
        if date.fromisoformat(self.valid_from) > day:
            return False
        return self.valid_until is None or date.fromisoformat(self.valid_until) >= day


_FIELD_NAMES = tuple(f.name for f in fields(Policyholder))
_TRANSLIT = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "æ": "ae", "ø": "oe"})


def normalise_name(value: str) -> str:
    """Lookup form of a name: case-folded, umlauts transliterated, accents and hyphens removed.

    The eID card, the eGK and the registry spell names differently (upper case, ``ue`` for
    ``ü``, hyphen or blank); matching works on this form only, never on display values.
    """
    text = unicodedata.normalize("NFC", value).casefold().translate(_TRANSLIT)
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    text = re.sub(r"[\s\-\u2010'\u2019.]+", " ", text)
    return text.strip()


def name_birth_lookup_value(family_name: str, given_name: str, birth_date: str) -> str:
    """The value behind the ``name_birth`` blind index (eID identity matching)."""
    return "\x1f".join((normalise_name(family_name), normalise_name(given_name), birth_date))
