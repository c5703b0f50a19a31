"""Security checklist §B5 "Process restart mid-flow": the flow state (PAR, code, PKCE) lives
in the ephemeral store with a TTL, so a new process on the same PostgreSQL + Redis and data
directory completes an authorization another process began. With the embedded in-memory
store the restart loses that state, and the flow fails cleanly: an OAuth JSON error, never a
500, and nothing is issued.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from faults_testlib import (
    IDP,
    code_of,
    consent,
    enrolled_wallet,
    push,
    redeem,
    rp_accepts,
    rp_fetches_idp,
)
from starlette.testclient import TestClient

from healthid.demo.synthetic import synthetic_rows
from healthid.runtime import build_app
from healthid.settings import Settings
from healthid.wallet.client import WalletClient
from rp_testlib import FakeRp, StubResolver, pkce
from stack_testlib import BACKENDS, import_synthetic_registry, settings_for

ROWS = list(synthetic_rows(3, seed=29))


@pytest.fixture(params=BACKENDS)
def settings(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    return settings_for(request, tmp_path, monkeypatch, trusted_proxies=["testclient"])


def instance(settings: Settings, rp: FakeRp) -> TestClient:
    """A new process of the IdP: its own app, runtime, enclave and (embedded) memory store."""
    return TestClient(
        build_app(settings, resolver=StubResolver(rp)),
        base_url=IDP,
        raise_server_exceptions=False,
    )


def durable(settings: Settings) -> bool:
    return settings.redis_url is not None


@pytest.mark.parametrize("restart", ["after_par", "after_consent"])
def test_a_restart_mid_flow_is_invisible_with_redis_or_fails_cleanly(
    settings: Settings, tmp_path: Path, restart: str
) -> None:
    import_synthetic_registry(settings, 3, seed=29)
    rp = FakeRp()
    wallet_dir = tmp_path / "wallet"
    verifier, challenge = pkce()
    code = None
    with instance(settings, rp) as first:
        enrolled_wallet(first, settings, wallet_dir, ROWS[0])
        status, body = push(first, rp, challenge)
        assert status == 201, body
        request_uri = body["request_uri"]
        if restart == "after_consent":
            wallet = WalletClient(IDP, wallet_dir, http=first, development=True)
            status, body = consent(first, wallet, request_uri)
            assert status == 200, body
            code = code_of(body["redirect"])
    # the first process is gone (lifespan shut down: its memory store and enclave closed)

    with instance(settings, rp) as second:
        wallet = WalletClient(IDP, wallet_dir, http=second, development=True)
        if code is None:
            status, body = consent(second, wallet, request_uri)
            if not durable(settings):
                # the PAR is unknown here: rendered as a JSON error (no redirect_uri is known
                # to be the client's), RFC 9126 §2.2 / RFC 6749 §4.1.2.1
                assert status == 400, body
                assert body["error"] in {"invalid_request", "invalid_request_uri"}, body
                assert "redirect" not in body
                return
            assert status == 200, body
            code = code_of(body["redirect"])

        status, body = redeem(second, rp, code, verifier)
        if not durable(settings):
            assert status == 400, body  # RFC 6749 §5.2: an unknown code
            assert body["error"] == "invalid_grant" and "id_token" not in body
            return
        assert status == 200, body
        now = int(time.time())
        claims = rp_accepts(
            rp_fetches_idp(second, settings, now=now), body["id_token"], rp, now=now
        )
        assert claims["urn:telematik:claims:id"] == ROWS[0]["kvnr"]
        # and the code stays single use across processes
        again_status, again = redeem(second, rp, code, verifier)
        assert again_status == 400 and again["error"] == "invalid_grant"


def test_a_code_redeemed_before_a_restart_is_spent_after_it(
    settings: Settings, tmp_path: Path
) -> None:
    """The single use of a code survives a restart too (with Redis: consumed atomically in
    the shared store; embedded: gone with the process)."""
    import_synthetic_registry(settings, 3, seed=29)
    rp = FakeRp()
    verifier, challenge = pkce()
    with instance(settings, rp) as first:
        wallet = enrolled_wallet(first, settings, tmp_path / "wallet", ROWS[1])
        status, body = push(first, rp, challenge)
        status, body = consent(first, wallet, body["request_uri"])
        code = code_of(body["redirect"])
        status, body = redeem(first, rp, code, verifier)
        assert status == 200, body
    with instance(settings, rp) as second:
        status, body = redeem(second, rp, code, verifier)
    assert status == 400 and body["error"] == "invalid_grant", body
