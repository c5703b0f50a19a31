"""The local eID-Server stand-in, spoken to with raw SOAP (TR-03130-1 §3.2, §3.4.1)."""

from __future__ import annotations

import pytest
from eid_testlib import (
    IDENTITIES,
    SESSION_ID,
    Standin,
    envelope,
    get_result_request,
    make_standin,
    use_id_request,
)
from test_eid_xml import BILLION_LAUGHS, EXTERNAL_ENTITY

from healthid.eid.model import Attribute
from healthid.eid.results import ResultMinor
from healthid.eid.soap import dss, eid, is_fault, open_envelope
from healthid.eid.standin import MAX_REQUEST_BYTES, StandinRefusedError, create_standin_app
from healthid.eid.standin_core import DEFAULT_SESSION_TTL_SECONDS
from healthid.eid.standin_identities import DEMO_IDENTITIES

DSS_MINOR = f"{dss('Result')}/{dss('ResultMinor')}"


def minor_of(content: bytes) -> ResultMinor | None:
    text = open_envelope(content).findtext(DSS_MINOR)
    return None if text is None else ResultMinor(text.strip())


async def open_session(standin: Standin, extra: str = "") -> tuple[str, str]:
    answer = await standin.post_soap(use_id_request(extra=extra), "useID")
    message = open_envelope(answer.content)
    assert minor_of(answer.content) is None
    return (
        message.findtext(f"{eid('Session')}/{eid('ID')}"),
        message.findtext(f"{eid('PSK')}/{eid('ID')}"),
    )


async def get_result(standin: Standin, session_id: str, counter: int | str) -> ResultMinor | None:
    answer = await standin.post_soap(get_result_request(session_id, counter), "getResult")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/xml")
    return minor_of(answer.content)


def test_standin_refuses_production_mode() -> None:
    with pytest.raises(StandinRefusedError, match="development"):
        create_standin_app(IDENTITIES, enabled_in_production=True)


def test_demo_identities_are_valid() -> None:
    assert {"erika", "smart-eid-endorsed"} <= set(DEMO_IDENTITIES)
    for identity in DEMO_IDENTITIES.values():
        assert identity.personal_data.restricted_id is not None


# --- schemaViolation for everything that is not a valid request -----------------------------------

NOT_VALID = {
    "non-xml": b"this is not XML",
    "unclosed": envelope("<eid:useIDRequest>"),
    "billion-laughs": BILLION_LAUGHS,
    "external-entity": EXTERNAL_ENTITY,
    "oversized": use_id_request().replace(
        b"<soapenv:Body>", b"<soapenv:Body>" + b" " * MAX_REQUEST_BYTES
    ),
    "wrong-eid-namespace": envelope(
        "<eid:useIDRequest><eid:UseOperations/></eid:useIDRequest>",
        eid_ns="http://bsi.bund.de/eID/v9/",
    ),
    "soap12": envelope(
        "<eid:useIDRequest><eid:UseOperations/></eid:useIDRequest>",
        soap_ns="http://www.w3.org/2003/05/soap-envelope",
    ),
    "unknown-attribute-value": use_id_request("<eid:GivenNames>MAYBE</eid:GivenNames>"),
    "elements-out-of-order": use_id_request(
        "<eid:RestrictedID>REQUIRED</eid:RestrictedID><eid:GivenNames>REQUIRED</eid:GivenNames>"
    ),
    "two-messages": envelope("<eid:useIDRequest><eid:UseOperations/></eid:useIDRequest>" * 2),
    "a-response-as-request": envelope(
        "<eid:useIDResponse><dss:Result><dss:ResultMajor>x</dss:ResultMajor></dss:Result>"
        "</eid:useIDResponse>"
    ),
    "short-session-id": get_result_request("abcd", 1),
    "counter-zero": get_result_request(SESSION_ID, 0),
    "counter-not-a-number": get_result_request(SESSION_ID, "one"),
}


@pytest.mark.parametrize("action", ["useID", "getResult"])
@pytest.mark.parametrize("body", list(NOT_VALID.values()), ids=list(NOT_VALID))
async def test_invalid_requests_get_schema_violation(
    standin: Standin, body: bytes, action: str
) -> None:
    answer = await standin.post_soap(body, action)
    assert answer.status_code == 200
    message = open_envelope(answer.content)
    assert message.tag == eid(f"{action}Response")
    assert minor_of(answer.content) is ResultMinor.SCHEMA_VIOLATION


async def test_soap_action_must_match_the_body(standin: Standin) -> None:
    answer = await standin.post_soap(use_id_request(), "getResult")
    assert minor_of(answer.content) is ResultMinor.SCHEMA_VIOLATION
    assert open_envelope(answer.content).tag == eid("getResultResponse")


async def test_without_soap_action_the_body_decides(standin: Standin) -> None:
    answer = await standin.post_soap(use_id_request())
    assert open_envelope(answer.content).tag == eid("useIDResponse")


async def test_unknown_operation_and_garbage_get_a_soap_fault(standin: Standin) -> None:
    answer = await standin.post_soap(b"garbage")
    assert answer.status_code == 500
    assert is_fault(open_envelope(answer.content))


async def test_only_post_is_served(standin: Standin) -> None:
    import httpx

    async with httpx.AsyncClient(transport=standin.transport, base_url="http://s") as h:
        assert (await h.get("/eID")).status_code == 405


# --- getResult state machine ----------------------------------------------------------------------


async def test_no_result_yet_does_not_consume_the_session(standin: Standin) -> None:
    session_id, psk_id = await open_session(standin)
    for counter in (1, 2, 3):
        assert await get_result(standin, session_id, counter) is ResultMinor.NO_RESULT_YET
    assert (await standin.complete(psk_id, {"identity": "erika"})).status_code == 200
    assert await get_result(standin, session_id, 4) is None
    assert await get_result(standin, session_id, 5) is ResultMinor.INVALID_SESSION


@pytest.mark.parametrize("counters", [(2,), (1, 1), (1, 3), (1, 2, 2), (1, 2, 1)])
async def test_counter_must_increase_by_one_from_one(
    standin: Standin, counters: tuple[int, ...]
) -> None:
    session_id, _ = await open_session(standin)
    answers = [await get_result(standin, session_id, c) for c in counters]
    assert answers[:-1] == [ResultMinor.NO_RESULT_YET] * (len(counters) - 1)
    assert answers[-1] is ResultMinor.INVALID_COUNTER
    # §3.2.2.2: any answer other than noResultYet invalidates the session.
    assert await get_result(standin, session_id, counters[-1] + 1) is ResultMinor.INVALID_SESSION


async def test_unknown_session_is_invalid(standin: Standin) -> None:
    assert await get_result(standin, SESSION_ID, 1) is ResultMinor.INVALID_SESSION


async def test_sessions_expire(standin: Standin) -> None:
    session_id, psk_id = await open_session(standin)
    standin.clock.now += DEFAULT_SESSION_TTL_SECONDS
    assert (await standin.complete(psk_id, {"identity": "erika"})).status_code == 404
    assert await get_result(standin, session_id, 1) is ResultMinor.INVALID_SESSION


async def test_expired_sessions_free_their_slot() -> None:
    small = make_standin(max_open_sessions=1)
    await open_session(small)
    answer = await small.post_soap(use_id_request(), "useID")
    assert minor_of(answer.content) is ResultMinor.TOO_MANY_OPEN_SESSIONS
    small.clock.now += DEFAULT_SESSION_TTL_SECONDS
    await open_session(small)


# --- useID errors ---------------------------------------------------------------------------------


async def test_age_verification_without_its_argument_is_missing_argument(standin: Standin) -> None:
    body = use_id_request(
        "<eid:RestrictedID>REQUIRED</eid:RestrictedID><eid:AgeVerification>REQUIRED</eid:AgeVerification>"
    )
    answer = await standin.post_soap(body, "useID")
    assert minor_of(answer.content) is ResultMinor.MISSING_ARGUMENT


async def test_place_verification_without_its_argument_is_missing_argument(
    standin: Standin,
) -> None:
    body = use_id_request("<eid:PlaceVerification>ALLOWED</eid:PlaceVerification>")
    answer = await standin.post_soap(body, "useID")
    assert minor_of(answer.content) is ResultMinor.MISSING_ARGUMENT


async def test_rights_beyond_the_terminal_certificate_are_missing_terminal_rights(
    standin: Standin,
) -> None:
    body = use_id_request(
        "<eid:AgeVerification>REQUIRED</eid:AgeVerification>",
        "<eid:AgeVerificationRequest><eid:Age>18</eid:Age></eid:AgeVerificationRequest>",
    )
    assert minor_of((await standin.post_soap(body, "useID")).content) is (
        ResultMinor.MISSING_TERMINAL_RIGHTS
    )
    narrow = make_standin(terminal_rights=frozenset({Attribute.RESTRICTED_ID}))
    body = use_id_request("<eid:GivenNames>ALLOWED</eid:GivenNames>")
    assert minor_of((await narrow.post_soap(body, "useID")).content) is (
        ResultMinor.MISSING_TERMINAL_RIGHTS
    )


async def test_short_or_reused_psk_is_invalid_psk(standin: Standin) -> None:
    short = f"<eid:PSK><eid:ID>{SESSION_ID}</eid:ID><eid:Key>{'ab' * 16}</eid:Key></eid:PSK>"
    answer = await standin.post_soap(use_id_request(extra=short), "useID")
    assert minor_of(answer.content) is ResultMinor.INVALID_PSK
    good = f"<eid:PSK><eid:ID>{SESSION_ID}</eid:ID><eid:Key>{'ab' * 32}</eid:Key></eid:PSK>"
    _, psk_id = await open_session(standin, good)
    assert psk_id == SESSION_ID
    same_id = good.replace(SESSION_ID, SESSION_ID.upper())
    answer = await standin.post_soap(use_id_request(extra=same_id), "useID")
    assert minor_of(answer.content) is ResultMinor.INVALID_PSK


# --- development hook -----------------------------------------------------------------------------


async def test_hook_for_an_unknown_session_is_404(standin: Standin) -> None:
    assert (await standin.complete(SESSION_ID, {"identity": "erika"})).status_code == 404


async def test_hook_completes_a_session_once(standin: Standin) -> None:
    _, psk_id = await open_session(standin)
    assert (await standin.complete(psk_id, {"identity": "erika"})).status_code == 200
    assert (await standin.complete(psk_id, {"error": "cancelled"})).status_code == 409


@pytest.mark.parametrize(
    "payload",
    [
        {"identity": "nobody"},
        {"error": "exploded"},
        {"identity": "erika", "error": "cancelled"},
        {},
        ["erika"],
        "erika",
        {"identity": 1},
    ],
)
async def test_hook_rejects_bad_payloads(standin: Standin, payload: object) -> None:
    _, psk_id = await open_session(standin)
    answer = await standin.complete(psk_id, payload)
    assert answer.status_code == 400
    assert "erika" not in answer.text.lower() or payload == {"identity": "nobody"}


async def test_hook_rejects_non_json_and_oversized_bodies(standin: Standin) -> None:
    import httpx

    _, psk_id = await open_session(standin)
    async with httpx.AsyncClient(transport=standin.transport, base_url="http://s") as h:
        url = f"/standin/sessions/{psk_id}/complete"
        assert (await h.post(url, content=b"{not json")).status_code == 400
        assert (await h.post(url, content=b"\xff\xfe")).status_code == 400
        big = b'{"identity": "' + b"x" * 10_000 + b'"}'
        assert (await h.post(url, content=big)).status_code == 413


async def test_every_answer_of_the_standin_is_schema_valid(standin: Standin) -> None:
    session_id, psk_id = await open_session(standin)
    await get_result(standin, session_id, 1)
    await standin.complete(psk_id, {"identity": "erika"})
    await get_result(standin, session_id, 2)
    for request in standin.transport.requests:
        if request.url.path == "/eID":
            open_envelope(request.content)  # raises if not schema-valid
