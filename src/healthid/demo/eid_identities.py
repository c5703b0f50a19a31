"""eID test identities for the stand-in, made from a (synthetic or test) registry file.

Development only: the stand-in plays the citizen's ID card, so it needs the same people the
registry holds. Each identity is keyed by its KVNR (``healthid wallet enroll
--eid-test-identity KVNR``); names come upper-case as on the card, the birth date as the
card's DateString (spaces for unknown parts), the address as the card's PlaceOfResidence,
and a RestrictedID derived from the KVNR so it is stable across runs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType

from healthid.eid.model import EidType, PersonalData, StructuredPlace
from healthid.eid.standin_core import StandinIdentity
from healthid.enclave.registry.formats import ParseOptions, detect_format, parse_registry
from healthid.enclave.registry.model import Policyholder


class RegistryFileError(ValueError):
    """The registry file for the stand-in has errors (row and field named)."""


def date_string(birth_date: str) -> str:
    """``YYYY-MM-DD`` / ``YYYY-MM`` / ``YYYY`` → TR-03130 DateString (``YYYYMMDD``, spaces)."""
    digits = birth_date.replace("-", "")
    return digits.ljust(8)


def identity_for(
    holder: Policyholder, eid_type: EidType = EidType.CARD_CERTIFIED
) -> StandinIdentity:
    residence = None
    if holder.city:
        street = " ".join(p for p in (holder.street, holder.house_number) if p) or None
        residence = StructuredPlace(
            street=street.upper() if street else None,
            city=holder.city.upper(),
            country=holder.country or "D",
            zip_code=holder.postal_code,
        )
    rid = hashlib.sha256(f"healthid-standin:{holder.kvnr}".encode()).hexdigest().upper()
    return StandinIdentity(
        personal_data=PersonalData(
            document_type="ID",
            issuing_state="D",
            given_names=holder.given_name.upper(),
            family_names=holder.family_name.upper(),
            birth_name=holder.birth_name.upper() if holder.birth_name else None,
            date_of_birth=date_string(holder.birth_date),
            place_of_residence=residence,
            restricted_id=rid,
        ),
        eid_type=eid_type,
    )


def identities_from_registry(data: bytes, filename: str) -> Mapping[str, StandinIdentity]:
    parsed = parse_registry(
        data,
        detect_format(filename, data),
        ParseOptions(today=datetime.now(UTC).date(), accept_test_kvnr=True),
    )
    if parsed.errors:
        raise RegistryFileError("; ".join(str(e) for e in parsed.errors[:5]))
    return MappingProxyType({h.kvnr: identity_for(h) for _, h in parsed.rows})
