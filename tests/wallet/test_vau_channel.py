"""The wallet's VAU channel into the enclave (issue #6 items 3-4): it trusts the channel only
after the enclave's attestation, and only VAU keys signed by the attested identity key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from healthid.demo.egk_test_ca import TestEgkCa
from healthid.demo.synthetic import synthetic_rows
from healthid.protocol.tee import SimulatedEvidenceRejectedError, TeePolicy
from healthid.protocol.vau import VauSignatureError
from healthid.runtime import EGK_TEST_CA_DIR, build_app
from healthid.settings import Settings
from healthid.wallet.client import WalletClient, WalletClientError
from stack_testlib import import_synthetic_registry, settings_for

IDP = "http://testserver"
ROWS = list(synthetic_rows(6, seed=37))
POLICY = TeePolicy(mrsigners=frozenset({b"\x01" * 32}), isv_prod_id=1)  # an SGX build


@pytest.fixture(params=["embedded", "postgres+redis"])
def settings(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    return settings_for(request, tmp_path, monkeypatch)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    import_synthetic_registry(settings, len(ROWS), seed=37)
    with TestClient(build_app(settings), base_url=IDP) as c:
        yield c


def card_for(settings: Settings, row: dict[str, str]):  # type: ignore[no-untyped-def]
    return TestEgkCa.create(settings.data_dir / EGK_TEST_CA_DIR).issue_card(
        row["kvnr"], row["ik"], row["given_name"], row["family_name"]
    )


def paths_posted(client: httpx.Client) -> list[str]:
    """Record the path of every request the client sends from now on."""
    seen: list[str] = []
    client.event_hooks = {"request": [lambda r: seen.append(f"{r.method} {r.url.path}")]}
    return seen


def test_the_wallet_enrols_logs_in_and_reads_its_data_through_the_channel(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    person = ROWS[1]
    wallet = WalletClient(IDP, tmp_path / "w", http=client, development=True)
    sent = paths_posted(client)
    bound = wallet.enroll_with_egk(card_for(settings, person))
    assert bound["key_class"] == "software"
    # the certificate went through the channel, never to the plain eGK route
    assert not any(p.endswith("/egk") for p in sent)
    assert "GET /attestation" in sent and "POST /VAU" in sent
    login = wallet.login()
    session = login.session  # the bearer: all the host ever sees of the session
    me = wallet.me(login.token)
    assert (me.given_name, me.family_name, me.kvnr, me.birth_date) == (
        person["given_name"],
        person["family_name"],
        person["kvnr"],
        person["birth_date"],
    )
    kinds = [e.kind for e in wallet.history(login.token)]
    assert sorted(kinds) == ["device_bound", "enrolled", "login"]
    assert all(e.device_id == bound["device_id"] for e in wallet.history() if e.kind != "enrolled")
    # the plain API keeps only what carries no personal data: a count
    count = client.get(f"{IDP}/wallet/v1/history", headers={"Authorization": f"Bearer {session}"})
    assert count.json() == {"events": 4}  # + the login of the history() call above


def test_an_uninsured_card_is_refused_and_the_host_says_only_that(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    ca = TestEgkCa.create(settings.data_dir / EGK_TEST_CA_DIR)
    stranger = ca.issue_card("A123456780", "109500969", "Nie", "Versichert")
    wallet = WalletClient(IDP, tmp_path / "w", http=client, development=True)
    with pytest.raises(WalletClientError) as info:
        wallet.enroll_with_egk(stranger)
    assert info.value.status == 403
    assert info.value.description == "the identity could not be confirmed"


def test_a_simulated_enclave_is_refused_outside_development_mode(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    wallet = WalletClient(IDP, tmp_path / "w", http=client, enclave_policy=POLICY)
    sent = paths_posted(client)
    with pytest.raises(SimulatedEvidenceRejectedError):
        wallet.enroll_with_egk(card_for(settings, ROWS[2]))
    assert "GET /attestation" in sent
    assert not any("/VAU" in p for p in sent)  # no handshake with an unattested enclave


def test_without_a_pinned_policy_the_wallet_opens_no_channel(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    wallet = WalletClient(IDP, tmp_path / "w", http=client)
    with pytest.raises(ValueError, match="TeePolicy"):
        wallet.enroll_with_egk(card_for(settings, ROWS[2]))


class Split(httpx.BaseTransport):
    """A host that serves one enclave's attestation and relays the channel to another."""

    def __init__(self, attested: TestClient, other: TestClient) -> None:
        self.attested, self.other = attested, other
        self.paths: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(f"{request.method} {request.url.path}")
        target = self.attested if request.url.path == "/attestation" else self.other
        answer = target._transport.handle_request(request)
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.read())


def test_vau_keys_not_signed_by_the_attested_identity_key_are_refused_before_m3(
    client: TestClient, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The host shows the genuine enclave's attestation but relays the handshake to an
    enclave of its own (another identity key): the wallet stops after M2."""
    other_settings = settings.model_copy(update={"data_dir": tmp_path / "other"})
    with TestClient(build_app(other_settings), base_url=IDP) as other:
        split = Split(client, other)
        with httpx.Client(transport=split, base_url=IDP) as http:
            wallet = WalletClient(IDP, tmp_path / "w", http=http, development=True)
            with pytest.raises(VauSignatureError):
                wallet.channel()
    assert split.paths == ["GET /attestation", "POST /VAU"]  # no M3 was sent


def test_the_wallet_replaces_a_channel_the_enclave_no_longer_knows(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    wallet = WalletClient(IDP, tmp_path / "w", http=client, development=True)
    wallet.enroll_with_egk(card_for(settings, ROWS[3]))
    first = wallet.channel()
    first._cid = "/VAU/" + "0" * 64  # as if it expired, or another enclave instance answered
    assert wallet.me().kvnr == ROWS[3]["kvnr"]
    assert wallet.channel() is not first
