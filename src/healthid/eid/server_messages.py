"""The eID-Server side of the eID-Interface messages (TR-03130-1 v2.4.0 §3.2), pure.

Used by the local stand-in (:mod:`healthid.eid.standin`) and by tests that play a misbehaving
eID-Server. Parsers take a schema-valid request element (see :func:`soap.open_envelope`);
builders return a schema-valid SOAP envelope.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from healthid.eid.model import (
    AssurancePolicy,
    Attribute,
    AttributeRequest,
    AttributeResponse,
    EidType,
    EidTypeSelection,
    LevelOfAssurance,
    PersonalData,
    PreSharedKey,
    UseIdRequest,
)
from healthid.eid.personal_data import write_personal_data
from healthid.eid.results import RESULT_MAJOR_ERROR, RESULT_MAJOR_OK, collapse
from healthid.eid.soap import XML_NS, Operation, dss, eid, message_element, sub, to_envelope


def parse_use_id_request(message: Any) -> UseIdRequest:
    """§3.2.1.1 useIDRequest; absent or empty attribute elements mean PROHIBITED (§3.3.7)."""
    operations = message.find(eid("UseOperations"))
    attributes: dict[Attribute, AttributeRequest] = {}
    for attribute in Attribute:
        found = operations.find(eid(attribute.value))
        text = collapse(found.text) if found is not None else ""
        if text and AttributeRequest(text) is not AttributeRequest.PROHIBITED:
            attributes[attribute] = AttributeRequest(text)
    age = message.findtext(f"{eid('AgeVerificationRequest')}/{eid('Age')}")
    place = message.findtext(f"{eid('PlaceVerificationRequest')}/{eid('CommunityID')}")
    loa = message.findtext(eid("LevelOfAssuranceRequest"))
    eid_types: dict[EidType, EidTypeSelection] = {}
    requested_types = message.find(eid("EIDTypeRequest"))
    for eid_type in EidType:
        found = None if requested_types is None else requested_types.find(eid(eid_type.value))
        if found is not None:
            eid_types[eid_type] = EidTypeSelection(collapse(found.text))
    psk = message.find(eid("PSK"))
    return UseIdRequest(
        attributes=attributes,
        policy=AssurancePolicy(
            level_of_assurance=None if loa is None else LevelOfAssurance(collapse(loa)),
            eid_types=eid_types,
        ),
        psk=None
        if psk is None
        else PreSharedKey(
            id=collapse(psk.findtext(eid("ID"))), key=collapse(psk.findtext(eid("Key")))
        ),
        age_verification=None if age is None else int(collapse(age)),
        place_verification=None if place is None else collapse(place),
    )


def parse_get_result_request(message: Any) -> tuple[str, int]:
    """§3.2.2.1 getResultRequest: (session ID, RequestCounter)."""
    session_id = collapse(message.findtext(f"{eid('Session')}/{eid('ID')}"))
    return session_id, int(collapse(message.findtext(eid("RequestCounter"))))


def _result(parent: Any, major: str, minor: str | None = None, text: str | None = None) -> None:
    result = sub(parent, dss("Result"))
    sub(result, dss("ResultMajor"), major)
    if minor is not None:
        sub(result, dss("ResultMinor"), minor)
    if text is not None:
        sub(result, dss("ResultMessage"), text).set(f"{{{XML_NS}}}lang", "en")


def build_use_id_response(
    *, session_id: str, psk: PreSharedKey, ecard_server_address: str | None = None
) -> bytes:
    """§3.2.1.2 useIDResponse with ResultMajor ok."""
    message = message_element(Operation.USE_ID.response_element)
    sub(sub(message, eid("Session")), eid("ID"), session_id)
    if ecard_server_address is not None:
        sub(message, eid("eCardServerAddress"), ecard_server_address)
    psk_element = sub(message, eid("PSK"))
    sub(psk_element, eid("ID"), psk.id)
    sub(psk_element, eid("Key"), psk.key)
    _result(message, RESULT_MAJOR_OK)
    return to_envelope(message)


def build_get_result_response(
    *,
    personal_data: PersonalData,
    operations: Mapping[Attribute, AttributeResponse],
    level_of_assurance: LevelOfAssurance | None = None,
    eid_type: EidType | None = None,
) -> bytes:
    """§3.2.2.2 getResultResponse with ResultMajor ok; only ALLOWED data groups are written."""
    message = message_element(Operation.GET_RESULT.response_element)
    write_personal_data(
        message,
        personal_data,
        lambda attribute: operations.get(attribute) is AttributeResponse.ALLOWED,
    )
    allowed = sub(message, eid("OperationsAllowedByUser"))
    for attribute in Attribute:  # schema order
        response = operations.get(attribute, AttributeResponse.PROHIBITED)
        sub(allowed, eid(attribute.value), response.value)
    if level_of_assurance is not None:
        sub(message, eid("LevelOfAssuranceResult"), level_of_assurance.value)
    if eid_type is not None:
        sub(sub(message, eid("EIDTypeResponse")), eid(eid_type.value), "USED")
    _result(message, RESULT_MAJOR_OK)
    return to_envelope(message)


def build_error_response(
    operation: Operation, minor: str | None, *, major: str = RESULT_MAJOR_ERROR
) -> bytes:
    """The response of ``operation`` carrying only a Result (§3.4), e.g. noResultYet."""
    message = message_element(operation.response_element)
    _result(message, major, minor, "see ResultMinor" if minor is not None else None)
    return to_envelope(message)
