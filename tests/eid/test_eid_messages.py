"""Messages of the eID-Interface: ResultMinor mapping, PersonalData, dates, redaction."""

from __future__ import annotations

import datetime as dt

import pytest
from eid_testlib import ERIKA, KOELN, RESTRICTED_ID, SESSION_ID, envelope

from healthid.eid import errors
from healthid.eid.messages import parse_get_result_response, parse_use_id_response
from healthid.eid.model import (
    Attribute,
    AttributeResponse,
    EidType,
    FreetextPlace,
    LevelOfAssurance,
    NoPlaceInfo,
    PersonalData,
    PreSharedKey,
    StructuredPlace,
    UseIdResult,
    partial_iso_date,
)
from healthid.eid.results import MINOR_ERRORS, RESULT_MAJOR_OK, RESULT_MINOR_PREFIX, ResultMinor
from healthid.eid.server_messages import (
    build_error_response,
    build_get_result_response,
    build_use_id_response,
)
from healthid.eid.session import EidSession
from healthid.eid.soap import Operation

ALL_RELEASED = {a: AttributeResponse.ALLOWED for a in Attribute}

# --- every ResultMinor (TR-03130-1 §3.4.1) ------------------------------------------------------

EXPECTED = {
    "common#internalError": errors.InternalError,
    "common#schemaViolation": errors.SchemaViolation,
    "useID#invalidPSK": errors.InvalidPsk,
    "useID#tooManyOpenSessions": errors.TooManyOpenSessions,
    "useID#missingArgument": errors.MissingArgument,
    "useID#missingTerminalRights": errors.MissingTerminalRights,
    "getResult#noResultYet": errors.NoResultYet,
    "getResult#invalidSession": errors.InvalidSession,
    "getResult#invalidCounter": errors.InvalidCounter,
    "getResult#deniedDocument": errors.DeniedDocument,
    "getResult#invalidDocument": errors.InvalidDocument,
}


def test_every_result_minor_of_the_spec_has_its_own_exception() -> None:
    mapped = {minor.removeprefix(RESULT_MINOR_PREFIX): cls for minor, cls in MINOR_ERRORS.items()}
    assert {k: v for k, v in mapped.items() if k in EXPECTED} == EXPECTED
    assert len(set(MINOR_ERRORS.values())) == len(MINOR_ERRORS)


@pytest.mark.parametrize("operation", list(Operation))
@pytest.mark.parametrize("code", sorted(EXPECTED))
def test_result_minor_maps_to_its_exception(operation: Operation, code: str) -> None:
    minor = RESULT_MINOR_PREFIX + code
    parse = parse_use_id_response if operation is Operation.USE_ID else parse_get_result_response
    with pytest.raises(EXPECTED[code]) as caught:
        parse(build_error_response(operation, minor))
    assert caught.value.minor == minor


def test_cancellation_by_user_maps_to_cancelled_by_user() -> None:
    data = build_error_response(Operation.GET_RESULT, ResultMinor.CANCELLATION_BY_USER)
    with pytest.raises(errors.CancelledByUser):
        parse_get_result_response(data)


@pytest.mark.parametrize(
    ("major", "minor"),
    [
        ("http://www.bsi.bund.de/ecard/api/1.1/resultmajor#error", None),
        ("http://www.bsi.bund.de/ecard/api/1.1/resultmajor#error", RESULT_MINOR_PREFIX + "x#y"),
        ("http://www.bsi.bund.de/ecard/api/1.1/resultmajor#warning", None),
        ("urn:something:else", RESULT_MINOR_PREFIX + "getResult#noResultYet"),
    ],
)
def test_unknown_or_missing_result_codes_raise_the_generic_error(
    major: str, minor: str | None
) -> None:
    data = build_error_response(Operation.GET_RESULT, minor, major=major)
    with pytest.raises(errors.UnknownResultError):
        parse_get_result_response(data)


def test_result_message_of_the_server_never_reaches_the_exception() -> None:
    body = (
        "<eid:getResultResponse><dss:Result>"
        "<dss:ResultMajor>http://www.bsi.bund.de/ecard/api/1.1/resultmajor#error</dss:ResultMajor>"
        f"<dss:ResultMinor>{RESULT_MINOR_PREFIX}getResult#invalidDocument</dss:ResultMinor>"
        '<dss:ResultMessage xml:lang="de">Dokument von ERIKA MUSTERMANN gesperrt'
        "</dss:ResultMessage>"
        "</dss:Result></eid:getResultResponse>"
    )
    with pytest.raises(errors.InvalidDocument) as caught:
        parse_get_result_response(envelope(body))
    assert "MUSTERMANN" not in str(caught.value)
    assert "MUSTERMANN" not in repr(caught.value)


# --- useIDResponse -------------------------------------------------------------------------------


def test_use_id_response_with_whitespace_as_in_the_tr_example() -> None:
    body = (
        "<eid:useIDResponse><eid:Session><eid:ID>\n   1234567890abcdef1234567890abcdef\n"
        "</eid:ID></eid:Session><eid:PSK><eid:ID> 0987654321abcdef1234567890abcdef </eid:ID>"
        "<eid:Key>fedcba0987654321fedcba0987654321</eid:Key></eid:PSK>"
        f"<dss:Result><dss:ResultMajor>\n {RESULT_MAJOR_OK}\n</dss:ResultMajor></dss:Result>"
        "</eid:useIDResponse>"
    )
    result = parse_use_id_response(envelope(body))
    assert result.session_id == SESSION_ID
    assert result.psk == PreSharedKey(
        id="0987654321abcdef1234567890abcdef", key="fedcba0987654321fedcba0987654321"
    )


@pytest.mark.parametrize("missing", ["Session", "PSK"])
def test_use_id_ok_without_session_or_psk_is_refused(missing: str) -> None:
    parts = {
        "Session": f"<eid:Session><eid:ID>{SESSION_ID}</eid:ID></eid:Session>",
        "PSK": f"<eid:PSK><eid:ID>{SESSION_ID}</eid:ID><eid:Key>{'ab' * 32}</eid:Key></eid:PSK>",
    }
    parts.pop(missing)
    body = (
        f"<eid:useIDResponse>{''.join(parts.values())}"
        f"<dss:Result><dss:ResultMajor>{RESULT_MAJOR_OK}</dss:ResultMajor></dss:Result>"
        "</eid:useIDResponse>"
    )
    with pytest.raises(errors.EidProtocolError, match=missing):
        parse_use_id_response(envelope(body))


def test_use_id_rejects_a_plain_http_ecard_server_address() -> None:
    psk = PreSharedKey.generate()
    data = build_use_id_response(
        session_id=SESSION_ID, psk=psk, ecard_server_address="http://ecard.example/paos"
    )
    with pytest.raises(errors.EidProtocolError, match="eCardServerAddress"):
        parse_use_id_response(data)


def test_use_id_response_keeps_the_https_ecard_server_address() -> None:
    psk = PreSharedKey.generate()
    data = build_use_id_response(
        session_id=SESSION_ID, psk=psk, ecard_server_address="https://ecard.example/paos"
    )
    assert parse_use_id_response(data).ecard_server_address == "https://ecard.example/paos"


def test_use_id_parser_refuses_a_get_result_response() -> None:
    data = build_error_response(Operation.GET_RESULT, ResultMinor.NO_RESULT_YET)
    with pytest.raises(errors.EidProtocolError, match="useIDResponse"):
        parse_use_id_response(data)


# --- getResultResponse / PersonalData -------------------------------------------------------------


def test_get_result_response_round_trips_personal_data() -> None:
    data = build_get_result_response(
        personal_data=ERIKA,
        operations=ALL_RELEASED,
        level_of_assurance=LevelOfAssurance.HOCH,
        eid_type=EidType.CARD_CERTIFIED,
    )
    outcome = parse_get_result_response(data)
    assert outcome.personal_data == ERIKA
    assert outcome.personal_data.date_of_birth_iso == "1964-08-12"
    assert outcome.level_of_assurance is LevelOfAssurance.HOCH
    assert outcome.eid_type is EidType.CARD_CERTIFIED


def test_get_result_response_without_operations_allowed_by_user_is_refused() -> None:
    body = (
        f"<eid:getResultResponse><eid:PersonalData><eid:GivenNames>X</eid:GivenNames>"
        f"</eid:PersonalData><dss:Result><dss:ResultMajor>{RESULT_MAJOR_OK}</dss:ResultMajor>"
        "</dss:Result></eid:getResultResponse>"
    )
    with pytest.raises(errors.EidProtocolError, match="OperationsAllowedByUser"):
        parse_get_result_response(envelope(body))


def _personal_data_response(personal_data: str, operations: str = "") -> bytes:
    return envelope(
        f"<eid:getResultResponse><eid:PersonalData>{personal_data}</eid:PersonalData>"
        f"<eid:OperationsAllowedByUser>{operations}</eid:OperationsAllowedByUser>"
        f"<dss:Result><dss:ResultMajor>{RESULT_MAJOR_OK}</dss:ResultMajor></dss:Result>"
        "</eid:getResultResponse>"
    )


def test_every_modelled_data_group_is_read() -> None:
    xml = (
        "<eid:DocumentType>ID</eid:DocumentType><eid:IssuingState>D</eid:IssuingState>"
        "<eid:DateOfExpiry>2029-10-31Z</eid:DateOfExpiry>"
        "<eid:GivenNames>ERIKA</eid:GivenNames><eid:FamilyNames>MUSTERMANN</eid:FamilyNames>"
        "<eid:ArtisticName></eid:ArtisticName><eid:AcademicTitle>DR.</eid:AcademicTitle>"
        "<eid:DateOfBirth><eid:DateString>19640812</eid:DateString>"
        "<eid:DateValue>1964-08-12</eid:DateValue></eid:DateOfBirth>"
        "<eid:PlaceOfBirth><eid:FreetextPlace>BERLIN</eid:FreetextPlace></eid:PlaceOfBirth>"
        "<eid:Nationality>D</eid:Nationality><eid:Sex>F</eid:Sex>"
        "<eid:BirthName>GABLER</eid:BirthName>"
        "<eid:PlaceOfResidence><eid:StructuredPlace><eid:Street>HEIDESTRASSE 17</eid:Street>"
        "<eid:City>KÖLN</eid:City><eid:Country>D</eid:Country><eid:ZipCode>51147</eid:ZipCode>"
        "</eid:StructuredPlace></eid:PlaceOfResidence>"
        "<eid:MunicipalityID>02760505315000</eid:MunicipalityID>"
        "<eid:ResidencePermitI>X</eid:ResidencePermitI>"
        f"<eid:RestrictedID><eid:ID>\n {RESTRICTED_ID.lower()}\n</eid:ID>"
        "<eid:ID2>5c6fe01a</eid:ID2></eid:RestrictedID>"
    )
    data = parse_get_result_response(_personal_data_response(xml)).personal_data
    assert data == PersonalData(
        document_type="ID",
        issuing_state="D",
        date_of_expiry=dt.date(2029, 10, 31),
        given_names="ERIKA",
        family_names="MUSTERMANN",
        artistic_name="",
        academic_title="DR.",
        date_of_birth="19640812",
        place_of_birth=FreetextPlace(text="BERLIN"),
        nationality="D",
        birth_name="GABLER",
        place_of_residence=KOELN,
        community_id="02760505315000",
        residence_permit_i="X",
        restricted_id=RESTRICTED_ID,
        restricted_id2="5C6FE01A",
    )


@pytest.mark.parametrize(
    ("xml", "expected"),
    [
        (
            "<eid:StructuredPlace><eid:City>KÖLN</eid:City><eid:Country>D</eid:Country>"
            "</eid:StructuredPlace>",
            StructuredPlace(city="KÖLN", country="D"),
        ),
        ("<eid:FreetextPlace>AM MARKT 1</eid:FreetextPlace>", FreetextPlace(text="AM MARKT 1")),
        (
            "<eid:NoPlaceInfo>keine Hauptwohnung</eid:NoPlaceInfo>",
            NoPlaceInfo(text="keine Hauptwohnung"),
        ),
    ],
    ids=["structured", "freetext", "no-place-info"],
)
def test_place_of_residence_variants(xml: str, expected: object) -> None:
    response = _personal_data_response(f"<eid:PlaceOfResidence>{xml}</eid:PlaceOfResidence>")
    assert parse_get_result_response(response).personal_data.place_of_residence == expected


@pytest.mark.parametrize(
    ("date_string", "iso"),
    [
        ("19640812", "1964-08-12"),
        ("196408  ", "1964-08"),
        ("19640800", "1964-08"),
        ("1964    ", "1964"),
        ("1964  00", "1964"),
        ("19640000", "1964"),
        ("        ", None),
        ("    0812", None),
    ],
)
def test_partial_birth_dates(date_string: str, iso: str | None) -> None:
    assert partial_iso_date(date_string) == iso
    response = _personal_data_response(
        f"<eid:DateOfBirth><eid:DateString>{date_string}</eid:DateString></eid:DateOfBirth>"
    )
    data = parse_get_result_response(response).personal_data
    assert data.date_of_birth == date_string  # the raw DateString is kept, spaces included
    assert data.date_of_birth_iso == iso


@pytest.mark.parametrize(
    "date_string", ["19 40812", "196 0812", "19641312", "19640230", "1964-08-"]
)
def test_impossible_date_strings_are_refused(date_string: str) -> None:
    with pytest.raises(ValueError):
        partial_iso_date(date_string)


@pytest.mark.parametrize("date_string", ["19 40812", "19641312", "19640230"])
def test_get_result_refuses_an_impossible_date_of_birth_without_quoting_it(
    date_string: str,
) -> None:
    response = _personal_data_response(
        f"<eid:DateOfBirth><eid:DateString>{date_string}</eid:DateString></eid:DateOfBirth>"
    )
    with pytest.raises(errors.EidProtocolError) as caught:
        parse_get_result_response(response)
    assert date_string not in str(caught.value)


@pytest.mark.parametrize(
    ("date_string", "date_value"),
    [("19640812", "1964-08-13"), ("1964    ", "1964-01-01")],
    ids=["contradicts", "incomplete-date"],
)
def test_get_result_refuses_an_inconsistent_date_value(date_string: str, date_value: str) -> None:
    response = _personal_data_response(
        f"<eid:DateOfBirth><eid:DateString>{date_string}</eid:DateString>"
        f"<eid:DateValue>{date_value}</eid:DateValue></eid:DateOfBirth>"
    )
    with pytest.raises(errors.EidProtocolError, match="DateValue") as caught:
        parse_get_result_response(response)
    assert date_value not in str(caught.value)


def test_operations_allowed_by_user_defaults_to_prohibited() -> None:
    response = _personal_data_response(
        "",
        "<eid:GivenNames>ALLOWED</eid:GivenNames><eid:BirthName>NOTONCHIP</eid:BirthName>"
        "<eid:CommunityID/>",
    )
    allowed = parse_get_result_response(response).operations_allowed
    assert allowed[Attribute.GIVEN_NAMES] is AttributeResponse.ALLOWED
    assert allowed[Attribute.BIRTH_NAME] is AttributeResponse.NOTONCHIP
    assert allowed[Attribute.COMMUNITY_ID] is AttributeResponse.PROHIBITED
    assert allowed[Attribute.RESTRICTED_ID] is AttributeResponse.PROHIBITED


# --- nothing personal or secret in repr -----------------------------------------------------------


def test_personal_data_repr_names_fields_not_values() -> None:
    text = repr(ERIKA) + repr(KOELN) + repr(FreetextPlace(text="AM MARKT 1"))
    for value in ("ERIKA", "MUSTERMANN", "GABLER", "19640812", "KÖLN", "HEIDESTRASSE", "MARKT"):
        assert value not in text
    assert RESTRICTED_ID not in text
    assert "given_names" in text


def test_psk_key_never_appears_in_repr() -> None:
    psk = PreSharedKey.generate()
    result = UseIdResult(session_id=SESSION_ID, psk_id=psk.id, psk_key=psk.key)
    session = EidSession(session_id=SESSION_ID, psk=psk, ecard_server_address=None, request=None)  # type: ignore[arg-type]
    for text in (repr(psk), repr(result), repr(session)):
        assert psk.key not in text


def test_psk_comparison_treats_hex_case_alike_and_rejects_other_keys() -> None:
    psk = PreSharedKey(id="ab" * 16, key="cd" * 32)
    assert psk.matches(PreSharedKey(id="AB" * 16, key="CD" * 32))
    assert not psk.matches(PreSharedKey(id="ab" * 16, key="ce" * 32))
    assert not psk.matches(PreSharedKey(id="ac" * 16, key="cd" * 32))


@pytest.mark.parametrize("value", ["xyz", "abc", ""])
def test_psk_must_be_hex(value: str) -> None:
    with pytest.raises(ValueError):
        PreSharedKey(id=value, key="ab")
