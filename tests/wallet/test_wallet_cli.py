"""`healthid wallet` against a real server on a loopback port (httpx, uvicorn)."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from click.testing import CliRunner

from healthid.cli import main
from healthid.demo.synthetic import synthetic_rows, write_registry
from healthid.runtime import build_app
from healthid.settings import load_settings

STARTUP_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for name in list(os.environ):
        if name.startswith("HEALTHID_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HEALTHID_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HEALTHID_ENCLAVE_WORKERS", "1")
    reg = tmp_path / "reg.csv"
    with reg.open("w") as fh:
        write_registry(fh, 5, seed=21)
    assert CliRunner().invoke(main, ["registry", "import", str(reg)]).exit_code == 0
    port = free_port()
    yield from serve_on_loopback(build_app(load_settings()), port)


def serve_on_loopback(app: object, port: int) -> Iterator[str]:
    """Run ``app`` with uvicorn on 127.0.0.1:``port`` in a thread until the test ends."""
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))  # type: ignore[arg-type]
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started, "server did not start"
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_wallet_cli_enrols_with_a_test_egk_logs_in_and_lists_devices(
    server: str, tmp_path: Path
) -> None:
    person = next(iter(synthetic_rows(5, seed=21)))
    card = tmp_path / "card.json"
    code, _, err = run(
        "egk-test-ca",
        "issue",
        "--kvnr",
        person["kvnr"],
        "--ik",
        person["ik"],
        "--given-name",
        person["given_name"],
        "--family-name",
        person["family_name"],
        "-o",
        str(card),
    )
    assert code == 0, err
    wallet = ["wallet", "--dir", str(tmp_path / "wallet"), "--idp", server, "--dev"]
    code, out, err = run(*wallet, "enroll", "--egk", str(card))
    assert code == 0, err
    assert "enrolled: device" in out and "software key" in out
    code, out, _ = run(*wallet, "login")
    assert code == 0 and "acr gematik-ehealth-loa-substantial" in out
    code, out, err = run(*wallet, "me")  # through the VAU channel into the enclave
    assert code == 0, err
    assert f"{person['given_name']} {person['family_name']}" in out and person["kvnr"] in out
    code, out, err = run(*wallet, "history")
    assert code == 0 and "enrolled" in out and "login" in out, err
    without_dev = [w for w in wallet if w != "--dev"]
    code, _, err = run(*without_dev, "me")  # the simulated enclave only in development mode
    assert code == 2 and "TeePolicy" in err
    code, out, _ = run(*wallet, "devices")
    assert code == 0 and "(this wallet)" in out
    device_id = out.split()[0]
    assert run(*wallet, "revoke", device_id)[0] == 0
    code, _, err = run(*wallet, "login")
    assert code == 1 and "401" in err


def test_wallet_cli_refuses_a_card_of_someone_not_insured(server: str, tmp_path: Path) -> None:
    card = tmp_path / "card.json"
    run(
        "egk-test-ca",
        "issue",
        "--kvnr",
        "A123456780",
        "--ik",
        "109500969",
        "--given-name",
        "Nie",
        "--family-name",
        "Versichert",
        "-o",
        str(card),
    )
    code, _, err = run(
        "wallet",
        "--dir",
        str(tmp_path / "w"),
        "--idp",
        server,
        "--dev",
        "enroll",
        "--egk",
        str(card),
    )
    assert code == 1 and "the identity could not be confirmed" in err


@pytest.fixture
def demo_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """What `make run` starts: the demo registry and the eID stand-in beside the IdP."""
    from healthid.cli import _seed_demo
    from healthid.demo.stack import (
        federation_mounts,
        standin_mount,
        with_local_federation,
        with_local_standin,
    )

    for name in list(os.environ):
        if name.startswith("HEALTHID_"):
            monkeypatch.delenv(name)
    port = free_port()
    settings = with_local_federation(
        with_local_standin(
            load_settings(
                data_dir=tmp_path / "data",
                enclave_workers=1,
                listen_port=port,
                public_url=f"http://127.0.0.1:{port}",
            )
        )
    )
    idp_jwks = _seed_demo(settings)
    mounts = [standin_mount(settings), *federation_mounts(settings, idp_jwks)]
    yield from serve_on_loopback(build_app(settings, extra_routes=mounts), port)


def test_make_run_stack_enrols_with_the_eid_stand_in(demo_server: str, tmp_path: Path) -> None:
    from healthid.demo.stack import STANDIN_MOUNT, demo_people

    kvnr = demo_people(1)[0]["kvnr"]
    wallet = ["wallet", "--dir", str(tmp_path / "w"), "--idp", demo_server, "--dev"]
    code, out, err = run(
        *wallet, "enroll", "--eid-test-identity", kvnr, "--eid-standin", demo_server + STANDIN_MOUNT
    )
    assert code == 0, err
    assert "enrolled: device" in out
    code, out, _ = run(*wallet, "login")
    assert code == 0 and "logged in" in out
    code, _, err = run(
        "wallet",
        "--dir",
        str(tmp_path / "x"),
        "--idp",
        demo_server,
        "enroll",
        "--eid-test-identity",
        "nobody",
        "--eid-standin",
        demo_server + STANDIN_MOUNT,
    )
    assert code == 1


def test_make_run_stack_logs_in_at_the_demo_relying_party(demo_server: str, tmp_path: Path) -> None:
    """The whole local federation: the demo RP's PAR is trusted through the federation master,
    the wallet authorises, the RP decrypts and verifies the ID token and shows the KVNR."""
    import httpx

    from healthid.demo.stack import STANDIN_MOUNT, demo_people

    person = demo_people(2)[1]
    wallet = ["wallet", "--dir", str(tmp_path / "w"), "--idp", demo_server, "--dev"]
    code, _, err = run(
        *wallet,
        "enroll",
        "--eid-test-identity",
        person["kvnr"],
        "--eid-standin",
        demo_server + STANDIN_MOUNT,
    )
    assert code == 0, err
    with httpx.Client(timeout=30) as http:
        url = http.get(f"{demo_server}/_dev/rp/login", params={"format": "url"}).text
        assert url.startswith(f"{demo_server}/auth?client_id="), url
        code, out, err = run(*wallet, "authorize", url)
        assert code == 0, err
        page = http.get(out.strip()).text
    assert person["kvnr"] in page and "federation master" in page
