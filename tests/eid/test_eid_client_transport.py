"""EidClient against misbehaving eID-Servers (httpx.MockTransport) and its configuration."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest
from eid_testlib import (
    ERIKA,
    SESSION_ID,
    RecordingSleep,
    client_config,
    envelope,
    mock_transport,
)
from test_eid_xml import BILLION_LAUGHS, EXTERNAL_ENTITY

from healthid.eid import errors
from healthid.eid.client import EidClient
from healthid.eid.messages import build_get_result_request
from healthid.eid.model import (
    AssurancePolicy,
    Attribute,
    AttributeRequest,
    AttributeResponse,
    EidType,
    LevelOfAssurance,
    PreSharedKey,
)
from healthid.eid.results import ResultMinor
from healthid.eid.server_messages import (
    build_error_response,
    build_get_result_response,
    build_use_id_response,
)
from healthid.eid.soap import Operation, fault_envelope, open_envelope
from healthid.eid.transport import MAX_RESPONSE_BYTES, TransportConfig, ssl_context
from tls_testlib import self_signed

PSK = PreSharedKey.generate()
USE_ID_OK = build_use_id_response(session_id=SESSION_ID, psk=PSK)
NO_RESULT_YET = build_error_response(Operation.GET_RESULT, ResultMinor.NO_RESULT_YET)
RELEASED = {
    a: AttributeResponse.ALLOWED
    for a in (
        Attribute.GIVEN_NAMES,
        Attribute.FAMILY_NAMES,
        Attribute.BIRTH_NAME,
        Attribute.DATE_OF_BIRTH,
        Attribute.PLACE_OF_RESIDENCE,
        Attribute.RESTRICTED_ID,
    )
}


def ok_result(**overrides: object) -> bytes:
    values: dict[str, object] = {
        "personal_data": ERIKA,
        "operations": RELEASED,
        "level_of_assurance": LevelOfAssurance.HOCH,
        "eid_type": EidType.CARD_CERTIFIED,
    }
    values.update(overrides)
    return build_get_result_response(**values)  # type: ignore[arg-type]


async def session_against(*answers: bytes | httpx.Response, **config: object):  # type: ignore[no-untyped-def]
    """A client whose server first answers useID ok, then ``answers`` to getResult."""
    transport, sent = mock_transport(USE_ID_OK, *answers)
    sleep = RecordingSleep()
    client = EidClient(client_config(**config), http_transport=transport, sleep=sleep)
    _, session = await client.use_id()
    return client, session, sent, sleep


# --- polling -----------------------------------------------------------------------------------


async def test_polling_counts_from_one_and_sleeps_between_attempts() -> None:
    client, session, sent, sleep = await session_against(NO_RESULT_YET, NO_RESULT_YET, ok_result())
    outcome = await client.get_result(session)
    await client.aclose()
    assert outcome.personal_data.restricted_id == ERIKA.restricted_id
    counters = [
        open_envelope(body).findtext("{http://bsi.bund.de/eID/}RequestCounter") for body in sent[1:]
    ]
    assert counters == ["1", "2", "3"]
    assert sleep.delays == [0.25, 0.25]


async def test_polling_is_bounded_and_hands_back_the_advanced_state() -> None:
    client, session, sent, sleep = await session_against(*[NO_RESULT_YET] * 3, poll_attempts=3)
    with pytest.raises(errors.ResultStillPending) as pending:
        await client.get_result(session)
    await client.aclose()
    assert len(sent) == 1 + 3
    assert pending.value.session.last_counter == 3
    assert pending.value.session.session_id == session.session_id
    assert len(sleep.delays) == 2


async def test_no_other_error_hands_back_a_session() -> None:
    client, session, _, _ = await session_against(
        build_error_response(Operation.GET_RESULT, ResultMinor.INVALID_DOCUMENT)
    )
    with pytest.raises(errors.InvalidDocument) as caught:
        await client.get_result(session)
    await client.aclose()
    assert not hasattr(caught.value, "session")


# --- the server's answer is checked even when it says ok ------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "exception"),
    [
        ({"eid_type": EidType.SE_ENDORSED}, errors.AssuranceNotMetError),
        ({"eid_type": EidType.HW_KEY_STORE}, errors.AssuranceNotMetError),
        ({"level_of_assurance": LevelOfAssurance.SUBSTANTIELL}, errors.AssuranceNotMetError),
        ({"level_of_assurance": LevelOfAssurance.EIDAS_HIGH}, errors.EidProtocolError),
        ({"eid_type": None}, errors.EidProtocolError),
        ({"level_of_assurance": None}, errors.EidProtocolError),
        (
            {"operations": {**RELEASED, Attribute.RESTRICTED_ID: AttributeResponse.PROHIBITED}},
            errors.EidProtocolError,
        ),
        (
            {"operations": {**RELEASED, Attribute.GIVEN_NAMES: AttributeResponse.NOTONCHIP}},
            None,
        ),
    ],
    ids=[
        "se-endorsed",
        "hw-keystore",
        "lower-loa",
        "eidas-loa",
        "no-eid-type",
        "no-loa",
        "required-not-released",
        "not-on-chip-is-fine",
    ],
)
async def test_client_refuses_a_weaker_or_incomplete_ok(
    overrides: dict[str, object], exception: type[Exception] | None
) -> None:
    client, session, _, _ = await session_against(ok_result(**overrides))
    if exception is None:
        await client.get_result(session)
    else:
        with pytest.raises(exception):
            await client.get_result(session)
    await client.aclose()


async def test_client_refuses_released_but_missing_required_data() -> None:
    from dataclasses import replace

    data = replace(ERIKA, birth_name=None)
    body = build_get_result_response(
        personal_data=data,
        operations=RELEASED,
        level_of_assurance=LevelOfAssurance.HOCH,
        eid_type=EidType.CARD_CERTIFIED,
    )
    client, session, _, _ = await session_against(body)
    with pytest.raises(errors.EidProtocolError, match="BirthName"):
        await client.get_result(session)
    await client.aclose()


async def test_client_aborts_when_the_psk_differs_from_the_one_sent() -> None:
    transport, _ = mock_transport(USE_ID_OK)
    async with EidClient(client_config(), http_transport=transport) as client:
        with pytest.raises(errors.EidProtocolError, match="PSK"):
            await client.use_id(psk=PreSharedKey.generate())


async def test_client_accepts_its_psk_echoed_in_upper_case() -> None:
    psk = PreSharedKey.generate()
    echoed = PreSharedKey(id=psk.id.upper(), key=psk.key.upper())
    transport, _ = mock_transport(build_use_id_response(session_id=SESSION_ID, psk=echoed))
    async with EidClient(client_config(), http_transport=transport) as client:
        _, session = await client.use_id(psk=psk)
    assert session.psk.matches(psk)


# --- bad responses --------------------------------------------------------------------------------

WRONG_NAMESPACE = envelope(
    "<eid:useIDResponse><dss:Result><dss:ResultMajor>x</dss:ResultMajor></dss:Result>"
    "</eid:useIDResponse>",
    eid_ns="http://bsi.bund.de/eID/v9/",
)
SOAP12 = USE_ID_OK.replace(
    b"http://schemas.xmlsoap.org/soap/envelope/", b"http://www.w3.org/2003/05/soap-envelope"
)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html>502 Bad Gateway</html",
        b"not xml",
        BILLION_LAUGHS,
        EXTERNAL_ENTITY,
        WRONG_NAMESPACE,
        SOAP12,
    ],
    ids=["empty", "html", "not-xml", "billion-laughs", "xxe", "wrong-namespace", "soap12"],
)
async def test_client_refuses_malformed_responses(body: bytes) -> None:
    transport, _ = mock_transport(body)
    async with EidClient(client_config(), http_transport=transport) as client:
        with pytest.raises(errors.MalformedMessageError):
            await client.use_id()


async def test_client_refuses_the_wrong_response_element() -> None:
    transport, _ = mock_transport(ok_result())
    async with EidClient(client_config(), http_transport=transport) as client:
        with pytest.raises(errors.EidProtocolError, match="useIDResponse"):
            await client.use_id()


@pytest.mark.parametrize("status", [200, 500])
async def test_soap_fault_is_reported(status: int) -> None:
    fault = httpx.Response(status, content=fault_envelope("Server", "unsigned request"))
    transport, _ = mock_transport(fault)
    async with EidClient(client_config(), http_transport=transport) as client:
        with pytest.raises(errors.SoapFaultError) as caught:
            await client.use_id()
    assert caught.value.faultcode == "Server"


@pytest.mark.parametrize("body", [USE_ID_OK, b"<html>Internal Server Error</html>", b""])
async def test_http_500_without_a_fault_is_a_transport_error(body: bytes) -> None:
    transport, _ = mock_transport(httpx.Response(500, content=body))
    async with EidClient(client_config(), http_transport=transport) as client:
        with pytest.raises(errors.TransportError, match="500"):
            await client.use_id()


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_client_never_follows_a_redirect(status: int) -> None:
    redirect = httpx.Response(status, headers={"Location": "http://169.254.169.254/eID"})
    transport, sent = mock_transport(redirect, USE_ID_OK)
    async with EidClient(client_config(), http_transport=transport) as client:
        with pytest.raises(errors.TransportError, match="redirect"):
            await client.use_id()
    assert len(sent) == 1


@pytest.mark.parametrize("status", [400, 403, 404, 502])
async def test_unexpected_http_status_is_a_transport_error(status: int) -> None:
    transport, _ = mock_transport(httpx.Response(status, content=USE_ID_OK))
    async with EidClient(client_config(), http_transport=transport) as client:
        with pytest.raises(errors.TransportError, match=str(status)):
            await client.use_id()


async def test_response_over_the_cap_is_refused_by_content_length() -> None:
    big = httpx.Response(200, content=b" " * (MAX_RESPONSE_BYTES + 1) + USE_ID_OK)
    transport, _ = mock_transport(big)
    async with EidClient(client_config(), http_transport=transport) as client:
        with pytest.raises(errors.TransportError, match="larger than"):
            await client.use_id()


async def test_response_over_the_cap_is_refused_while_streaming() -> None:
    async def endless() -> object:
        for _ in range(1000):
            yield b"x" * 4096

    streamed = httpx.Response(200, content=endless())  # no Content-Length
    transport, _ = mock_transport(streamed)
    async with EidClient(client_config(), http_transport=transport) as client:
        with pytest.raises(errors.TransportError, match="larger than"):
            await client.use_id()


async def test_timeout_is_a_transport_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    async with EidClient(client_config(), http_transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(errors.TransportError, match="in time"):
            await client.use_id()


# --- outgoing messages and configuration ----------------------------------------------------------


def test_an_outgoing_message_that_breaks_the_schema_is_never_sent() -> None:
    with pytest.raises(errors.MalformedMessageError, match="RequestCounter"):
        build_get_result_request(session_id=SESSION_ID, request_counter=0)
    with pytest.raises(errors.MalformedMessageError, match="Session/ID"):
        build_get_result_request(session_id="short", request_counter=1)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"endpoint": "http://eid.example/eID", "transport": TransportConfig()}, "https"),
        ({"endpoint": "file:///etc/passwd"}, "https"),
        ({"poll_attempts": 0}, "poll_attempts"),
        ({"poll_attempts": 1000}, "poll_attempts"),
        ({"poll_delay_seconds": 60}, "poll_delay"),
        (
            {"attributes": {Attribute.RESTRICTED_ID: AttributeRequest.ALLOWED}},
            "RestrictedID",
        ),
        (
            {
                "attributes": {
                    Attribute.RESTRICTED_ID: AttributeRequest.REQUIRED,
                    Attribute.AGE_VERIFICATION: AttributeRequest.REQUIRED,
                }
            },
            "verification",
        ),
        (
            {"policy": AssurancePolicy(level_of_assurance=LevelOfAssurance.EIDAS_HIGH)},
            "bsi.bund.de",
        ),
    ],
)
def test_configuration_refuses_insecure_or_unsupported_settings(
    overrides: dict[str, object], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        client_config(**overrides)


async def test_client_refuses_to_send_a_short_psk() -> None:
    transport, sent = mock_transport(USE_ID_OK)
    async with EidClient(client_config(), http_transport=transport) as client:
        with pytest.raises(ValueError, match="PSK"):
            await client.use_id(psk=PreSharedKey(id="ab" * 16, key="cd" * 8))
    assert sent == []


def test_tls_context_pins_the_ca_and_presents_the_client_certificate(tmp_path: Path) -> None:
    ca, _ = self_signed(tmp_path, "eid-server-ca")
    cert, key = self_signed(tmp_path, "eservice")
    context = ssl_context(TransportConfig(ca_file=ca, client_certificate=cert, client_key=key))
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    # Only the pinned CA is trusted, not the system store.
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "eid-server-ca"),),)]


def test_tls_client_certificate_needs_its_key(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path, "eservice")
    with pytest.raises(ValueError, match="together"):
        ssl_context(TransportConfig(client_certificate=cert))


async def test_client_with_tls_settings_can_be_built(tmp_path: Path) -> None:
    ca, _ = self_signed(tmp_path, "eid-server-ca")
    cert, key = self_signed(tmp_path, "eservice")
    config = client_config(
        endpoint="https://eid.example/eID",
        transport=TransportConfig(ca_file=ca, client_certificate=cert, client_key=key),
    )
    async with EidClient(config) as client:
        assert client is not None
