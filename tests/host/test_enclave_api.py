"""GET /attestation (issue #5 item 3) and the host's answer when the enclave is gone."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from healthid.protocol.tee import SimulatedEvidenceRejectedError, TeePolicy
from healthid.runtime import build_app
from healthid.settings import load_settings
from healthid.wallet.tee_verify import verify_enclave

BASE = "http://testserver"
POLICY = TeePolicy(mrsigners=frozenset({b"\x01" * 32}), isv_prod_id=1)  # SGX only; unused here


def test_the_wallet_sdk_verifies_the_attestation_only_in_development(
    tmp_path: Path, clean_env: None
) -> None:
    with TestClient(build_app(load_settings(data_dir=tmp_path)), base_url=BASE) as client:
        verified = verify_enclave(client, BASE, policy=POLICY, development=True)
        assert verified.simulated and verified.key("audit") is not None
        with pytest.raises(SimulatedEvidenceRejectedError):
            verify_enclave(client, BASE, policy=POLICY)
        answer = client.get("/attestation", params={"nonce": "A" * 43})
        assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    "query",
    [
        "",
        "nonce=",
        "nonce=short",
        "nonce=" + "A" * 100,  # over 64 bytes
        "nonce=" + "A" * 42 + "%2B",  # not base64url
        "nonce=" + "A" * 43 + "&nonce=" + "A" * 43,  # twice
    ],
)
def test_a_bad_nonce_is_a_json_400(tmp_path: Path, clean_env: None, query: str) -> None:
    with TestClient(build_app(load_settings(data_dir=tmp_path)), base_url=BASE) as client:
        answer = client.get(f"/attestation?{query}")
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_request"


def test_without_the_enclave_process_the_host_answers_503_and_stays_up(
    tmp_path: Path, clean_env: None
) -> None:
    """HEALTHID_ENCLAVE_SOCKET names a socket nobody serves: every request that needs the
    enclave gets the protocol's temporary error, nothing is issued, the host keeps serving."""
    settings = load_settings(data_dir=tmp_path, enclave_socket=tmp_path / "gone.sock")
    with TestClient(build_app(settings), base_url=BASE) as client:
        nonce = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
        answer = client.get("/attestation", params={"nonce": nonce})
        assert answer.status_code == 503
        assert answer.json()["error"] == "temporarily_unavailable"
        assert "retry-after" in answer.headers
        started = client.post("/wallet/v1/enrolments").json()
        proof = client.post(
            f"/wallet/v1/enrolments/{started['enrolment_id']}/egk",
            json={"certificate": "AAAA", "signature": "AAAA"},
        )
        assert proof.status_code == 503 and proof.json()["error"] == "temporarily_unavailable"
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").json()["checks"]["enclave"] == "unavailable"
