"""The host's runtime picks the transport: HEALTHID_ENCLAVE_SOCKET set -> the enclave process."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import Served
from healthid.enclave import api
from healthid.enclave.rpc import RemoteEnclave
from healthid.enclave.service import Enclave
from healthid.runtime import StartupError, build_enclave, open_runtime
from healthid.settings import Settings, TeeKind, load_settings


def test_the_socket_setting_comes_from_the_environment(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert settings.enclave_socket is None
    monkeypatch.setenv("HEALTHID_ENCLAVE_SOCKET", "/run/healthid/enclave.sock")
    assert load_settings().enclave_socket == Path("/run/healthid/enclave.sock")


async def test_without_a_socket_the_enclave_runs_in_process(settings: Settings) -> None:
    rt = await open_runtime(settings)
    try:
        assert isinstance(rt.enclave, Enclave)
    finally:
        await rt.aclose()


async def test_with_a_socket_the_host_calls_the_enclave_process(
    served: Served, settings: Settings
) -> None:
    host = settings.model_copy(update={"enclave_socket": served.socket_path})
    rt = await open_runtime(host)
    try:
        assert isinstance(rt.enclave, RemoteEnclave)
        assert (await rt.enclave.status()).root_key_id == (
            await served.enclave.status()
        ).root_key_id
    finally:
        await rt.aclose()
    with pytest.raises(api.EnclaveUnavailable, match="closed"):
        await rt.enclave.status()


async def test_sgx_needs_the_enclave_process(settings: Settings, tmp_path: Path) -> None:
    sgx = settings.model_copy(update={"tee": TeeKind.SGX})
    with pytest.raises(StartupError, match="HEALTHID_ENCLAVE_SOCKET"):
        build_enclave(sgx)  # what open_runtime builds without a socket
    rt = await open_runtime(sgx.model_copy(update={"enclave_socket": tmp_path / "e.sock"}))
    try:
        assert isinstance(rt.enclave, RemoteEnclave)  # connects on first use
    finally:
        await rt.aclose()
