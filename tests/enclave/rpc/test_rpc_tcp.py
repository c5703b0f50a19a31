"""The enclave RPC on a loopback TCP port (under Gramine, whose Unix sockets stay inside the
enclave): the same methods and errors as on the Unix socket."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rpc_testlib import enclave_settings, in_process

from healthid.enclave.api import EnclaveUnavailable, HistoryEvent, SealedPolicyholder
from healthid.enclave.rpc import RemoteEnclave
from healthid.enclave.rpc.server import EnclaveServer
from healthid.enclave.vault import VaultError
from healthid.settings import load_settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_loopback_port_serves_the_same_interface(tmp_path: Path, clean_env: None) -> None:
    enclave = in_process(enclave_settings(tmp_path))
    try:
        async with EnclaveServer(enclave, port=0) as server:
            assert server.port and server.address == f"127.0.0.1:{server.port}"
            remote = RemoteEnclave(port=server.port)
            try:
                assert (await remote.status()).root_key_id == (await enclave.status()).root_key_id
                with pytest.raises(VaultError):  # the same typed error as on a Unix socket
                    await remote.seal_history(
                        SealedPolicyholder(
                            pseudonym="0" * 32,
                            kvnr_index=b"",
                            root_key_id="x",
                            wrapped_key=None,
                            records=(),
                        ),
                        HistoryEvent(kind="login", at=1),
                    )
            finally:
                await remote.aclose()
        with pytest.raises(EnclaveUnavailable):  # the listener is gone
            await RemoteEnclave(port=server.port, connect_timeout=1).status()
    finally:
        enclave.close()


def test_server_and_client_take_one_address() -> None:
    with pytest.raises(ValueError):
        RemoteEnclave()
    with pytest.raises(ValueError):
        RemoteEnclave("/tmp/x.sock", port=1)


async def test_the_enclave_command_listens_on_a_port_and_the_runtime_uses_it(
    tmp_path: Path, clean_env: None
) -> None:
    from healthid.runtime import open_runtime

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEALTHID_")}
    env |= {"HEALTHID_DATA_DIR": str(tmp_path), "HEALTHID_ENCLAVE_WORKERS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "healthid.enclave_cli", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        rt = await open_runtime(load_settings(data_dir=tmp_path, enclave_port=port))
        try:
            assert isinstance(rt.enclave, RemoteEnclave)
            assert (await rt.enclave.status()).tee == "simulated"
        finally:
            await rt.aclose()
    finally:
        process.terminate()
        process.wait(20)
