"""Fail closed (issue #7 item 2): with Redis or the database gone, every route answers the
protocol's temporary error as JSON (503, Retry-After), never a bare 500, and issues nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

from healthid.runtime import build_app
from healthid.settings import load_settings

BASE = "http://testserver"
CLOSED = "127.0.0.1:1"  # nothing listens on port 1


def assert_temporarily_unavailable(status: int, body: dict[str, str], headers: dict[str, str]):
    assert status == 503
    assert body["error"] == "temporarily_unavailable"
    assert int(headers["retry-after"]) > 0


def test_without_redis_the_wallet_and_oidc_routes_fail_closed(
    tmp_path: Path, clean_env: None
) -> None:
    settings = load_settings(data_dir=tmp_path, redis_url=f"redis://{CLOSED}/0")
    app = build_app(settings)
    with TestClient(app, base_url=BASE, raise_server_exceptions=False) as client:
        for method, path, kwargs in [
            ("POST", "/wallet/v1/enrolments", {}),
            ("POST", "/wallet/v1/auth/challenges", {"json": {"device_id": "0" * 32}}),
            (
                "GET",
                "/wallet/v1/devices",
                {"headers": {"Authorization": f"Bearer {'0' * 32}.{'A' * 43}"}},
            ),
            ("GET", "/auth", {"params": {"client_id": "https://rp.example", "request_uri": "u"}}),
        ]:
            answer = client.request(method, path, **kwargs)
            if answer.status_code == 400:  # refused before Redis was needed: also fine
                continue
            (
                assert_temporarily_unavailable(
                    answer.status_code, answer.json(), dict(answer.headers)
                ),
                path,
            )
        assert client.get("/healthz").status_code == 200


def test_a_dropped_database_connection_gives_503_and_the_host_recovers(
    tmp_path: Path, clean_env: None, pg_url: str
) -> None:
    """The database server ends every session of the host (a restart, a failover): the request
    that meets the dead pooled connection gets 503 temporarily_unavailable, the pool is
    renewed, and the next request succeeds without a restart of the host."""
    settings = load_settings(data_dir=tmp_path, database_url=pg_url)
    app = build_app(settings)
    with TestClient(app, base_url=BASE, raise_server_exceptions=False) as client:
        assert client.get("/readyz").status_code == 200
        # break every pooled and future connection: terminate them and refuse new ones
        import asyncio

        import asyncpg

        dsn = pg_url.replace("postgresql+asyncpg://", "postgresql://")
        database = dsn.rsplit("/", 1)[1]

        async def cut() -> None:
            admin = await asyncpg.connect(dsn.rsplit("/", 1)[0] + "/postgres")
            try:
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = $1 AND pid <> pg_backend_pid()",
                    database,
                )
            finally:
                await admin.close()

        asyncio.run(cut())
        answer = client.get("/.well-known/openid-federation")
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"] == "temporarily_unavailable"
        # back without a restart
        assert client.get("/.well-known/openid-federation").status_code == 200


# -- the HSM (issue #7: "with the HSM/PKCS#11 token unavailable, no token is issued and an
# alert metric is raised; when it returns, service resumes without restart") ----------------
def _metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the Prometheus text format."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise AssertionError(f"no sample {name} {labels}")


def _tokens_dir(token: object) -> Path:
    conf: Path = token.conf  # type: ignore[attr-defined]
    return Path(
        next(
            line.split("=", 1)[1].strip()
            for line in conf.read_text().splitlines()
            if line.startswith("directories.tokendir")
        )
    )


@pytest.mark.softhsm
def test_with_the_hsm_gone_no_token_is_issued_an_alert_is_raised_and_service_resumes(
    tmp_path: Path, clean_env: None, softhsm_token: object
) -> None:
    """The ID token is signed inside the enclave through its token signer, by the PKCS#11 key
    store (SoftHSM2 here). The token directory moved away is the token pulled out of the HSM:
    the token request gets 503 temporarily_unavailable and no ID token, the signing-failure
    counter rises and the HSM's health gauge drops to 0; moved back, the next scrape and the
    next token request succeed in the same process."""
    import base64
    import hashlib
    import secrets
    import time
    from urllib.parse import parse_qs, urlsplit

    import pkcs11

    from healthid.demo.egk_test_ca import TestEgkCa
    from healthid.demo.synthetic import synthetic_rows
    from healthid.keys.pkcs11 import RECONNECT_INTERVAL
    from healthid.protocol.jose import decrypt_id_token
    from healthid.runtime import EGK_TEST_CA_DIR
    from healthid.wallet.client import WalletClient
    from rp_testlib import RP, FakeRp, StubResolver, token_form
    from stack_testlib import import_synthetic_registry

    t = softhsm_token
    settings = load_settings(
        data_dir=tmp_path / "data",
        enclave_workers=1,
        trusted_proxies=["testclient"],
        key_backend="pkcs11",
        pkcs11_module=t.module,  # type: ignore[attr-defined]
        pkcs11_token_label=t.label,  # type: ignore[attr-defined]
        pkcs11_pin=t.pin,  # type: ignore[attr-defined]
    )
    row = next(iter(synthetic_rows(2, seed=23)))
    rp = FakeRp()
    try:
        import_synthetic_registry(settings, 2, seed=23)
        app = build_app(settings, resolver=StubResolver(rp))
        with TestClient(app, base_url=BASE, raise_server_exceptions=False) as client:
            card = TestEgkCa.create(settings.data_dir / EGK_TEST_CA_DIR).issue_card(
                row["kvnr"], row["ik"], row["given_name"], row["family_name"]
            )
            wallet = WalletClient(BASE, tmp_path / "wallet", http=client, development=True)
            wallet.enroll_with_egk(card)

            def code() -> tuple[str, str]:
                verifier = secrets.token_urlsafe(48)
                challenge = (
                    base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
                    .rstrip(b"=")
                    .decode()
                )
                pushed = client.post(
                    "/PAR_Auth",
                    data={
                        "client_id": RP,
                        "state": "s",
                        "redirect_uri": "https://rp.example/callback",
                        "code_challenge": challenge,
                        "code_challenge_method": "S256",
                        "response_type": "code",
                        "nonce": "n",
                        "scope": "openid urn:telematik:versicherter",
                        "acr_values": "gematik-ehealth-loa-substantial",
                    },
                    headers=rp.cert_header(),
                )
                assert pushed.status_code == 201, pushed.text
                url = f"{BASE}/auth?client_id={RP}&request_uri={pushed.json()['request_uri']}"
                redirect = wallet.authorize(url, claims=[])
                return parse_qs(urlsplit(redirect).query)["code"][0], verifier

            metrics = client.get("/metrics").text
            assert _metric(metrics, "healthid_dependency_up", dependency="hsm") == 1.0
            assert _metric(metrics, "healthid_signing_failures_total", reason="unavailable") == 0.0

            tokens = _tokens_dir(t)
            away = tokens.with_name(tokens.name + "-away")
            first, verifier = code()
            tokens.rename(away)  # the token is pulled out
            try:
                answer = client.post(
                    "/token", data=token_form(first, verifier), headers=rp.cert_header()
                )
                assert_temporarily_unavailable(
                    answer.status_code, answer.json(), dict(answer.headers)
                )
                assert "id_token" not in answer.text
                metrics = client.get("/metrics").text
                assert _metric(metrics, "healthid_dependency_up", dependency="hsm") == 0.0
                assert (
                    _metric(metrics, "healthid_signing_failures_total", reason="unavailable") == 1.0
                )
                assert (
                    _metric(metrics, "healthid_temporarily_unavailable_total", route="/token")
                    == 1.0
                )
                ready = client.get("/readyz")  # degraded: enrolment and login still work
                assert ready.status_code == 200
                assert ready.json()["status"] == "degraded"
                assert ready.json()["checks"]["hsm"] == "unavailable"
                assert client.get("/healthz").status_code == 200  # alive: no restart wanted
            finally:
                away.rename(tokens)  # ... and put back

            time.sleep(RECONNECT_INTERVAL)  # the store tries again after this
            metrics = client.get("/metrics").text  # the scrape's probe reconnects
            assert _metric(metrics, "healthid_dependency_up", dependency="hsm") == 1.0
            assert client.get("/readyz").json()["status"] == "ready"
            # nothing was issued for the first code, and it stays spent
            spent = client.post(
                "/token", data=token_form(first, verifier), headers=rp.cert_header()
            )
            assert spent.status_code == 400 and spent.json()["error"] == "invalid_grant"
            second, verifier = code()
            issued = client.post(
                "/token", data=token_form(second, verifier), headers=rp.cert_header()
            )
            assert issued.status_code == 200, issued.text
            assert decrypt_id_token(issued.json()["id_token"], private_key=rp.enc_key)
    finally:
        pkcs11.unload(str(t.module))  # type: ignore[attr-defined]


def test_with_the_audit_backlog_full_requests_fail_closed(
    tmp_path: Path, clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the database has not taken the audit trail for so long that 50,000 events wait,
    an event can no longer be queued: the request that would record one answers 503
    temporarily_unavailable (JSON, Retry-After), not a 500."""
    from healthid.store.sql.audit import AuditBacklogFull, AuditLog

    def full(self: AuditLog, event: object) -> None:
        raise AuditBacklogFull("50000 audit events wait for the database")

    app = build_app(load_settings(data_dir=tmp_path))
    with TestClient(app, base_url=BASE, raise_server_exceptions=False) as client:
        refused = client.post("/token", data={"grant_type": "authorization_code"})
        assert refused.status_code == 400  # the refusal is recorded as usual
        monkeypatch.setattr(AuditLog, "append", full)
        answer = client.post("/token", data={"grant_type": "authorization_code"})
        assert_temporarily_unavailable(answer.status_code, answer.json(), dict(answer.headers))
