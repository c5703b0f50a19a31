"""The eService side of the eID-Interface messages (TR-03130-1 v2.4.0 §3.2), pure.

Builders return the bytes of a SOAP 1.1 envelope that already passed our XSD; parsers take
the bytes received, run them through the hardened parser and the XSD, and return frozen
dataclasses. An answer with ``ResultMajor#error`` raises the exception of its ResultMinor
(:mod:`healthid.eid.results`), so every code of §3.4.1 has exactly one outcome.
"""

from __future__ import annotations

from typing import Any

from healthid.eid.errors import EidProtocolError
from healthid.eid.model import (
    Attribute,
    AttributeResponse,
    EidType,
    GetResultOutcome,
    LevelOfAssurance,
    UseIdRequest,
    UseIdResult,
)
from healthid.eid.personal_data import read_personal_data
from healthid.eid.results import collapse, raise_for_result, read_result
from healthid.eid.soap import (
    Operation,
    eid,
    expect_response,
    local_name,
    message_element,
    open_envelope,
    sub,
    to_envelope,
)


def build_use_id_request(request: UseIdRequest) -> bytes:
    """§3.2.1.1 useIDRequest; every attribute is written out (PROHIBITED unless requested)."""
    message = message_element(Operation.USE_ID.request_element)
    operations = sub(message, eid("UseOperations"))
    for attribute in Attribute:  # schema order
        sub(operations, eid(attribute.value), request.requested(attribute).value)
    if request.age_verification is not None:
        age = sub(message, eid("AgeVerificationRequest"))
        sub(age, eid("Age"), str(request.age_verification))
    if request.place_verification is not None:
        place = sub(message, eid("PlaceVerificationRequest"))
        sub(place, eid("CommunityID"), request.place_verification)
    policy = request.policy
    if policy.level_of_assurance is not None:
        sub(message, eid("LevelOfAssuranceRequest"), policy.level_of_assurance.value)
    if policy.eid_types:
        types = sub(message, eid("EIDTypeRequest"))
        for eid_type in EidType:  # schema order
            if eid_type in policy.eid_types:
                sub(types, eid(eid_type.value), policy.eid_types[eid_type].value)
    if request.psk is not None:
        psk = sub(message, eid("PSK"))
        sub(psk, eid("ID"), request.psk.id)
        sub(psk, eid("Key"), request.psk.key)
    return to_envelope(message)


def build_get_result_request(*, session_id: str, request_counter: int) -> bytes:
    """§3.2.2.1 getResultRequest."""
    message = message_element(Operation.GET_RESULT.request_element)
    session = sub(message, eid("Session"))
    sub(session, eid("ID"), session_id)
    sub(message, eid("RequestCounter"), str(request_counter))
    return to_envelope(message)


def _response(data: bytes, operation: Operation) -> Any:
    message = expect_response(open_envelope(data), operation)
    raise_for_result(read_result(message))
    return message


def parse_use_id_response(data: bytes) -> UseIdResult:
    """§3.2.1.2 useIDResponse. On ok, Session and PSK MUST be present."""
    message = _response(data, Operation.USE_ID)
    session_id = message.findtext(f"{eid('Session')}/{eid('ID')}")
    psk = message.find(eid("PSK"))
    if session_id is None:
        raise EidProtocolError("TR-03130-1 §3.2.1.2: useIDResponse without Session")
    if psk is None:
        raise EidProtocolError("TR-03130-1 §3.2.1.2: useIDResponse without PSK")
    address = message.find(eid("eCardServerAddress"))
    ecard_server_address = None if address is None else collapse(address.text)
    # §3.2.1.2: only URIs conforming to RFC 2818 §2.4 (https) SHALL be transmitted.
    if ecard_server_address is not None and not ecard_server_address.startswith("https://"):
        raise EidProtocolError("TR-03130-1 §3.2.1.2: eCardServerAddress is not an https URI")
    return UseIdResult(
        session_id=collapse(session_id),
        psk_id=collapse(psk.findtext(eid("ID"))),
        psk_key=collapse(psk.findtext(eid("Key"))),
        ecard_server_address=ecard_server_address,
    )


def _operations_allowed(element: Any) -> dict[Attribute, AttributeResponse]:
    # §3.3.8: an absent or empty element means PROHIBITED.
    allowed = {}
    for attribute in Attribute:
        found = element.find(eid(attribute.value))
        text = collapse(found.text) if found is not None else ""
        allowed[attribute] = AttributeResponse(text or AttributeResponse.PROHIBITED)
    return allowed


def parse_get_result_response(data: bytes) -> GetResultOutcome:
    """§3.2.2.2 getResultResponse. ``noResultYet`` raises :class:`NoResultYet`."""
    message = _response(data, Operation.GET_RESULT)
    operations = message.find(eid("OperationsAllowedByUser"))
    if operations is None:
        raise EidProtocolError("TR-03130-1 §3.2.2.2: OperationsAllowedByUser is missing")
    loa = message.find(eid("LevelOfAssuranceResult"))
    used = message.find(eid("EIDTypeResponse"))
    return GetResultOutcome(
        personal_data=read_personal_data(message.find(eid("PersonalData"))),
        operations_allowed=_operations_allowed(operations),
        level_of_assurance=None if loa is None else LevelOfAssurance(collapse(loa.text)),
        eid_type=None if used is None else EidType(local_name(used[0])),
    )
