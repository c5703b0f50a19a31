"""``healthid enclave serve``: the enclave in its own process, serving the host over a socket.

Everything that touches plaintext personal data or private keys runs in this process: the
vault (root key), identity proofing and ID-token minting with the token key, which it takes
from the key store it opens itself (the HSM in production). The host processes set
``HEALTHID_ENCLAVE_SOCKET`` to the same path and reach it through the enclave RPC
(``healthid.enclave.rpc``); any number of host workers may share one enclave process.
Stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import click

from healthid.enclave.rpc.server import EnclaveServer, EnclaveServerError
from healthid.enclave.sealing import SealingError
from healthid.keys.base import KeyStoreError
from healthid.runtime import StartupError, build_enclave, build_key_store
from healthid.settings import CONFIG_ENV, Settings, SettingsError, load_settings


def _fail(message: str) -> None:
    click.echo(f"healthid enclave: {message}", err=True)
    sys.exit(2)


async def run_enclave(settings: Settings, socket_path: Path) -> None:
    """Open the key store, build the enclave, serve until SIGTERM/SIGINT."""
    key_store = build_key_store(settings)
    enclave = build_enclave(settings, key_store.sign)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with EnclaveServer(enclave, socket_path):
            status = await enclave.status()
            click.echo(
                f"healthid enclave: serving on {socket_path} (tee={status.tee}, "
                f"root key {status.root_key_id})",
                err=True,
            )
            if status.warning:
                click.echo(f"healthid enclave: {status.warning}", err=True)
            await stop.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        enclave.close()
        close_keys = getattr(key_store, "close", None)
        if callable(close_keys):
            close_keys()


@click.command("serve")
@click.option(
    "--socket",
    "socket_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Unix socket to listen on (default: HEALTHID_ENCLAVE_SOCKET).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help=f"TOML settings file (instead of {CONFIG_ENV}).",
)
def serve(socket_path: Path | None, config_path: Path | None) -> None:
    """Run the enclave as its own process, serving the host on a Unix socket (mode 0600)."""
    if config_path is not None:
        os.environ[CONFIG_ENV] = str(config_path)
    try:
        settings = load_settings()
    except SettingsError as exc:
        _fail(str(exc))
        return
    socket_path = socket_path or settings.enclave_socket
    if socket_path is None:
        _fail("no socket: give --socket or set HEALTHID_ENCLAVE_SOCKET")
        return
    try:
        asyncio.run(run_enclave(settings, socket_path))
    except (StartupError, EnclaveServerError, SealingError, KeyStoreError) as exc:
        _fail(str(exc))


if __name__ == "__main__":  # pragma: no cover - `python -m healthid.enclave_cli` (tests)
    serve()
