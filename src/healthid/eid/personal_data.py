"""PersonalDataType <-> :class:`PersonalData` (TR-03130-1 v2.4.0 §3.3.2-§3.3.5, §3.3.19).

Reading happens only after the envelope passed our XSD, so every element has the right shape;
what the XSD cannot say is checked here: a DateString whose parts mix digits and spaces or
name an impossible date, and a DateValue that is present for an incomplete date or contradicts
the DateString (§3.3.19). Errors name the element, never its value.

Writing (used by the stand-in) emits the released data groups in schema order.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

from healthid.eid.errors import EidProtocolError
from healthid.eid.model import (
    ATTRIBUTE_FIELDS,
    Attribute,
    FreetextPlace,
    NoPlaceInfo,
    PersonalData,
    Place,
    StructuredPlace,
    complete_date,
)
from healthid.eid.results import collapse
from healthid.eid.soap import eid, sub

# xs:date: the date, optionally followed by a time zone (which a calendar date ignores).
_XS_DATE = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2})(Z|[+-][0-9]{2}:[0-9]{2})?")

_TEXT_FIELDS = {
    "DocumentType": "document_type",
    "GivenNames": "given_names",
    "FamilyNames": "family_names",
    "ArtisticName": "artistic_name",
    "AcademicTitle": "academic_title",
    "BirthName": "birth_name",
    "ResidencePermitI": "residence_permit_i",
}
_COUNTRY_FIELDS = {"IssuingState": "issuing_state", "Nationality": "nationality"}


def _xs_date(text: str | None, element: str) -> dt.date:
    match = _XS_DATE.fullmatch(collapse(text))
    if match is None:
        raise EidProtocolError(f"{element} is not a calendar date")
    try:
        return dt.date.fromisoformat(match.group(1))
    except ValueError:
        raise EidProtocolError(f"{element} is not a calendar date") from None


def _read_date_of_birth(element: Any) -> str:
    """§3.3.19: the raw DateString; DateValue only for a complete date, and equal to it."""
    date_string = element.findtext(eid("DateString")) or ""
    try:
        complete = complete_date(date_string)
    except ValueError:
        raise EidProtocolError("DateOfBirth/DateString is not a possible date") from None
    date_value = element.find(eid("DateValue"))
    if date_value is not None:
        if complete is None:
            raise EidProtocolError("DateOfBirth/DateValue is present for an incomplete date")
        if _xs_date(date_value.text, "DateOfBirth/DateValue") != complete:
            raise EidProtocolError("DateOfBirth/DateValue contradicts DateString")
    return date_string


def _read_place(element: Any) -> Place:
    """§3.3.4 GeneralPlaceType: StructuredPlace, FreetextPlace or NoPlaceInfo."""
    structured = element.find(eid("StructuredPlace"))
    if structured is not None:
        return StructuredPlace(
            street=structured.findtext(eid("Street")),
            city=structured.findtext(eid("City")) or "",
            state=structured.findtext(eid("State")),
            country=(structured.findtext(eid("Country")) or "").strip(),
            zip_code=structured.findtext(eid("ZipCode")),
        )
    freetext = element.find(eid("FreetextPlace"))
    if freetext is not None:
        return FreetextPlace(text=freetext.text or "")
    return NoPlaceInfo(text=element.findtext(eid("NoPlaceInfo")) or "")


def _hex(element: Any) -> str | None:
    return None if element is None else collapse(element.text).upper()


def read_personal_data(element: Any | None) -> PersonalData:
    """The PersonalData element of a schema-valid getResultResponse (``None``: nothing read)."""
    if element is None:
        return PersonalData()
    values: dict[str, Any] = {
        name: element.findtext(eid(tag))
        for tag, name in _TEXT_FIELDS.items()
        if element.find(eid(tag)) is not None
    }
    for tag, name in _COUNTRY_FIELDS.items():
        if (found := element.find(eid(tag))) is not None:
            values[name] = (found.text or "").strip()
    if (found := element.find(eid("DateOfExpiry"))) is not None:
        values["date_of_expiry"] = _xs_date(found.text, "DateOfExpiry")
    if (found := element.find(eid("DateOfBirth"))) is not None:
        values["date_of_birth"] = _read_date_of_birth(found)
    if (found := element.find(eid("PlaceOfBirth"))) is not None:
        values["place_of_birth"] = _read_place(found)
    if (found := element.find(eid("PlaceOfResidence"))) is not None:
        values["place_of_residence"] = _read_place(found)
    for tag in ("CommunityID", "MunicipalityID"):
        if (found := element.find(eid(tag))) is not None:
            values["community_id"] = collapse(found.text)
    if (found := element.find(eid("RestrictedID"))) is not None:
        values["restricted_id"] = _hex(found.find(eid("ID")))
        values["restricted_id2"] = _hex(found.find(eid("ID2")))
    return PersonalData(**values)


# --- writing (stand-in) -----------------------------------------------------------------------


def _write_place(parent: Any, tag: str, place: Place) -> None:
    element = sub(parent, eid(tag))
    if isinstance(place, FreetextPlace):
        sub(element, eid("FreetextPlace"), place.text)
        return
    if isinstance(place, NoPlaceInfo):
        sub(element, eid("NoPlaceInfo"), place.text)
        return
    structured = sub(element, eid("StructuredPlace"))
    if place.street is not None:
        sub(structured, eid("Street"), place.street)
    sub(structured, eid("City"), place.city)
    if place.state is not None:
        sub(structured, eid("State"), place.state)
    sub(structured, eid("Country"), place.country)
    if place.zip_code is not None:
        sub(structured, eid("ZipCode"), place.zip_code)


def _write_one(parent: Any, attribute: Attribute, data: PersonalData) -> None:
    value = getattr(data, ATTRIBUTE_FIELDS[attribute])
    tag = attribute.value
    if attribute is Attribute.DATE_OF_BIRTH:
        element = sub(parent, eid(tag))
        sub(element, eid("DateString"), value)
        complete = complete_date(value)
        if complete is not None:
            sub(element, eid("DateValue"), complete.isoformat())
    elif attribute in (Attribute.PLACE_OF_BIRTH, Attribute.PLACE_OF_RESIDENCE):
        _write_place(parent, tag, value)
    elif attribute is Attribute.RESTRICTED_ID:
        element = sub(parent, eid(tag))
        sub(element, eid("ID"), value)
        if data.restricted_id2 is not None:
            sub(element, eid("ID2"), data.restricted_id2)
    elif isinstance(value, dt.date):
        sub(parent, eid(tag), value.isoformat())
    else:
        sub(parent, eid(tag), value)


def write_personal_data(
    parent: Any, data: PersonalData, released: Callable[[Attribute], bool]
) -> None:
    """Append a PersonalData element with each released data group that ``data`` holds."""
    element = sub(parent, eid("PersonalData"))
    for attribute in Attribute:  # schema order
        if attribute in ATTRIBUTE_FIELDS and released(attribute) and data.has(attribute):
            _write_one(element, attribute, data)
