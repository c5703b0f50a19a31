"""Several workers (issue #7 item 3): the host keeps no state between requests, so one flow
whose consecutive requests land on different workers completes; `healthid serve --workers N`
starts N workers on one socket."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from starlette.testclient import TestClient
from test_oidc_flow import IDP, ROWS, enrolled_wallet, par_form, pkce

from healthid.protocol import device_auth
from healthid.protocol.jose import decrypt_id_token
from healthid.runtime import build_app
from healthid.settings import Settings
from healthid.wallet.client import b64d, b64e
from rp_testlib import RP, FakeRp, StubResolver, token_form
from stack_testlib import import_synthetic_registry, settings_for


@pytest.fixture(params=["postgres+redis"])  # workers share state only there
def settings(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    return settings_for(request, tmp_path, monkeypatch, trusted_proxies=["testclient"])


@pytest.mark.redis
def test_one_flow_alternating_between_two_workers(settings: Settings, tmp_path: Path) -> None:
    """Two independent app instances (two workers: own stores, caches, enclave) on one
    PostgreSQL + Redis; every step of the flow goes to the other one."""
    rp = FakeRp()
    import_synthetic_registry(settings, 6, seed=17)
    person = ROWS[4]
    with (
        TestClient(build_app(settings, resolver=StubResolver(rp)), base_url=IDP) as a,
        TestClient(build_app(settings, resolver=StubResolver(rp)), base_url=IDP) as b,
    ):
        wallet = enrolled_wallet(a, settings, tmp_path, person)
        verifier, challenge = pkce()
        request_uri = a.post(
            f"{IDP}/PAR_Auth", data=par_form(challenge), headers=rp.cert_header()
        ).json()["request_uri"]
        shown = b.get(
            f"{IDP}/auth", params={"client_id": RP, "request_uri": request_uri, "app_version": "1"}
        )
        assert shown.status_code == 200, shown.text
        state = wallet.state()
        device_id, counter = state["device_id"], int(state["counter"]) + 1
        issued = a.post(f"{IDP}/wallet/v1/auth/challenges", json={"device_id": device_id}).json()
        signed = device_auth.message(b64d(issued["challenge"]), device_id, counter)
        login = b.post(
            f"{IDP}/wallet/v1/auth/assertions",
            json={
                "challenge_id": issued["challenge_id"],
                "device_id": device_id,
                "counter": counter,
                "signature": b64e(wallet._sign(signed)),
            },
        )
        assert login.status_code == 200, login.text
        consent = a.post(
            f"{IDP}/wallet/v1/authorizations",
            json={
                "client_id": RP,
                "request_uri": request_uri,
                "selected_claims": ["urn:telematik:claims:id"],
            },
            headers={"Authorization": f"Bearer {login.json()['session']}"},
        )
        assert consent.status_code == 200, consent.text
        code = parse_qs(urlsplit(consent.json()["redirect"]).query)["code"][0]
        token = b.post(
            f"{IDP}/token",
            data=token_form(code, verifier),
            headers=rp.cert_header(),
        )
        assert token.status_code == 200, token.text
        inner = decrypt_id_token(token.json()["id_token"], private_key=rp.enc_key)
        claims = json.loads(base64.urlsafe_b64decode(inner.split(".")[1] + "=="))
        assert claims["urn:telematik:claims:id"] == person["kvnr"]
        # and the code is spent for both workers
        again = a.post(
            f"{IDP}/token",
            data=token_form(code, verifier),
            headers=rp.cert_header(),
        )
        assert again.status_code == 400


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry.name))
    return out


def _cmdline(pid: int) -> bytes:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes()
    except OSError:
        return b""


@pytest.mark.redis
@pytest.mark.postgres
def test_serve_starts_the_workers_it_is_asked_for(
    tmp_path: Path, pg_url: str, redis_url: str, redis_prefix: str
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEALTHID_")}
    env |= {
        "HEALTHID_DATA_DIR": str(tmp_path / "data"),
        "HEALTHID_DATABASE_URL": pg_url,
        "HEALTHID_REDIS_URL": redis_url,
        "HEALTHID_REDIS_PREFIX": redis_prefix,
        "HEALTHID_ENCLAVE_WORKERS": "1",
    }
    serve = subprocess.Popen(
        [sys.executable, "-m", "healthid.cli", "serve", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert serve.poll() is None, serve.stderr.read().decode() if serve.stderr else ""
            assert time.monotonic() < deadline, "healthid serve --workers 2 did not get ready"
            time.sleep(0.2)
        workers = [p for p in _children(serve.pid) if b"spawn_main" in _cmdline(p)]
        assert len(workers) == 2  # uvicorn's supervisor with its two worker processes
        # a fresh connection each time: the kernel hands them to either worker
        for _ in range(10):
            assert httpx.get(f"http://127.0.0.1:{port}/status", timeout=5).status_code == 200
    finally:
        serve.terminate()
        serve.wait(30)
        if serve.stderr is not None:
            serve.stderr.close()


def test_more_than_one_worker_needs_redis(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from healthid.cli import main

    result = CliRunner().invoke(
        main, ["serve", "--workers", "2"], env={"HEALTHID_DATA_DIR": str(tmp_path)}
    )
    assert result.exit_code == 2 and "needs HEALTHID_REDIS_URL" in result.output
