"""Synthetic test identities for the local eID-Server stand-in (development only).

"Erika Mustermann" is the BSI's published specimen person of the German ID card; the others
are invented. Each RestrictedID is derived from the key, so it is stable across runs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType

from healthid.eid.model import EidType, FreetextPlace, NoPlaceInfo, PersonalData, StructuredPlace
from healthid.eid.standin_core import StandinIdentity


def _restricted_id(key: str) -> str:
    return hashlib.sha256(f"healthid-standin:{key}".encode()).hexdigest().upper()


def _identity(key: str, eid_type: EidType, data: PersonalData) -> tuple[str, StandinIdentity]:
    personal_data = replace(
        data, document_type="ID", issuing_state="D", restricted_id=_restricted_id(key)
    )
    return key, StandinIdentity(personal_data=personal_data, eid_type=eid_type)


_KOELN = StructuredPlace(street="HEIDESTRASSE 17", city="KÖLN", country="D", zip_code="51147")

DEMO_IDENTITIES: Mapping[str, StandinIdentity] = MappingProxyType(
    dict(
        [
            _identity(
                "erika",
                EidType.CARD_CERTIFIED,
                PersonalData(
                    given_names="ERIKA",
                    family_names="MUSTERMANN",
                    birth_name="GABLER",
                    date_of_birth="19640812",
                    place_of_residence=_KOELN,
                ),
            ),
            _identity(
                "partial-date",
                EidType.CARD_CERTIFIED,
                PersonalData(
                    given_names="ANTON",
                    family_names="PARTIELL",
                    date_of_birth="1971    ",
                    place_of_residence=FreetextPlace(text="AM MARKT 1, 99999 MUSTERDORF"),
                ),
            ),
            _identity(
                "no-residence",
                EidType.CARD_CERTIFIED,
                PersonalData(
                    given_names="NORA",
                    family_names="OHNEWOHNSITZ",
                    date_of_birth="198203  ",
                    place_of_residence=NoPlaceInfo(text="keine Hauptwohnung in Deutschland"),
                ),
            ),
            _identity(
                "smart-eid",
                EidType.SE_CERTIFIED,
                PersonalData(
                    given_names="SAMI",
                    family_names="SMARTPHONE",
                    date_of_birth="19900101",
                    place_of_residence=_KOELN,
                ),
            ),
            _identity(
                "smart-eid-endorsed",
                EidType.SE_ENDORSED,
                PersonalData(
                    given_names="ENNO",
                    family_names="ENDORSED",
                    date_of_birth="19850615",
                    place_of_residence=_KOELN,
                ),
            ),
            _identity(
                "hw-keystore",
                EidType.HW_KEY_STORE,
                PersonalData(
                    given_names="KIRA",
                    family_names="KEYSTORE",
                    date_of_birth="19950520",
                    place_of_residence=_KOELN,
                ),
            ),
        ]
    )
)
