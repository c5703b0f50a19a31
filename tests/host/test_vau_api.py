"""The VAU channel through the host (issue #6 items 2-4 and its "Show"): the wallet enrols,
logs in and reads its data through the channel, and a capture of everything the host
received and sent holds no personal data; the transport's refusals are clear HTTP errors."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import cbor2
import pytest
from channel_testlib import (
    Recorder,
    authorization_url,
    par_form,
    personal_values,
    search,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient

from healthid.demo.egk_test_ca import TestEgkCa
from healthid.demo.synthetic import synthetic_rows
from healthid.host.app import _plain_egk_in_development_only
from healthid.protocol.jose import decrypt_id_token
from healthid.protocol.tee import TeePolicy
from healthid.protocol.vau import cbor as vau_cbor
from healthid.protocol.vau import client as vau_client
from healthid.protocol.vau import parse_signed_public_keys
from healthid.runtime import EGK_TEST_CA_DIR, build_app
from healthid.settings import Settings
from healthid.wallet.client import WalletClient, WalletClientError, b64e
from healthid.wallet.tee_verify import verify_enclave
from healthid.wallet.vau_channel import VauChannel
from rp_testlib import FakeRp, StubResolver, pkce, token_form
from stack_testlib import import_synthetic_registry, settings_for

IDP = "http://testserver"
REGISTRY, SEED = 8, 29
ROWS = list(synthetic_rows(REGISTRY, seed=SEED))
# people whose names are long enough that no encrypted byte string matches them by chance
LONG_NAMED = [r for r in ROWS if len(r["given_name"]) >= 5 and len(r["family_name"]) >= 5]
POLICY = TeePolicy(mrsigners=frozenset({b"\x01" * 32}), isv_prod_id=1)  # SGX only; unused


@pytest.fixture(params=["embedded", "postgres+redis"])
def settings(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    return settings_for(request, tmp_path, monkeypatch, trusted_proxies=["testclient"])


@pytest.fixture
def rp() -> FakeRp:
    return FakeRp()


@pytest.fixture
def recorder(settings: Settings, rp: FakeRp) -> Recorder:
    import_synthetic_registry(settings, REGISTRY, seed=SEED)
    return Recorder(build_app(settings, resolver=StubResolver(rp)))


@pytest.fixture
def client(recorder: Recorder) -> Iterator[TestClient]:
    with TestClient(recorder, base_url=IDP) as c:  # type: ignore[arg-type]
        yield c


def card_for(settings: Settings, row: dict[str, str]):  # type: ignore[no-untyped-def]
    return TestEgkCa.create(settings.data_dir / EGK_TEST_CA_DIR).issue_card(
        row["kvnr"], row["ik"], row["given_name"], row["family_name"]
    )


def wallet_for(client: TestClient, tmp_path: Path, name: str) -> WalletClient:
    return WalletClient(IDP, tmp_path / name, http=client, development=True)


# -- the "Show" --------------------------------------------------------------------------------
def test_a_capture_of_everything_the_host_saw_holds_no_personal_data(
    client: TestClient, recorder: Recorder, settings: Settings, rp: FakeRp, tmp_path: Path
) -> None:
    """Enrolment (eGK), login, the person's data, a consent screen with claim values, the
    history and the token: the wallet gets every value, the host sees none of them."""
    assert len(LONG_NAMED) >= 2
    person, other = LONG_NAMED[0], LONG_NAMED[1]
    wallet = wallet_for(client, tmp_path, "phone")
    wallet.enroll_with_egk(card_for(settings, person))
    login = wallet.login()
    me = wallet.me(login.token)
    history = wallet.history(login.token)
    verifier, challenge = pkce()
    pushed = client.post(f"{IDP}/PAR_Auth", data=par_form(challenge), headers=rp.cert_header())
    url = authorization_url(IDP, pushed.json()["request_uri"])
    shown = []
    location = wallet.authorize(url, show=shown.append)
    code = parse_qs(urlsplit(location).query)["code"][0]
    token = client.post(
        f"{IDP}/token",
        data=token_form(code, verifier),
        headers=rp.cert_header(),
    ).json()

    # the wallet (and the RP) did receive the values: the channel carried them
    assert (me.given_name, me.family_name, me.kvnr, me.birth_date) == (
        person["given_name"],
        person["family_name"],
        person["kvnr"],
        person["birth_date"],
    )
    assert {"enrolled", "device_bound", "login"} <= {h.kind for h in history}
    values = {c.claim: c.value for c in shown[0].claims}
    assert values["urn:telematik:claims:id"] == person["kvnr"]
    assert values["urn:telematik:claims:display_name"] == (
        f"{person['given_name']} {person['family_name']}"
    )
    claims = json.loads(
        base64.urlsafe_b64decode(
            decrypt_id_token(token["id_token"], private_key=rp.enc_key).split(".")[1] + "=="
        )
    )
    assert claims["urn:telematik:claims:id"] == person["kvnr"]

    # ... and the host saw none of them, in any encoding
    exchanges = list(recorder.exchanges)
    paths = {e.path.split("/VAU/")[0] if "/VAU/" in e.path else e.path for e in exchanges}
    assert {"/attestation", "/VAU", "/wallet/v1/enrolments", "/token", "/PAR_Auth"} <= paths
    channel_requests = [e for e in exchanges if e.path.startswith("/VAU/")]
    # M3, then egk_prove, login, me, history, and the authorization's login, consent_claims
    assert len(channel_requests) == 7
    hits = search(exchanges, personal_values(person))
    # nor the session token: the host saw only its bearer, which it cannot turn back
    secret = login.token.partition(".")[2]
    assert search(exchanges, {"session token": secret}) == []
    assert login.session != login.token and search(exchanges, {"bearer": login.session})
    print(
        f"\ncapture: {len(exchanges)} requests, {recorder.bytes_seen} bytes, "
        f"{len(channel_requests)} through the channel; personal-data hits: {len(hits)}"
    )
    assert hits == []

    # the control: the same search finds the plain eGK route's certificate (development only)
    recorder.exchanges.clear()
    started = client.post(f"{IDP}/wallet/v1/enrolments").json()
    card = card_for(settings, other)
    challenge_bytes = base64.urlsafe_b64decode(started["challenge"] + "==")
    plain = client.post(
        f"{IDP}/wallet/v1/enrolments/{started['enrolment_id']}/egk",
        json={
            "certificate": b64e(card.certificate_der),
            "signature": b64e(card.sign(challenge_bytes)),
        },
    )
    assert plain.status_code == 200
    found = {h.item for h in search(recorder.exchanges, personal_values(other))}
    assert {"KVNR", "given name", "family name"} <= found


# -- transport ---------------------------------------------------------------------------------
def test_the_handshake_answers_m2_and_the_channel_path(client: TestClient) -> None:
    channel = VauChannel.open(client, IDP, development=True)
    assert channel.cid.startswith("/VAU/") and len(channel.cid) == len("/VAU/") + 64
    assert channel.call("status")["status"] == "ok"


def test_the_published_vau_keys_are_signed_by_the_attested_identity_key(
    client: TestClient,
) -> None:
    from healthid.protocol.vau import es256_verifier

    verified = verify_enclave(client, IDP, policy=POLICY, development=True)
    answer = client.get(f"{IDP}/VAU-Keys")
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/cbor"
    assert es256_verifier(verified.identity_key)(parse_signed_public_keys(answer.content))


@pytest.mark.parametrize(
    ("path", "body", "content_type", "status"),
    [
        ("/VAU", b"\xa0", "application/json", 415),
        ("/VAU", b"\xa0" * 5000, "application/cbor", 413),
        ("/VAU", b"\xa1\x61x\x01", "application/cbor", 400),  # not an M1
        ("/VAU", b"", "application/cbor", 400),
        ("/VAU/" + "0" * 64, b"\xa0", "application/cbor", 404),  # M3 for no handshake
        ("/VAU/not-a-cid", b"\xa0", "application/cbor", 404),
        ("/VAU/" + "0" * 64, b"x" * 100, "text/plain", 415),
    ],
)
def test_malformed_transport_requests_get_the_cbor_error_body(
    client: TestClient, path: str, body: bytes, content_type: str, status: int
) -> None:
    answer = client.post(f"{IDP}{path}", content=body, headers={"Content-Type": content_type})
    assert answer.status_code == status
    error = cbor2.loads(answer.content)
    assert error["MessageType"] == "Error" and isinstance(error["ErrorCode"], int)
    assert answer.headers["cache-control"] == "no-store"


def raw_request(channel: VauChannel, plaintext: bytes) -> bytes:
    """Encrypt ``plaintext`` on the channel's state, as its next request."""
    channel._session, message = vau_client.encrypt_request(
        channel._config, channel._session, plaintext
    )
    return message


def post(client: TestClient, channel: VauChannel, message: bytes, **headers: str):  # type: ignore[no-untyped-def]
    return client.post(
        f"{IDP}{channel.cid}",
        content=message,
        headers={"Content-Type": "application/octet-stream", **headers},
    )


def status_request(channel: VauChannel) -> bytes:
    return raw_request(channel, vau_cbor.encode({"op": "status", "session": "", "args": {}}))


def test_a_replayed_encrypted_request_is_refused(client: TestClient) -> None:
    channel = VauChannel.open(client, IDP, development=True)
    message = status_request(channel)
    assert post(client, channel, message, **{"VAU-Op": "status"}).status_code == 200
    replayed = post(client, channel, message, **{"VAU-Op": "status"})
    assert replayed.status_code == 403
    assert cbor2.loads(replayed.content)["MessageType"] == "Error"


def test_a_reordered_encrypted_request_is_refused(client: TestClient) -> None:
    channel = VauChannel.open(client, IDP, development=True)
    first, second = status_request(channel), status_request(channel)
    assert post(client, channel, second, **{"VAU-Op": "status"}).status_code == 200
    assert post(client, channel, first, **{"VAU-Op": "status"}).status_code == 403


def test_a_request_on_an_unknown_channel_is_404(client: TestClient) -> None:
    channel = VauChannel.open(client, IDP, development=True)
    message = status_request(channel)
    channel._cid = "/VAU/" + "1" * 64
    answer = post(client, channel, message, **{"VAU-Op": "status"})
    assert answer.status_code == 404 and cbor2.loads(answer.content)["ErrorCode"] == 9


def test_a_session_inside_that_differs_from_the_outer_header_is_refused(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    """The host cannot present someone's encrypted request under another device session."""
    mine, theirs = wallet_for(client, tmp_path, "a"), wallet_for(client, tmp_path, "b")
    mine.enroll_with_egk(card_for(settings, ROWS[0]))
    theirs.enroll_with_egk(card_for(settings, ROWS[1]))
    my_session, their_session = mine.login().token, theirs.login().session
    channel = mine.channel()
    inner = vau_cbor.encode({"op": "me", "session": my_session, "args": {}})
    answer = post(
        client,
        channel,
        raw_request(channel, inner),
        **{"VAU-Op": "me", "Authorization": f"Bearer {their_session}"},
    )
    assert answer.status_code == 200  # relayed; the enclave refuses it inside the channel
    channel._session, raw = vau_client.decrypt_response(
        channel._config, channel._session, answer.content
    )
    refused = cbor2.loads(raw)
    assert "ok" not in refused and refused["error"]["status"] == 400
    assert ROWS[1]["kvnr"] not in raw.decode("utf-8", "replace")
    # and the honest request on the same channel still works
    assert mine.me(my_session).kvnr == ROWS[0]["kvnr"]


@pytest.mark.parametrize(
    ("headers", "status", "error"),
    [
        ({}, 400, "invalid_request"),  # no VAU-Op
        ({"VAU-Op": "export"}, 400, "invalid_request"),
        ({"VAU-Op": "me"}, 401, "invalid_token"),  # no device session
        ({"VAU-Op": "me", "Authorization": "Bearer " + "a" * 32 + "." + "b" * 43}, 401, ""),
        ({"VAU-Op": "egk_prove"}, 400, "invalid_request"),  # no enrolment id
        ({"VAU-Op": "egk_prove", "VAU-Args": "enrolment_id=nope"}, 404, "not_found"),
        ({"VAU-Op": "status", "VAU-Args": "extra=1"}, 400, "invalid_request"),
        ({"VAU-Op": "consent_claims", "VAU-Args": "client_id=x&client_id=y"}, 400, ""),
    ],
)
def test_the_host_refuses_a_request_it_cannot_route_before_the_enclave_sees_it(
    client: TestClient, headers: dict[str, str], status: int, error: str
) -> None:
    channel = VauChannel.open(client, IDP, development=True)
    answer = post(client, channel, status_request(channel), **headers)
    assert answer.status_code == status
    assert answer.json()["error"].startswith(error)
    # the refused request spent no counter in the enclave: the channel goes on
    assert channel.call("status")["status"] == "ok"


def test_a_revoked_device_session_reads_nothing(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    wallet = wallet_for(client, tmp_path, "w")
    bound = wallet.enroll_with_egk(card_for(settings, ROWS[2]))
    session = wallet.login().token
    assert wallet.me(session).kvnr == ROWS[2]["kvnr"]
    wallet.revoke(bound["device_id"])
    with pytest.raises(WalletClientError) as info:
        wallet.me(session)
    assert info.value.status == 401


def test_consent_claims_for_an_unknown_authorization_is_refused(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    wallet = wallet_for(client, tmp_path, "w")
    wallet.enroll_with_egk(card_for(settings, ROWS[3]))
    with pytest.raises(WalletClientError) as info:
        wallet.consent_claims(authorization_url(IDP, "urn:ietf:params:oauth:request_uri:nope"))
    assert info.value.status == 400 and info.value.error == "invalid_request_uri"


def test_the_plain_egk_route_answers_404_outside_development() -> None:
    async def egk(_request: Request) -> Response:
        return Response("plain")

    mode = {"value": "production"}
    routes = _plain_egk_in_development_only(
        [Route("/wallet/v1/enrolments/{enrolment_id}/egk", egk, methods=["POST"])],
        lambda: mode["value"],
    )
    with TestClient(Starlette(routes=routes)) as c:
        refused = c.post("/wallet/v1/enrolments/e/egk")
        assert refused.status_code == 404 and "VAU" in refused.json()["error_description"]
        mode["value"] = "development"
        assert c.post("/wallet/v1/enrolments/e/egk").text == "plain"


def test_a_session_whose_token_the_host_saw_reads_nothing(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    """A plain login's token passed through the host, and the bearer of a channel login is
    all the host sees of that one: neither opens the person's data through the channel."""
    wallet = wallet_for(client, tmp_path, "w")
    wallet.enroll_with_egk(card_for(settings, ROWS[0]))
    plain = wallet.login(through_channel=False)
    assert plain.token == ""
    with pytest.raises(WalletClientError) as info:
        wallet.me(plain.session)
    assert info.value.status == 401
    login = wallet.login()
    with pytest.raises(WalletClientError) as info:
        wallet.me(login.session)  # the bearer, as if it were the token
    assert info.value.status == 401
    assert wallet.me(login.token).kvnr == ROWS[0]["kvnr"]
    # the plain wallet API takes either session's bearer
    for bearer in (plain.session, login.session):
        listed = client.get(
            f"{IDP}/wallet/v1/devices", headers={"Authorization": f"Bearer {bearer}"}
        )
        assert listed.status_code == 200, listed.text
