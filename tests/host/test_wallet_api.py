"""Wallet API refusals: bad input, limits against attackers — each a clear error, nothing stored."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.testclient import TestClient

from healthid.demo.egk_test_ca import TestEgkCa
from healthid.demo.synthetic import synthetic_rows
from healthid.host.wallet_service import WalletLimits
from healthid.runtime import EGK_TEST_CA_DIR, build_app
from healthid.settings import Settings, load_settings
from healthid.wallet.client import WalletClient, WalletClientError, b64e

IDP = "http://testserver"
API = f"{IDP}/wallet/v1"
ROWS = list(synthetic_rows(10, seed=5))


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in list(os.environ):
        if name.startswith("HEALTHID_"):
            monkeypatch.delenv(name)
    return load_settings(data_dir=tmp_path / "data", enclave_workers=1)


@pytest.fixture
def client(settings: Settings, tmp_path: Path) -> Iterator[TestClient]:
    from click.testing import CliRunner

    from healthid.cli import main
    from healthid.demo.synthetic import write_registry

    reg = tmp_path / "reg.csv"
    with reg.open("w") as fh:
        write_registry(fh, 10, seed=5)
    os.environ["HEALTHID_DATA_DIR"] = str(settings.data_dir)
    try:
        assert CliRunner().invoke(main, ["registry", "import", str(reg)]).exit_code == 0
    finally:
        del os.environ["HEALTHID_DATA_DIR"]
    with TestClient(build_app(settings), base_url=IDP) as c:
        yield c


def ca(settings: Settings) -> TestEgkCa:
    return TestEgkCa.create(settings.data_dir / EGK_TEST_CA_DIR)


def card(settings: Settings, row: dict[str, str], **kw: object):
    return ca(settings).issue_card(
        row["kvnr"], row["ik"], row["given_name"], row["family_name"], **kw
    )  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b"{not json", 400, "not JSON"),
        (b"[1,2]", 400, "JSON object"),
        (b'{"certificate": 5, "signature": "AA"}', 400, "certificate must be"),
        (b'{"certificate": "%%%", "signature": "AA"}', 400, "base64url"),
        (b"x" * (200 * 1024), 400, "larger than"),
    ],
)
def test_egk_step_refuses_malformed_bodies(
    client: TestClient, body: bytes, status: int, needle: str
) -> None:
    start = client.post(f"{API}/enrolments").json()
    resp = client.post(
        f"{API}/enrolments/{start['enrolment_id']}/egk",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert resp.status_code == status
    assert needle in resp.json()["error_description"]
    assert resp.headers["cache-control"] == "no-store"


def test_expired_egk_certificate_is_refused(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    past = datetime.now(UTC) - timedelta(days=800)
    old = card(settings, ROWS[0], not_before=past, not_after=past + timedelta(days=365))
    with pytest.raises(WalletClientError) as info:
        WalletClient(IDP, tmp_path / "w", http=client, development=True).enroll_with_egk(old)
    assert info.value.status == 403 and "expired" in info.value.description


def test_card_signature_over_another_challenge_is_refused(
    client: TestClient, settings: Settings
) -> None:
    c = card(settings, ROWS[1])
    start = client.post(f"{API}/enrolments").json()
    resp = client.post(
        f"{API}/enrolments/{start['enrolment_id']}/egk",
        json={"certificate": b64e(c.certificate_der), "signature": b64e(c.sign(b"x" * 32))},
    )
    assert resp.status_code == 403


def spki_of(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _proven(client: TestClient, settings: Settings, row: dict[str, str]) -> tuple[str, bytes]:
    c = card(settings, row)
    start = client.post(f"{API}/enrolments").json()
    challenge = base64.urlsafe_b64decode(start["challenge"] + "==")
    resp = client.post(
        f"{API}/enrolments/{start['enrolment_id']}/egk",
        json={"certificate": b64e(c.certificate_der), "signature": b64e(c.sign(challenge))},
    )
    assert resp.status_code == 200, resp.text
    return start["enrolment_id"], challenge


def test_device_key_on_the_wrong_curve_is_refused(client: TestClient, settings: Settings) -> None:
    enrolment_id, _challenge = _proven(client, settings, ROWS[2])
    key = ec.generate_private_key(ec.SECP384R1())
    spki = spki_of(key)
    resp = client.post(
        f"{API}/enrolments/{enrolment_id}/device",
        json={
            "public_key": b64e(spki),
            "attestation_format": "healthid-software",
            "attestation": b64e(b"\xa0"),
        },
    )
    assert resp.status_code == 400 and "P-256" in resp.json()["error_description"]


def test_ten_megabyte_attestation_is_refused(client: TestClient, settings: Settings) -> None:
    enrolment_id, _ = _proven(client, settings, ROWS[3])
    key = ec.generate_private_key(ec.SECP256R1())
    spki = spki_of(key)
    resp = client.post(
        f"{API}/enrolments/{enrolment_id}/device",
        json={
            "public_key": b64e(spki),
            "attestation_format": "healthid-software",
            "attestation": b64e(os.urandom(10 * 1024 * 1024)),
        },
    )
    assert resp.status_code == 400 and "larger than" in resp.json()["error_description"]


def test_attestation_for_another_key_is_refused(client: TestClient, settings: Settings) -> None:
    from healthid.protocol.attestation import make_software_attestation

    enrolment_id, challenge = _proven(client, settings, ROWS[4])
    mine, theirs = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    spki = spki_of(mine)
    att = make_software_attestation(theirs, challenge, "de.healthid.wallet.dev")
    resp = client.post(
        f"{API}/enrolments/{enrolment_id}/device",
        json={
            "public_key": b64e(spki),
            "attestation_format": "healthid-software",
            "attestation": b64e(att),
        },
    )
    assert resp.status_code == 400 and "another key" in resp.json()["error_description"]


def test_unknown_attestation_format_is_refused(client: TestClient, settings: Settings) -> None:
    enrolment_id, _ = _proven(client, settings, ROWS[5])
    key = ec.generate_private_key(ec.SECP256R1())
    spki = spki_of(key)
    resp = client.post(
        f"{API}/enrolments/{enrolment_id}/device",
        json={
            "public_key": b64e(spki),
            "attestation_format": "android-key",
            "attestation": b64e(b"x"),
        },
    )
    assert resp.status_code == 400 and "not accepted" in resp.json()["error_description"]


def test_binding_without_proofing_is_refused(client: TestClient) -> None:
    start = client.post(f"{API}/enrolments").json()
    key = ec.generate_private_key(ec.SECP256R1())
    spki = spki_of(key)
    resp = client.post(
        f"{API}/enrolments/{start['enrolment_id']}/device",
        json={
            "public_key": b64e(spki),
            "attestation_format": "healthid-software",
            "attestation": b64e(b"x"),
        },
    )
    assert resp.status_code == 403 and "prove your identity" in resp.json()["error_description"]


def test_device_limit_per_person(client: TestClient, settings: Settings, tmp_path: Path) -> None:
    from healthid.host.wallet_service import MAX_DEVICES_PER_PERSON

    c = card(settings, ROWS[6])
    for i in range(MAX_DEVICES_PER_PERSON):
        WalletClient(IDP, tmp_path / f"d{i}", http=client, development=True).enroll_with_egk(c)
    with pytest.raises(WalletClientError) as info:
        WalletClient(IDP, tmp_path / "one-too-many", http=client, development=True).enroll_with_egk(
            c
        )
    assert info.value.status == 409
    # recovery still works: it replaces all devices
    WalletClient(IDP, tmp_path / "recovered", http=client, development=True).enroll_with_egk(
        c, replace_devices=True
    )


async def test_attacker_cannot_lock_the_owner_out(settings: Settings, client: TestClient) -> None:
    """Failed logins from the attacker's address throttle that address, not the owner."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    from healthid.host.wallet_service import TooManyRequests, Unauthorized
    from healthid.protocol import device_auth
    from healthid.protocol.attestation import make_software_attestation
    from healthid.runtime import open_runtime

    client.close()  # the service is driven directly below, with two client addresses
    rt = await open_runtime(settings)
    try:
        svc = rt.wallet_service()
        c = card(settings, ROWS[7])
        enrolment = await svc.start_enrolment(ip="198.51.100.7")
        await svc.prove_with_egk(
            enrolment.enrolment_id,
            certificate=c.certificate_der,
            signature=c.sign(enrolment.challenge),
            ip="198.51.100.7",
        )
        key = ec.generate_private_key(ec.SECP256R1())
        spki = spki_of(key)
        bound = await svc.bind_device(
            enrolment.enrolment_id,
            public_key=spki,
            attestation_format="healthid-software",
            attestation=make_software_attestation(key, enrolment.challenge, settings.wallet_app_id),
        )
        device = bound.device_id
        limit = WalletLimits().failed_auth_per_device_ip.limit
        for _ in range(limit):
            cid, _ = await svc.login_challenge(device, ip="203.0.113.9")
            with pytest.raises(Unauthorized):
                await svc.login(
                    challenge_id=cid,
                    device_id=device,
                    counter=7,
                    signature=os.urandom(64),
                    ip="203.0.113.9",
                )
        cid, _ = await svc.login_challenge(device, ip="203.0.113.9")
        with pytest.raises(TooManyRequests):
            await svc.login(
                challenge_id=cid,
                device_id=device,
                counter=7,
                signature=os.urandom(64),
                ip="203.0.113.9",
            )
        # the owner, from their own address, still logs in
        cid, challenge = await svc.login_challenge(device, ip="198.51.100.7")
        r, s_ = decode_dss_signature(
            key.sign(device_auth.message(challenge, device, 1), ec.ECDSA(hashes.SHA256()))
        )
        result = await svc.login(
            challenge_id=cid,
            device_id=device,
            counter=1,
            signature=r.to_bytes(32, "big") + s_.to_bytes(32, "big"),
            ip="198.51.100.7",
        )
        assert result.device_id == device
    finally:
        await rt.aclose()


def test_enrolment_starts_are_limited_per_address(settings: Settings, client: TestClient) -> None:
    limit = WalletLimits().enrolments_per_ip.limit
    codes = [client.post(f"{API}/enrolments").status_code for _ in range(limit + 1)]
    assert codes[:limit] == [201] * limit
    last = client.post(f"{API}/enrolments")
    assert last.status_code == 429 and int(last.headers["retry-after"]) > 0


def test_rate_limit_address_comes_from_x_forwarded_for_only_behind_a_trusted_proxy() -> None:
    from starlette.requests import Request

    from healthid.host.wallet_api import client_address

    def request(peer: str, forwarded: str | None) -> Request:
        headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
        return Request({"type": "http", "headers": headers, "client": (peer, 1234)})

    assert (
        client_address(request("127.0.0.1", "203.0.113.1, 198.51.100.2"), ["127.0.0.1"])
        == "198.51.100.2"
    )
    assert client_address(request("203.0.113.9", "198.51.100.2"), ["127.0.0.1"]) == "203.0.113.9"
    assert client_address(request("127.0.0.1", None), ["127.0.0.1"]) == "127.0.0.1"
    # what is not an address becomes one shared bucket per proxy, never part of a store key
    for garbage in ("evil host", "é", "1.2.3.4 5", "a" * 40):
        assert client_address(request("127.0.0.1", garbage), ["127.0.0.1"]) == (
            "invalid-forwarded-from-127.0.0.1"
        )
    assert client_address(request("127.0.0.1", "2001:DB8::1"), ["127.0.0.1"]) == "2001:db8::1"
