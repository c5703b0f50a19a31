"""EidClient against the local stand-in through httpx.ASGITransport (TR-03130-1 §3.2)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from eid_testlib import ERIKA, RecordingSleep, Standin, client_config, make_standin

from healthid.eid import errors
from healthid.eid.client import EidClient
from healthid.eid.model import (
    AssurancePolicy,
    Attribute,
    AttributeRequest,
    AttributeResponse,
    EidType,
    EidTypeSelection,
    FreetextPlace,
    LevelOfAssurance,
    NoPlaceInfo,
    PreSharedKey,
)
from healthid.eid.soap import Operation, local_name, open_envelope


async def _complete(standin: Standin, psk_id: str, identity: str) -> None:
    answer = await standin.complete(psk_id, {"identity": identity})
    assert answer.status_code == 200, answer.text


async def test_complete_session_with_a_full_identity(client: EidClient, standin: Standin) -> None:
    result, session = await client.use_id()
    assert len(result.session_id) >= 32  # TR-03130-1 §3.3.1
    await _complete(standin, result.psk_id, "erika")

    outcome = await client.get_result(session)

    data = outcome.personal_data
    assert (data.given_names, data.family_names, data.birth_name) == (
        "ERIKA",
        "MUSTERMANN",
        "GABLER",
    )
    assert data.date_of_birth == "19640812" and data.date_of_birth_iso == "1964-08-12"
    assert data.place_of_residence == ERIKA.place_of_residence
    assert data.restricted_id == ERIKA.restricted_id
    # Not requested, so not released (data minimisation, §3.3.7 default PROHIBITED).
    assert data.document_type is None and data.issuing_state is None
    assert outcome.operations_allowed[Attribute.DOCUMENT_TYPE] is AttributeResponse.PROHIBITED
    assert outcome.level_of_assurance is LevelOfAssurance.HOCH
    assert outcome.eid_type is EidType.CARD_CERTIFIED


async def test_partial_birth_date_and_freetext_residence(
    client: EidClient, standin: Standin
) -> None:
    result, session = await client.use_id()
    await _complete(standin, result.psk_id, "partial")
    data = (await client.get_result(session)).personal_data
    assert data.date_of_birth == "1964  00"
    assert data.date_of_birth_iso == "1964"
    assert data.place_of_residence == FreetextPlace(text="AM MARKT 1, 99999 MUSTERDORF")


async def test_year_month_birth_date_no_place_info_and_birth_name_not_on_chip(
    client: EidClient, standin: Standin
) -> None:
    result, session = await client.use_id()
    await _complete(standin, result.psk_id, "year-month")
    outcome = await client.get_result(session)
    data = outcome.personal_data
    assert data.date_of_birth_iso == "1982-03"
    assert data.place_of_residence == NoPlaceInfo(text="keine Hauptwohnung in Deutschland")
    assert data.birth_name is None
    assert outcome.operations_allowed[Attribute.BIRTH_NAME] is AttributeResponse.NOTONCHIP
    assert outcome.eid_type is EidType.SE_CERTIFIED


async def test_no_result_yet_is_polled_with_increasing_counter_then_succeeds(
    standin: Standin, sleep: RecordingSleep
) -> None:
    config = client_config(poll_attempts=2, poll_delay_seconds=0.25)
    async with EidClient(config, http_transport=standin.transport, sleep=sleep) as client:
        result, session = await client.use_id()
        with pytest.raises(errors.ResultStillPending) as pending:
            await client.get_result(session)
        assert pending.value.session.last_counter == 2
        assert sleep.delays == [0.25]
        await _complete(standin, result.psk_id, "erika")
        outcome = await client.get_result(pending.value.session)
    assert outcome.personal_data.given_names == "ERIKA"
    counters = [
        open_envelope(r.content).findtext("{http://bsi.bund.de/eID/}RequestCounter")
        for r in standin.transport.requests
        if r.url.path == "/eID" and b"getResultRequest" in r.content
    ]
    assert counters == ["1", "2", "3"]  # §3.2.2.1: from 1, +1 per call


async def test_get_result_rejects_a_replayed_request_counter(
    client: EidClient, standin: Standin
) -> None:
    _, session = await client.use_id()
    with pytest.raises(errors.ResultStillPending):
        await client.get_result(session)
    # The stale state sends RequestCounter 1 again: refused, and the session is over.
    with pytest.raises(errors.InvalidCounter):
        await client.get_result(session)
    with pytest.raises(errors.InvalidSession):
        await client.get_result(replace(session, last_counter=10))


async def test_get_result_rejects_an_unknown_session(client: EidClient) -> None:
    _, session = await client.use_id()
    foreign = replace(session, session_id=PreSharedKey.generate().id)
    with pytest.raises(errors.InvalidSession):
        await client.get_result(foreign)


async def test_get_result_rejects_another_servers_session(client: EidClient) -> None:
    other = make_standin()
    async with EidClient(client_config(), http_transport=other.transport) as other_client:
        _, theirs = await other_client.use_id()
    with pytest.raises(errors.InvalidSession):
        await client.get_result(theirs)


async def test_session_cannot_be_reused_after_completion(
    client: EidClient, standin: Standin
) -> None:
    result, session = await client.use_id()
    await _complete(standin, result.psk_id, "erika")
    await client.get_result(session)
    with pytest.raises(errors.InvalidSession):
        await client.get_result(session)


async def test_endorsed_smart_eid_is_denied_when_hoch_is_required(
    client: EidClient, standin: Standin
) -> None:
    result, session = await client.use_id()
    await _complete(standin, result.psk_id, "endorsed")
    with pytest.raises(errors.DeniedDocument):
        await client.get_result(session)


async def test_endorsed_smart_eid_is_denied_by_loa_alone(
    client: EidClient, standin: Standin
) -> None:
    policy = AssurancePolicy(level_of_assurance=LevelOfAssurance.HOCH, eid_types={})
    result, session = await client.use_id(policy=policy)
    await _complete(standin, result.psk_id, "endorsed")
    with pytest.raises(errors.DeniedDocument):
        await client.get_result(session)


async def test_endorsed_smart_eid_is_accepted_when_explicitly_allowed(
    client: EidClient, standin: Standin
) -> None:
    policy = AssurancePolicy(eid_types={EidType.SE_ENDORSED: EidTypeSelection.ALLOWED})
    result, session = await client.use_id(policy=policy)
    await _complete(standin, result.psk_id, "endorsed")
    outcome = await client.get_result(session)
    assert outcome.eid_type is EidType.SE_ENDORSED
    assert outcome.level_of_assurance is LevelOfAssurance.SUBSTANTIELL


async def test_psk_we_send_is_echoed(client: EidClient, standin: Standin) -> None:
    psk = PreSharedKey.generate()
    result, session = await client.use_id(psk=psk)
    assert result.psk == psk and session.psk == psk
    await _complete(standin, psk.id, "erika")
    assert (await client.get_result(session)).personal_data.family_names == "MUSTERMANN"


@pytest.mark.parametrize(
    ("error", "exception"),
    [
        ("cancelled", errors.CancelledByUser),
        ("invalidDocument", errors.InvalidDocument),
        ("deniedDocument", errors.DeniedDocument),
        ("internalError", errors.InternalError),
    ],
)
async def test_hook_errors_reach_the_client(
    client: EidClient, standin: Standin, error: str, exception: type[Exception]
) -> None:
    result, session = await client.use_id()
    answer = await standin.complete(result.psk_id, {"error": error})
    assert answer.status_code == 200
    with pytest.raises(exception):
        await client.get_result(session)
    with pytest.raises(errors.InvalidSession):  # any answer but noResultYet ends it
        await client.get_result(replace(session, last_counter=1))


async def test_too_many_open_sessions(standin: Standin) -> None:
    small = make_standin(max_open_sessions=1)
    async with EidClient(client_config(), http_transport=small.transport) as client:
        await client.use_id()
        with pytest.raises(errors.TooManyOpenSessions):
            await client.use_id()


async def test_every_message_the_client_sends_is_schema_valid(
    client: EidClient, standin: Standin
) -> None:
    policies = [
        AssurancePolicy(),
        AssurancePolicy(level_of_assurance=None, eid_types={}),
        AssurancePolicy(level_of_assurance=LevelOfAssurance.SUBSTANTIELL, eid_types={}),
    ]
    attributes = {
        **{a: AttributeRequest.ALLOWED for a in Attribute if a.value.endswith("Name")},
        Attribute.RESTRICTED_ID: AttributeRequest.REQUIRED,
    }
    for policy in policies:
        result, session = await client.use_id(policy=policy, attributes=attributes)
        await client.use_id(psk=PreSharedKey.generate(), policy=policy)
        await _complete(standin, result.psk_id, "erika")
        await client.get_result(session)
    sent = [r for r in standin.transport.requests if r.url.path == "/eID"]
    assert len(sent) == 3 * 3
    for request in sent:
        operation = Operation(request.headers["SOAPAction"].strip('"').rsplit("/", 1)[1])
        assert local_name(open_envelope(request.content)) == operation.request_element
        assert request.headers["Content-Type"] == "text/xml; charset=utf-8"
