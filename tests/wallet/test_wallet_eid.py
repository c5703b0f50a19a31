"""Enrolment with the eID card through the stand-in (issue #3 item 1), end to end."""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

import healthid.enclave_runtime as enclave_runtime
import healthid.runtime as runtime
from healthid.demo.eid_identities import identities_from_registry, identity_for
from healthid.demo.synthetic import synthetic_rows, write_registry
from healthid.eid.client import EidClient, EidClientConfig
from healthid.eid.model import EidType
from healthid.eid.standin import create_standin_app
from healthid.eid.transport import TransportConfig
from healthid.enclave.registry.model import Policyholder
from healthid.settings import Settings, load_settings
from healthid.wallet.client import WalletClient, WalletClientError
from stack_testlib import import_synthetic_registry

IDP = "http://testserver"
STANDIN = "http://standin"
ROWS = list(synthetic_rows(12, seed=8))


def registry_bytes() -> bytes:
    buf = io.StringIO()
    write_registry(buf, 12, seed=8)
    return buf.getvalue().encode()


@pytest.fixture
def standin() -> object:
    identities = dict(identities_from_registry(registry_bytes(), "r.csv"))
    # a weak eID: Smart-eID in an endorsed SE, not enough for LoA high
    weak = Policyholder(**{**_holder(ROWS[3]).__dict__, "kvnr": "X110411675"})
    identities["weak"] = identity_for(weak, EidType.SE_ENDORSED)
    identities["stranger"] = identity_for(
        Policyholder(**{**_holder(ROWS[4]).__dict__, "given_name": "Niemand", "kvnr": "A123456780"})
    )
    return create_standin_app(identities)


def _holder(row: dict[str, str]) -> Policyholder:
    return Policyholder(**{k: v for k, v in row.items() if v})


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, standin: object) -> Settings:
    for name in list(os.environ):
        if name.startswith("HEALTHID_"):
            monkeypatch.delenv(name)

    def factory(settings: Settings) -> Callable[[], EidClient]:
        config = EidClientConfig(
            endpoint=f"{STANDIN}/eID",
            poll_attempts=1,
            transport=TransportConfig(allow_plain_http=True),
        )
        return lambda: EidClient(config, http_transport=httpx.ASGITransport(app=standin))  # type: ignore[arg-type]

    # build_enclave (the in-process enclave) looks it up in the enclave's composition root
    monkeypatch.setattr(enclave_runtime, "eid_client_factory", factory)
    return load_settings(
        data_dir=tmp_path / "data", enclave_workers=1, eid_server_url=f"{STANDIN}/eID"
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:

    import_synthetic_registry(settings, 12, seed=8)
    with TestClient(runtime.build_app(settings), base_url=IDP) as c:
        yield c


def completer(
    standin: object, identity: str, *, first_pending: bool = False
) -> Callable[[str], None]:
    def complete(psk_id: str) -> None:
        with TestClient(standin) as s:  # type: ignore[arg-type]
            resp = s.post(
                f"{STANDIN}/standin/sessions/{psk_id}/complete", json={"identity": identity}
            )
            assert resp.status_code == 200, resp.text

    return complete


def test_enrol_with_eid_then_login(client: TestClient, standin: object, tmp_path: Path) -> None:
    wallet = WalletClient(IDP, tmp_path / "w", http=client, development=True)
    bound = wallet.enroll_with_eid(completer(standin, ROWS[2]["kvnr"]))
    assert bound["key_class"] == "software"
    assert wallet.login().acr == "gematik-ehealth-loa-substantial"
    assert len(wallet.devices()) == 1


def test_eid_result_before_the_user_finished_is_pending(client: TestClient, tmp_path: Path) -> None:
    start = client.post(f"{IDP}/wallet/v1/enrolments").json()
    eid = client.post(f"{IDP}/wallet/v1/enrolments/{start['enrolment_id']}/eid")
    assert eid.status_code == 201 and eid.json()["tc_token"]["psk_id"]
    pending = client.post(f"{IDP}/wallet/v1/enrolments/{start['enrolment_id']}/eid/result")
    assert pending.status_code == 202 and pending.json() == {"status": "pending"}


def test_weak_eid_type_is_refused(client: TestClient, standin: object, tmp_path: Path) -> None:
    wallet = WalletClient(IDP, tmp_path / "w", http=client, development=True)
    with pytest.raises(WalletClientError) as info:
        wallet.enroll_with_eid(completer(standin, "weak"))
    assert info.value.status == 403 and "level of assurance" in info.value.description


def test_person_not_in_registry_gets_the_same_refusal(
    client: TestClient, standin: object, tmp_path: Path
) -> None:
    wallet = WalletClient(IDP, tmp_path / "w", http=client, development=True)
    with pytest.raises(WalletClientError) as info:
        wallet.enroll_with_eid(completer(standin, "stranger"))
    assert info.value.status == 403
    assert info.value.description == "the identity could not be confirmed"


def test_eid_links_the_restricted_id_for_recovery(
    client: TestClient, standin: object, tmp_path: Path
) -> None:
    first = WalletClient(IDP, tmp_path / "a", http=client, development=True)
    first.enroll_with_eid(completer(standin, ROWS[5]["kvnr"]))
    again = WalletClient(IDP, tmp_path / "b", http=client, development=True)
    recovered = again.enroll_with_eid(completer(standin, ROWS[5]["kvnr"]), replace_devices=True)
    assert recovered["revoked_devices"] == 1
    with pytest.raises(WalletClientError):
        first.login()
