"""The sectoral IdP flow end to end (issue #4): PAR over mTLS, the insurer app's consent with a
device-key login, the code, the token request, and the RP decrypting and verifying the ID token.

The relying party's trust chain is resolved by a stub here (the federation resolver has its
own tests); everything else is the real app on SQLite and on PostgreSQL + Redis.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from cryptography.hazmat.primitives import serialization
from starlette.testclient import TestClient

from healthid.demo.egk_test_ca import TestEgkCa
from healthid.demo.synthetic import synthetic_rows
from healthid.protocol.audit import AuditEntry, AuditEvent
from healthid.protocol.jose import decrypt_id_token, verify_compact
from healthid.protocol.jose.jws import TYP_ID_TOKEN, TYP_SIGNED_JWKS
from healthid.runtime import EGK_TEST_CA_DIR, build_app, open_runtime
from healthid.settings import Settings
from healthid.wallet.client import WalletClient

IDP = "http://testserver"
from rp_testlib import (  # noqa: E402
    REDIRECT,
    RP,
    FakeRp,
    StubResolver,
    par_form,
    pkce,
    token_form,
)
from stack_testlib import import_synthetic_registry, settings_for  # noqa: E402

ROWS = list(synthetic_rows(6, seed=17))


@pytest.fixture(params=["embedded", "postgres+redis"])
def settings(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    return settings_for(request, tmp_path, monkeypatch, trusted_proxies=["testclient"])


@pytest.fixture
def rp() -> FakeRp:
    return FakeRp()


@pytest.fixture
def client(settings: Settings, rp: FakeRp) -> Iterator[TestClient]:
    import_synthetic_registry(settings, 6, seed=17)
    with TestClient(build_app(settings, resolver=StubResolver(rp)), base_url=IDP) as c:
        yield c


def enrolled_wallet(
    client: TestClient, settings: Settings, tmp_path: Path, row: dict[str, str]
) -> WalletClient:
    card = TestEgkCa.create(settings.data_dir / EGK_TEST_CA_DIR).issue_card(
        row["kvnr"], row["ik"], row["given_name"], row["family_name"]
    )
    wallet = WalletClient(IDP, tmp_path / f"w-{row['kvnr']}", http=client, development=True)
    wallet.enroll_with_egk(card)
    return wallet


def test_full_flow_issues_an_encrypted_id_token_the_rp_can_verify(
    client: TestClient, settings: Settings, rp: FakeRp, tmp_path: Path
) -> None:
    person = ROWS[1]
    wallet = enrolled_wallet(client, settings, tmp_path, person)
    verifier, challenge = pkce()
    pushed = client.post(f"{IDP}/PAR_Auth", data=par_form(challenge), headers=rp.cert_header())
    assert pushed.status_code == 201, pushed.text
    assert pushed.headers["cache-control"] == "no-store"
    request_uri = pushed.json()["request_uri"]
    assert pushed.json()["expires_in"] == 90

    claims = client.get(
        f"{IDP}/auth", params={"client_id": RP, "request_uri": request_uri, "app_version": "1"}
    ).json()
    assert "urn:telematik:claims:id" in claims["requested_optional_claims"] + claims.get(
        "requested_essential_claims", []
    )

    session = wallet.login().session
    chosen = ["urn:telematik:claims:id", "urn:telematik:claims:display_name"]
    consent = client.post(
        f"{IDP}/wallet/v1/authorizations",
        json={"client_id": RP, "request_uri": request_uri, "selected_claims": chosen},
        headers={"Authorization": f"Bearer {session}"},
    )
    assert consent.status_code == 200, consent.text
    location = urlsplit(consent.json()["redirect"])
    query = parse_qs(location.query)
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    assert query["state"] == ["st-123"]
    code = query["code"][0]

    form = token_form(code, verifier)
    issued = client.post(f"{IDP}/token", data=form, headers=rp.cert_header())
    assert issued.status_code == 200, issued.text
    body = issued.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 300

    # the RP: decrypt with its enc key, verify with the IdP's signed JWKS
    config_jwt = client.get(f"{IDP}/.well-known/openid-federation").text
    config_claims = json.loads(base64.urlsafe_b64decode(config_jwt.split(".")[1] + "=="))
    signed_jwks = verify_compact(
        client.get(f"{IDP}/jws.json").text, jwks=config_claims["jwks"], typ=TYP_SIGNED_JWKS
    )
    inner = decrypt_id_token(body["id_token"], private_key=rp.enc_key)
    token = verify_compact(
        inner, jwks={"keys": signed_jwks.claims["keys"]}, typ=TYP_ID_TOKEN
    ).claims
    assert token["aud"] == RP and token["nonce"] == "n-456"
    assert token["iss"] == settings.public_url == config_claims["iss"]
    assert token["exp"] - token["iat"] == 300
    assert token["urn:telematik:claims:id"] == person["kvnr"]
    assert (
        token["urn:telematik:claims:display_name"]
        == f"{person['given_name']} {person['family_name']}"
    )
    assert "urn:telematik:claims:alter" not in token  # requested but not consented
    assert token["acr"] == "gematik-ehealth-loa-substantial" and isinstance(token["amr"], list)
    assert person["kvnr"] not in token["sub"]

    # the code is single use
    again = client.post(f"{IDP}/token", data=form, headers=rp.cert_header())
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_pairwise_sub_is_stable_per_rp(
    client: TestClient, settings: Settings, rp: FakeRp, tmp_path: Path
) -> None:
    wallet = enrolled_wallet(client, settings, tmp_path, ROWS[2])
    subs = []
    for _ in range(2):
        verifier, challenge = pkce()
        request_uri = client.post(
            f"{IDP}/PAR_Auth", data=par_form(challenge), headers=rp.cert_header()
        ).json()["request_uri"]
        session = wallet.login().session
        location = client.post(
            f"{IDP}/wallet/v1/authorizations",
            json={"client_id": RP, "request_uri": request_uri, "selected_claims": []},
            headers={"Authorization": f"Bearer {session}"},
        ).json()["redirect"]
        code = parse_qs(urlsplit(location).query)["code"][0]
        body = client.post(
            f"{IDP}/token",
            data=token_form(code, verifier),
            headers=rp.cert_header(),
        ).json()
        token = json.loads(
            base64.urlsafe_b64decode(
                decrypt_id_token(body["id_token"], private_key=rp.enc_key).split(".")[1] + "=="
            )
        )
        subs.append(token["sub"])
    assert subs[0] == subs[1]


def test_par_without_the_registered_client_certificate_is_refused(
    client: TestClient, rp: FakeRp
) -> None:
    _, challenge = pkce()
    other = FakeRp()
    resp = client.post(f"{IDP}/PAR_Auth", data=par_form(challenge), headers=other.cert_header())
    assert resp.status_code == 401 and resp.json()["error"] == "unauthorized_client"
    missing = client.post(f"{IDP}/PAR_Auth", data=par_form(challenge))
    assert missing.status_code == 400


def test_par_refuses_plain_pkce_and_unknown_clients(client: TestClient, rp: FakeRp) -> None:
    _, challenge = pkce()
    plain = client.post(
        f"{IDP}/PAR_Auth",
        data=par_form(challenge, code_challenge_method="plain"),
        headers=rp.cert_header(),
    )
    assert plain.status_code == 400 and plain.json()["error"] == "invalid_request"
    stranger = client.post(
        f"{IDP}/PAR_Auth",
        data={**par_form(challenge), "client_id": "https://evil.example"},
        headers=rp.cert_header(),
    )
    assert stranger.status_code in (400, 401) and stranger.json()["error"] in (
        "invalid_client",
        "invalid_request",
    )


def test_consent_without_a_device_login_is_redirected_as_access_denied(
    client: TestClient, rp: FakeRp
) -> None:
    _, challenge = pkce()
    request_uri = client.post(
        f"{IDP}/PAR_Auth", data=par_form(challenge), headers=rp.cert_header()
    ).json()["request_uri"]
    resp = client.post(
        f"{IDP}/wallet/v1/authorizations",
        json={"client_id": RP, "request_uri": request_uri, "selected_claims": []},
    )
    assert resp.status_code == 200
    query = parse_qs(urlsplit(resp.json()["redirect"]).query)
    assert query["error"] == ["access_denied"] and query["state"] == ["st-123"]


def test_client_certificate_header_from_an_untrusted_address_is_ignored(
    settings: Settings, rp: FakeRp, tmp_path: Path
) -> None:
    from healthid.host.oidc_service import client_certificate

    pem = quote(rp.tls_cert.public_bytes(serialization.Encoding.PEM).decode())
    assert client_certificate({"x-ssl-cert": pem}, "203.0.113.5", ["127.0.0.1"]) is None
    assert client_certificate({"x-ssl-cert": pem}, "127.0.0.1", ["127.0.0.1"]) is not None


def test_wallet_authorize_plays_the_insurer_app_for_an_authorization_url(
    client: TestClient, settings: Settings, rp: FakeRp, tmp_path: Path
) -> None:
    wallet = enrolled_wallet(client, settings, tmp_path, ROWS[3])
    _, challenge = pkce()
    request_uri = client.post(
        f"{IDP}/PAR_Auth", data=par_form(challenge), headers=rp.cert_header()
    ).json()["request_uri"]
    url = f"{IDP}/auth?client_id={quote(RP, safe='')}&request_uri={quote(request_uri, safe='')}"
    location = wallet.authorize(url, claims=["urn:telematik:claims:id"])
    query = parse_qs(urlsplit(location).query)
    assert (
        location.startswith(REDIRECT)
        and query["state"] == ["st-123"]
        and len(query["code"][0]) >= 32
    )
    # the request_uri is spent: the same URL cannot be authorised twice
    from healthid.wallet.client import WalletClientError

    with pytest.raises(WalletClientError):
        wallet.authorize(url)


def _id_token_for(
    client: TestClient, rp: FakeRp, wallet: WalletClient, form_extra: dict[str, str]
) -> dict[str, object] | list[str]:
    verifier, challenge = pkce()
    request_uri = client.post(
        f"{IDP}/PAR_Auth", data=par_form(challenge, **form_extra), headers=rp.cert_header()
    ).json()["request_uri"]
    session = wallet.login().session
    location = client.post(
        f"{IDP}/wallet/v1/authorizations",
        json={"client_id": RP, "request_uri": request_uri, "selected_claims": []},
        headers={"Authorization": f"Bearer {session}"},
    ).json()["redirect"]
    query = parse_qs(urlsplit(location).query)
    if "error" in query:
        return query["error"]
    body = client.post(
        f"{IDP}/token",
        data=token_form(query["code"][0], verifier),
        headers=rp.cert_header(),
    ).json()
    return dict(
        json.loads(
            base64.urlsafe_b64decode(
                decrypt_id_token(body["id_token"], private_key=rp.enc_key).split(".")[1] + "=="
            )
        )
    )


def test_an_older_device_login_outside_the_sso_window_is_refused(
    client: TestClient,
    settings: Settings,
    rp: FakeRp,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import healthid.host.oidc_service as oidc

    wallet = enrolled_wallet(client, settings, tmp_path, ROWS[4])
    monkeypatch.setattr(oidc, "FRESH_LOGIN_SECONDS", -1)  # every login counts as older
    assert _id_token_for(client, rp, wallet, {}) == ["access_denied"]  # sso_window = 0: off


@pytest.mark.parametrize("settings", ["embedded"], indirect=True)
def test_single_sign_on_is_reported_per_id_token_version(
    settings: Settings, rp: FakeRp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import healthid.host.oidc_service as oidc

    sso = settings.model_copy(update={"sso_window": 600})
    with TestClient(build_app(sso, resolver=StubResolver(rp)), base_url=IDP) as client:
        import_synthetic_registry(sso, 6, seed=17)
        wallet = enrolled_wallet(client, sso, tmp_path, ROWS[5])
        monkeypatch.setattr(oidc, "FRESH_LOGIN_SECONDS", -1)
        v1 = _id_token_for(client, rp, wallet, {})
        assert isinstance(v1, dict)
        # the RP supports 1.0.0 and 2.0.0: the highest common version is 2.0.0
        assert (
            v1["amr"] == ["urn:telematik:auth:other"]
            and v1["urn:telematik:auth:interactive"] == "silent"
        )


def test_authorization_consent_and_token_are_audited(
    settings: Settings, rp: FakeRp, tmp_path: Path
) -> None:
    """PAR, consent and the token endpoint's answers, good and bad, reach the audit trail
    with the relying party and the pseudonym (never the person's data)."""
    import_synthetic_registry(settings, 6, seed=17)
    with TestClient(build_app(settings, resolver=StubResolver(rp)), base_url=IDP) as c:
        wallet = enrolled_wallet(c, settings, tmp_path, ROWS[2])
        claims = _id_token_for(c, rp, wallet, {})
        assert isinstance(claims, dict)
        refused = c.post(  # a code that was never issued
            f"{IDP}/token",
            data=token_form("x" * 43, "v" * 43),
            headers=rp.cert_header(),
        )
        assert refused.status_code == 400
        unknown = c.post(f"{IDP}/PAR_Auth", data=par_form("c" * 43), headers={})  # no cert
        assert unknown.status_code in (400, 401)

    async def events() -> list[AuditEvent]:
        rt = await open_runtime(settings, migrate=False)
        try:
            return [i.event for i in await rt.audit.read() if isinstance(i, AuditEntry)]
        finally:
            await rt.aclose()

    recorded = asyncio.run(events())
    by_kind = {(e.kind.value, e.outcome.value): e for e in recorded}
    consent = by_kind[("consent", "success")]
    token = by_kind[("token_request", "success")]
    assert consent.client_id == token.client_id == RP
    assert consent.actor is not None and consent.actor == token.actor  # the pseudonym
    assert token.details["acr"] == "gematik-ehealth-loa-substantial"
    assert by_kind[("token_request", "failure")].details["error"] == "invalid_grant"
    assert by_kind[("authorization_request", "failure")].client_id == RP  # a refused PAR
    assert ROWS[2]["kvnr"] not in repr(recorded)
