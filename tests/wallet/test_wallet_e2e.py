"""End to end (issue #3): enrol with the eGK, log in with the device key, manage devices,
recover after a lost phone — through the real app on SQLite and on PostgreSQL + Redis."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from healthid.demo.egk_test_ca import TestEgkCa
from healthid.demo.synthetic import synthetic_rows
from healthid.enclave.api import AUDIT_PUBLIC_JWK_FILE
from healthid.protocol.audit import AuditEntry, checkpoint_verifier
from healthid.runtime import EGK_TEST_CA_DIR, build_app, open_runtime
from healthid.settings import Settings
from healthid.wallet.client import WalletClient, WalletClientError
from stack_testlib import import_synthetic_registry, settings_for

IDP = "http://testserver"


@pytest.fixture(params=["embedded", "postgres+redis"])
def settings(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    return settings_for(request, tmp_path, monkeypatch)


@pytest.fixture
def registry(settings: Settings) -> list[dict[str, str]]:
    """Import a synthetic registry through the CLI path (enclave + SQL)."""
    import_synthetic_registry(settings, 30, seed=3)
    return list(synthetic_rows(30, seed=3))


@pytest.fixture
def client(settings: Settings, registry: list[dict[str, str]]) -> Iterator[TestClient]:
    with TestClient(build_app(settings), base_url=IDP) as c:
        yield c


def card_for(settings: Settings, row: dict[str, str]):
    ca = TestEgkCa.create(settings.data_dir / EGK_TEST_CA_DIR)
    return ca.issue_card(row["kvnr"], row["ik"], row["given_name"], row["family_name"])


def test_enrol_login_revoke_and_recover(
    client: TestClient, settings: Settings, registry: list[dict[str, str]], tmp_path: Path
) -> None:
    person = registry[4]
    card = card_for(settings, person)
    phone = WalletClient(IDP, tmp_path / "phone", http=client, development=True)
    bound = phone.enroll_with_egk(card)
    assert bound["key_class"] == "software"
    login = phone.login()
    assert login.acr == "gematik-ehealth-loa-substantial"  # software keys cap the LoA
    assert login.amr == ["urn:telematik:auth:other"]

    tablet = WalletClient(IDP, tmp_path / "tablet", http=client, development=True)
    tablet.enroll_with_egk(card)
    devices = phone.devices()
    assert len(devices) == 2 and sum(d["current"] for d in devices) == 1

    # revoke the tablet from the phone: its next login fails
    phone.revoke(tablet.state()["device_id"])
    with pytest.raises(WalletClientError) as info:
        tablet.login()
    assert info.value.status == 401

    # the phone is lost: re-proof with the eGK on a new phone, every old device is revoked
    new_phone = WalletClient(IDP, tmp_path / "new-phone", http=client, development=True)
    recovered = new_phone.enroll_with_egk(card, replace_devices=True)
    assert recovered["revoked_devices"] == 1
    with pytest.raises(WalletClientError):
        phone.login()
    assert new_phone.login().acr == "gematik-ehealth-loa-substantial"
    kinds = [d["revoked_at"] is None for d in new_phone.devices()]
    assert kinds.count(True) == 1


def test_open_sessions_of_a_revoked_device_are_refused(
    client: TestClient, settings: Settings, registry: list[dict[str, str]], tmp_path: Path
) -> None:
    card = card_for(settings, registry[5])
    phone = WalletClient(IDP, tmp_path / "phone", http=client, development=True)
    phone.enroll_with_egk(card)
    tablet = WalletClient(IDP, tmp_path / "tablet", http=client, development=True)
    tablet.enroll_with_egk(card)
    tablet_session = tablet.login().session
    phone_session = phone.login().session

    def devices(session: str) -> int:
        return client.get(
            f"{IDP}/wallet/v1/devices", headers={"Authorization": f"Bearer {session}"}
        ).status_code

    assert devices(tablet_session) == 200
    phone.revoke(tablet.state()["device_id"])
    assert devices(tablet_session) == 401  # the session outlives its device no longer
    assert devices(phone_session) == 200  # other devices' sessions are untouched

    # recovery revokes every old device: the phone's open session ends too
    WalletClient(IDP, tmp_path / "new", http=client, development=True).enroll_with_egk(
        card, replace_devices=True
    )
    assert devices(phone_session) == 401
    # a forged session token for a live device is refused, not an error
    assert devices(f"{phone.state()['device_id']}.{'A' * 43}") == 401
    assert devices("not-a-session") == 401


def test_two_people_enrol_and_authenticate_independently(
    client: TestClient, settings: Settings, registry: list[dict[str, str]], tmp_path: Path
) -> None:
    wallets = []
    for i, person in enumerate(registry[:2]):
        w = WalletClient(IDP, tmp_path / f"w{i}", http=client, development=True)
        w.enroll_with_egk(card_for(settings, person))
        wallets.append(w)
    ids = [{d["device_id"] for d in w.devices()} for w in wallets]
    assert ids[0].isdisjoint(ids[1])  # nobody sees another person's devices


def test_unknown_kvnr_and_uninsured_look_the_same(
    client: TestClient, settings: Settings, registry: list[dict[str, str]], tmp_path: Path
) -> None:
    stranger = {**registry[0], "kvnr": "A123456780"}  # valid card, not in the registry
    w = WalletClient(IDP, tmp_path / "w", http=client, development=True)
    with pytest.raises(WalletClientError) as info:
        w.enroll_with_egk(card_for(settings, stranger))
    assert info.value.status == 403
    assert info.value.description == "the identity could not be confirmed"


def test_replayed_login_signature_is_refused(
    client: TestClient, settings: Settings, registry: list[dict[str, str]], tmp_path: Path
) -> None:
    w = WalletClient(IDP, tmp_path / "w", http=client, development=True)
    w.enroll_with_egk(card_for(settings, registry[7]))
    state = w.state()
    device_id = state["device_id"]
    issued = client.post(f"{IDP}/wallet/v1/auth/challenges", json={"device_id": device_id}).json()
    from healthid.protocol import device_auth
    from healthid.wallet.client import b64d, b64e

    signed = device_auth.message(b64d(issued["challenge"]), device_id, 5)
    body = {
        "challenge_id": issued["challenge_id"],
        "device_id": device_id,
        "counter": 5,
        "signature": b64e(w._sign(signed)),
    }
    assert client.post(f"{IDP}/wallet/v1/auth/assertions", json=body).status_code == 200
    # the same request again: the challenge is spent
    again = client.post(f"{IDP}/wallet/v1/auth/assertions", json=body)
    assert again.status_code == 401
    # a fresh challenge but the counter does not go up: refused
    issued = client.post(f"{IDP}/wallet/v1/auth/challenges", json={"device_id": device_id}).json()
    signed = device_auth.message(b64d(issued["challenge"]), device_id, 5)
    body = {
        "challenge_id": issued["challenge_id"],
        "device_id": device_id,
        "counter": 5,
        "signature": b64e(w._sign(signed)),
    }
    assert client.post(f"{IDP}/wallet/v1/auth/assertions", json=body).status_code == 401


def test_each_login_adds_exactly_one_history_event(
    client: TestClient, settings: Settings, registry: list[dict[str, str]], tmp_path: Path
) -> None:
    w = WalletClient(IDP, tmp_path / "w", http=client, development=True)
    w.enroll_with_egk(card_for(settings, registry[9]))
    session = w.login().session
    before = client.get(
        f"{IDP}/wallet/v1/history", headers={"Authorization": f"Bearer {session}"}
    ).json()["events"]
    w.login()
    w.login()
    after = client.get(
        f"{IDP}/wallet/v1/history", headers={"Authorization": f"Bearer {session}"}
    ).json()["events"]
    assert after - before == 2


def test_every_security_event_lands_in_the_verifiable_audit_trail(
    settings: Settings, registry: list[dict[str, str]], tmp_path: Path
) -> None:
    """Enrolment, proof, binding, login (good and bad), revocation and recovery are recorded
    with pseudonyms only, and the chain verifies against the enclave's audit key."""
    card = card_for(settings, registry[9])
    with TestClient(build_app(settings), base_url=IDP) as client:
        phone = WalletClient(IDP, tmp_path / "phone", http=client, development=True)
        phone.enroll_with_egk(card)
        phone.login()
        tablet = WalletClient(IDP, tmp_path / "tablet", http=client, development=True)
        tablet.enroll_with_egk(card)
        phone.revoke(tablet.state()["device_id"])
        with pytest.raises(WalletClientError):
            tablet.login()
        WalletClient(IDP, tmp_path / "new", http=client, development=True).enroll_with_egk(
            card, replace_devices=True
        )

    async def read() -> tuple[list[AuditEntry], bool]:
        rt = await open_runtime(settings, migrate=False)
        try:
            jwks = {
                "keys": [
                    json.loads((settings.data_dir / "enclave" / AUDIT_PUBLIC_JWK_FILE).read_text())
                ]
            }
            report = await rt.audit.verify(checkpoint_verifier(jwks))
            items = await rt.audit.read()
        finally:
            await rt.aclose()
        return [
            i for i in items if isinstance(i, AuditEntry)
        ], report.ok and not report.unsigned_tail

    entries, verified = asyncio.run(read())
    assert verified  # the chain is intact and signed up to its head (checkpoint at shutdown)
    seen = [(e.event.kind.value, e.event.outcome.value) for e in entries]
    for expected in [
        ("identity_proof", "success"),
        ("enrolment", "success"),
        ("device_bound", "success"),
        ("login", "success"),
        ("device_revoked", "success"),
        ("login", "failure"),
        ("recovery", "success"),
    ]:
        assert expected in seen, expected
    person = registry[9]
    dump = repr(entries)
    for secret in (person["kvnr"], person["family_name"], person["given_name"]):
        assert secret not in dump  # pseudonyms only
