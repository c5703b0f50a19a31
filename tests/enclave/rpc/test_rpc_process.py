"""The enclave as its own process (``healthid enclave serve``): crash, restart, shutdown."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from rpc_testlib import EnclaveProcess, import_people

from healthid.enclave import api
from healthid.enclave.rpc import RemoteEnclave
from healthid.enclave_cli import serve
from healthid.settings import Settings


async def test_a_crashed_enclave_is_unavailable_and_the_client_recovers_after_restart(
    settings: Settings, socket_dir: Path
) -> None:
    process = EnclaveProcess(data_dir=settings.data_dir, socket_path=socket_dir / "e.sock")
    process.start()
    remote = RemoteEnclave(process.socket_path)
    try:
        before = await remote.status()
        (erika,) = await import_people(remote, 1)
        process.kill()  # SIGKILL: no cleanup, the socket file stays
        assert process.socket_path.exists()
        with pytest.raises(api.EnclaveUnavailable):
            await remote.status()
        with pytest.raises(api.EnclaveUnavailable, match="not reachable"):
            await remote.seal_history(erika, api.HistoryEvent(kind="login", at=1))
        process.start()  # replaces the stale socket file
        assert await remote.status() == before  # the same client, the same root key
        sealed = await remote.seal_history(erika, api.HistoryEvent(kind="login", at=2))
        assert sealed.created_at == 2
    finally:
        await remote.aclose()
        process.close()


async def test_sigterm_stops_the_enclave_cleanly_and_removes_its_socket(
    settings: Settings, socket_dir: Path
) -> None:
    process = EnclaveProcess(data_dir=settings.data_dir, socket_path=socket_dir / "e.sock")
    process.start()
    try:
        assert (await RemoteEnclave(process.socket_path).status()).tee == "simulated"
        assert process.stop() == 0
        assert not process.socket_path.exists()
    finally:
        process.close()


def test_serve_needs_one_address(settings: Settings) -> None:
    env = {"HEALTHID_DATA_DIR": str(settings.data_dir)}
    result = CliRunner().invoke(serve, [], env=env)
    assert result.exit_code == 2
    assert "give one of --socket or --port" in result.output
    both = CliRunner().invoke(serve, ["--socket", "e.sock", "--port", "7300"], env=env)
    assert both.exit_code == 2 and "give one of --socket or --port" in both.output


def test_serve_refuses_the_sgx_tee_it_cannot_provide(
    settings: Settings, socket_dir: Path, tmp_path: Path
) -> None:
    config = tmp_path / "healthid.toml"
    config.write_text(f'data_dir = "{settings.data_dir}"\ntee = "sgx"\n')
    result = CliRunner().invoke(
        serve,
        ["--socket", str(socket_dir / "e.sock"), "--config", str(config)],
        env={"HEALTHID_CONFIG": None},  # restored afterwards: --config sets it for the process
    )
    assert result.exit_code == 2
    assert "tee=sgx" in result.output
    assert not (socket_dir / "e.sock").exists()
    assert "HEALTHID_CONFIG" not in os.environ
