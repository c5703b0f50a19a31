"""``healthid attest verify`` (click's runner) and the wallet's fetch-and-verify behind --url."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import ec

from healthid import attest_cli
from healthid.attest_cli import attest
from healthid.enclave.attestation import SimulatedEvidence, make_attestation_document
from healthid.protocol.tee import (
    MAX_DOCUMENT_BYTES,
    NonceMismatchError,
    SimulatedEvidenceRejectedError,
    TeePolicy,
)
from healthid.wallet.tee_verify import (
    AttestationFetchError,
    fetch_attestation_document,
    verify_enclave,
)

VECTORS = Path(__file__).parent / "protocol" / "tee" / "vectors"
SAMPLE_NOW = datetime(2025, 6, 19, 11, 56, tzinfo=UTC)
NOW_TEXT = "2025-06-19T11:56:00Z"
NONCE = bytes(range(16, 48))
IDENTITY = ec.derive_private_key(5, ec.SECP256R1()).public_key()  # TEST key
SAMPLE_MRENCLAVE = "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
POLICY = TeePolicy.from_dict({"mrenclave": [SAMPLE_MRENCLAVE]})


def b64u(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def simulated_doc(nonce: bytes = NONCE, now: datetime = SAMPLE_NOW) -> bytes:
    return make_attestation_document(
        keys={"identity": IDENTITY}, nonce=nonce, provider=SimulatedEvidence(), now=now
    ).to_json()


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "policy.json").write_text(json.dumps({"mrenclave": [SAMPLE_MRENCLAVE]}))
    (tmp_path / "simulated.json").write_bytes(simulated_doc())
    return tmp_path


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(attest, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_group_is_named_attest_and_lists_verify() -> None:
    assert attest.name == "attest"
    code, out, _ = run("--help")
    assert code == 0 and "verify" in out


def test_simulated_document_verifies_with_dev(files: Path) -> None:
    code, out, err = run(
        "verify",
        "--file",
        str(files / "simulated.json"),
        "--policy",
        str(files / "policy.json"),
        "--now",
        NOW_TEXT,
        "--nonce",
        b64u(NONCE),
        "--dev",
    )
    assert code == 0, err
    assert "VERIFIED (SIMULATED)" in out
    assert "no hardware protection" in out
    assert "key identity: EC P-256 (sig)" in out
    assert "--dev" in err


def test_simulated_document_is_refused_without_dev(files: Path) -> None:
    code, out, err = run(
        "verify",
        "--file",
        str(files / "simulated.json"),
        "--policy",
        str(files / "policy.json"),
        "--now",
        NOW_TEXT,
    )
    assert code == 1
    assert "REFUSED (simulated_rejected)" in err
    assert "VERIFIED" not in out


def test_wrong_nonce_is_refused(files: Path) -> None:
    code, _, err = run(
        "verify",
        "--file",
        str(files / "simulated.json"),
        "--policy",
        str(files / "policy.json"),
        "--now",
        NOW_TEXT,
        "--nonce",
        b64u(bytes(32)),
        "--dev",
    )
    assert code == 1
    assert "REFUSED (nonce_mismatch)" in err


def test_file_without_nonce_warns_that_freshness_is_unchecked(files: Path) -> None:
    code, _, err = run(
        "verify",
        "--file",
        str(files / "simulated.json"),
        "--policy",
        str(files / "policy.json"),
        "--now",
        NOW_TEXT,
        "--dev",
    )
    assert code == 0
    assert "freshness is NOT checked" in err


def test_stale_document_is_refused(files: Path) -> None:
    later = (SAMPLE_NOW + timedelta(hours=1)).isoformat()
    code, _, err = run(
        "verify",
        "--file",
        str(files / "simulated.json"),
        "--policy",
        str(files / "policy.json"),
        "--now",
        later,
        "--dev",
    )
    assert code == 1 and "REFUSED (stale)" in err


def test_real_quote_passes_the_quote_checks_and_fails_the_binding(files: Path) -> None:
    """The Intel sample quote with foreign claims: genuine enclave, wrong report data."""
    doc = json.loads(simulated_doc())
    doc["claims"]["tee"] = "sgx"
    doc["evidence_type"] = "sgx-dcap"
    doc["evidence"] = b64u((VECTORS / "sgx_quote").read_bytes())
    (files / "sgx.json").write_text(json.dumps(doc))
    common = ["verify", "--file", str(files / "sgx.json"), "--policy", str(files / "policy.json")]
    collateral = ["--collateral", str(VECTORS / "sgx_quote_collateral.json")]
    code, _, err = run(*common, *collateral, "--now", NOW_TEXT)
    assert code == 1 and "REFUSED (report_data_mismatch)" in err
    code, _, err = run(*common, *collateral, "--now", "2026-06-01T00:00:00+00:00")
    assert code == 1 and "REFUSED (quote_invalid)" in err
    code, _, err = run(*common, "--now", NOW_TEXT)
    assert code == 1 and "REFUSED (collateral_missing)" in err


def test_exactly_one_source(files: Path) -> None:
    policy = ["--policy", str(files / "policy.json")]
    code, _, err = run("verify", *policy)
    assert code == 2 and "exactly one" in err
    code, _, _ = run("verify", *policy, "--url", "http://x", "--file", str(files / "x"))
    assert code == 2


def test_bad_policy_is_a_usage_error(files: Path) -> None:
    (files / "bad.json").write_text(json.dumps({"mrenclave": ["00"]}))
    code, _, err = run(
        "verify", "--file", str(files / "simulated.json"), "--policy", str(files / "bad.json")
    )
    assert code == 2 and "policy" in err


def test_missing_files_and_bad_arguments_are_usage_errors(files: Path) -> None:
    policy = ["--policy", str(files / "policy.json")]
    doc = ["--file", str(files / "simulated.json")]
    assert run("verify", "--file", str(files / "nope.json"), *policy)[0] == 2
    assert run("verify", *doc, "--policy", str(files / "nope.json"))[0] == 2
    assert run("verify", *doc, *policy, "--now", "yesterday")[0] == 2
    assert run("verify", *doc, *policy, "--nonce", "a+b")[0] == 2
    assert run("verify", *doc, *policy, "--nonce", b64u(b"short"), "--dev")[0] == 2
    (files / "coll.json").write_text("{}")
    assert run("verify", *doc, *policy, "--collateral", str(files / "coll.json"))[0] == 2


# -- --url: the wallet's fetch and verify -------------------------------------------------------
Handler = Callable[[httpx.Request], httpx.Response]


def enclave_host(now: datetime = SAMPLE_NOW) -> Handler:
    """A host serving GET /attestation?nonce= from a simulated enclave."""

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path != "/attestation":
            return httpx.Response(404)
        nonce = base64.urlsafe_b64decode(request.url.params["nonce"] + "==")
        return httpx.Response(200, content=simulated_doc(nonce, now))

    return handle


def client(handler: Handler) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(handler))


def test_url_fetches_with_a_fresh_nonce_and_verifies(
    files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(attest_cli, "_http_client", lambda: client(enclave_host()))
    args = ["verify", "--url", "http://idp.test/", "--policy", str(files / "policy.json")]
    code, out, _ = run(*args, "--now", NOW_TEXT, "--dev")
    assert code == 0 and "VERIFIED (SIMULATED)" in out
    code, _, err = run(*args, "--now", NOW_TEXT)
    assert code == 1 and "simulated_rejected" in err


def test_url_http_error_is_a_refusal(files: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(attest_cli, "_http_client", lambda: client(lambda r: httpx.Response(503)))
    code, _, err = run(
        "verify", "--url", "http://idp.test", "--policy", str(files / "policy.json"), "--dev"
    )
    assert code == 1 and "HTTP 503" in err


def test_wallet_verify_enclave_sends_its_nonce() -> None:
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.params["nonce"])
        return enclave_host()(request)

    with client(handle) as http:
        result = verify_enclave(
            http, "http://idp.test", policy=POLICY, development=True, now=SAMPLE_NOW, nonce=NONCE
        )
        assert seen == [b64u(NONCE)]
        assert result.simulated
        assert result.identity_key.public_numbers() == IDENTITY.public_numbers()
        with pytest.raises(SimulatedEvidenceRejectedError):
            verify_enclave(http, "http://idp.test", policy=POLICY, now=SAMPLE_NOW)


def test_wallet_refuses_a_replayed_document() -> None:
    """A relay that answers every nonce with one recorded document is caught."""
    recorded = simulated_doc(NONCE)
    with client(lambda r: httpx.Response(200, content=recorded)) as http:
        with pytest.raises(NonceMismatchError):
            verify_enclave(http, "http://idp.test", policy=POLICY, development=True, now=SAMPLE_NOW)


def test_wallet_caps_the_document_size() -> None:
    huge = b" " * (MAX_DOCUMENT_BYTES + 1)
    with client(lambda r: httpx.Response(200, content=huge)) as http:
        with pytest.raises(AttestationFetchError, match="exceeds"):
            fetch_attestation_document(http, "http://idp.test", NONCE)


def test_wallet_does_not_follow_redirects() -> None:
    redirect = httpx.Response(302, headers={"Location": "http://evil.test/attestation"})
    with client(lambda r: redirect) as http:
        with pytest.raises(AttestationFetchError, match="302"):
            fetch_attestation_document(http, "http://idp.test", NONCE)


def test_wallet_transport_errors_are_fetch_errors() -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with client(fail) as http:
        with pytest.raises(AttestationFetchError, match="failed"):
            fetch_attestation_document(http, "http://idp.test", NONCE)
