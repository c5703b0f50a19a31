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


# -- the OpenAPI document (src/healthid/host/wallet_openapi.json) ---------------------------
HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


def _documented_operations() -> set[tuple[str, str]]:
    import json

    from healthid.host.wallet_api import openapi_document

    document = json.loads(openapi_document())
    return {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def _wallet_routes(settings: Settings) -> set[tuple[str, str]]:
    """Every (method, path) the app serves under /wallet/ (HEAD comes with GET)."""
    from starlette.routing import Route

    from healthid.host.wallet_api import FALLBACK_PATH

    app = build_app(settings)  # the routes exist before the lifespan opens the stores
    return {
        (method, route.path)
        for route in app.routes
        if isinstance(route, Route)
        and route.path.startswith("/wallet/")
        and route.path != FALLBACK_PATH
        for method in route.methods or ()
        if method != "HEAD"
    }


def test_openapi_document_describes_every_wallet_route_and_no_other(settings: Settings) -> None:
    routes, documented = _wallet_routes(settings), _documented_operations()
    assert routes - documented == set(), "routes without documentation"
    assert documented - routes == set(), "documented operations without a route"


def test_openapi_document_is_valid_openapi_3_1() -> None:
    import json

    from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR

    from healthid.host.wallet_api import openapi_document

    document = json.loads(openapi_document())
    assert document["openapi"].startswith("3.1.")
    assert [str(e) for e in OPENAPI_31_VALIDATOR.iter_errors(document)] == []
    ids = [
        op["operationId"]
        for item in document["paths"].values()
        for method, op in item.items()
        if method in HTTP_METHODS
    ]
    assert len(ids) == len(set(ids))
    for path, item in document["paths"].items():  # fail closed: every API call may meet a 503
        for method, op in item.items():
            if method in HTTP_METHODS and path.startswith("/wallet/v1/"):
                assert "503" in op["responses"], (method, path)


def test_openapi_document_is_served_and_shipped(client: TestClient) -> None:
    from importlib.resources import files

    resp = client.get("/wallet/openapi.json")
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    assert resp.json()["info"]["title"] == "healthid wallet API"
    assert resp.content == files("healthid.host").joinpath("wallet_openapi.json").read_bytes()
    assert resp.headers["cache-control"] == "no-store"


def test_unknown_wallet_paths_and_methods_answer_json_errors(client: TestClient) -> None:
    """Found by schemathesis: the framework's plain-text 404 / 405 under /wallet/."""
    missing = client.get(f"{API}/no-such-thing/x%2Fy")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    wrong = client.put(f"{API}/devices")
    assert wrong.status_code == 405 and wrong.json()["error"] == "invalid_request"
    assert wrong.headers["allow"] == "GET, HEAD"
    consent = client.get(f"{API}/authorizations")  # a route of the OIDC module
    assert consent.status_code == 405 and consent.headers["allow"] == "POST"


@pytest.mark.parametrize("device_id", ["é" * 32, "A" * 32, "0" * 31, "0" * 33, 7])
def test_login_refuses_a_device_id_the_server_cannot_have_issued(
    client: TestClient, device_id: object
) -> None:
    """Was a 500 (a non-ASCII device id met secrets.compare_digest, which takes ASCII only)."""
    resp = client.post(f"{API}/auth/challenges", json={"device_id": device_id})
    assert resp.status_code == 400 and "device_id" in resp.json()["error_description"]
    issued = client.post(f"{API}/auth/challenges", json={"device_id": "0" * 32}).json()
    resp = client.post(
        f"{API}/auth/assertions",
        json={
            "challenge_id": issued["challenge_id"],
            "device_id": device_id,
            "counter": 1,
            "signature": "AA",
        },
    )
    assert resp.status_code == 400 and "device_id" in resp.json()["error_description"]


@pytest.mark.parametrize("challenge_id", ["a b", "é", "x" * 65, "", 5])
def test_login_refuses_a_challenge_id_that_is_no_store_key(
    client: TestClient, challenge_id: object
) -> None:
    """Was a 500 (InvalidKeyError from the ephemeral store: keys are printable ASCII)."""
    resp = client.post(
        f"{API}/auth/assertions",
        json={"challenge_id": challenge_id, "device_id": "0" * 32, "counter": 1, "signature": "AA"},
    )
    assert resp.status_code == 400 and "challenge_id" in resp.json()["error_description"]


@pytest.mark.parametrize(
    ("counter", "status"), [(7.0, 401), (2**63 - 1, 401), (2**63, 400), (1.5, 400), (True, 400)]
)
def test_login_counter_is_a_json_integer_that_fits_eight_octets(
    client: TestClient, counter: object, status: int
) -> None:
    """JSON Schema's integer (the OpenAPI document) includes 7.0; the counter is signed as 8
    octets, so a larger one is refused before the store is asked."""
    resp = client.post(
        f"{API}/auth/assertions",
        json={"challenge_id": "x", "device_id": "0" * 32, "counter": counter, "signature": "AA"},
    )
    assert resp.status_code == status, resp.text


@pytest.mark.parametrize("request_uri", ["é", "a b", "u" * 300])
def test_consent_with_an_unusable_request_uri_is_a_400(
    client: TestClient, request_uri: str
) -> None:
    """Was a 500 (InvalidKeyError) on the consent, the authorization and the token endpoint:
    a request_uri or code not of the form we issue is unknown without asking the store."""
    consent = client.post(
        f"{API}/authorizations",
        json={"client_id": "https://rp.example", "request_uri": request_uri},
    )
    assert consent.status_code == 400 and consent.json()["error"] == "invalid_request_uri"
    auth = client.get(
        f"{IDP}/auth", params={"client_id": "https://rp.example", "request_uri": request_uri}
    )
    assert auth.status_code == 400
    token = client.post(
        f"{IDP}/token",
        data={
            "grant_type": "authorization_code",
            "code": request_uri,
            "code_verifier": "v" * 43,
            "client_id": "https://rp.example",
            "redirect_uri": "https://rp.example/cb",
        },
    )
    # a code over the form's length limit is a bad request; a shorter unknown one, for a
    # client nobody vouches for, has the client refused first
    expected = (400, "invalid_request") if len(request_uri) > 255 else (401, "invalid_client")
    assert (token.status_code, token.json()["error"]) == expected
