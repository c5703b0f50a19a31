"""``healthid enclave serve``: the enclave in its own process, serving the host over a socket.

Everything that touches plaintext personal data or private keys runs in this process: the
vault (root key), identity proofing and ID-token minting with the token key, which it takes
from the key store it opens itself (the HSM in production). The host processes set
``HEALTHID_ENCLAVE_SOCKET`` to the same path and reach it through the enclave RPC
(``healthid.enclave.rpc``); any number of host workers may share one enclave process.
Stops on SIGTERM or SIGINT.

``--join SOCKET``: a new instance (another machine, another data centre, a new build) starts
without a root key and receives it from the running enclave at ``SOCKET`` through the attested
key release (``healthid.enclave.key_release``): it presents its attestation, checks the
releaser's, seals the released root key locally and only then serves. If the key is not
released (a measurement or signer the releaser's policy does not name, a debug enclave, a
stale challenge ...) it does not start. Joining is for an instance without a root key; one
that already holds a sealed root key refuses ``--join``.
"""

# ruff: noqa: E402 - the imports follow the module filter below on purpose
from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

# httpx imports its own command-line client (rich, pygments) when those happen to be installed
# (in a development environment, by test tools). The enclave image ships neither
# (deploy/gramine/requirements.enclave.txt), so a development run does not load them either:
# the code the enclave runs is the same in both, and the manifest's trace sees what the image
# holds. The enclave is assembled by healthid.enclave_runtime, never by healthid.runtime (the
# host's composition root, which imports the web app and the stores).
for _cli_only in ("rich", "pygments"):
    sys.modules.setdefault(_cli_only, None)  # type: ignore[arg-type]

import click
from cryptography.hazmat.primitives.asymmetric import ec

from healthid.enclave.key_release import KeyReleaseError, join_root_key
from healthid.enclave.rpc.client import RemoteEnclave
from healthid.enclave.rpc.server import EnclaveServer, EnclaveServerError
from healthid.enclave.sealed_keys import seal_key, write_new
from healthid.enclave.sealing import SealingError
from healthid.enclave_runtime import (
    IDENTITY_KEY_FILE,
    StartupError,
    build_enclave,
    build_key_store,
    enclave_dir,
    enclave_evidence,
    key_release_policy,
    root_key_sealer,
)
from healthid.gc_tuning import tune_for_serving
from healthid.keys.base import KeyStoreError
from healthid.settings import CONFIG_ENV, Settings, SettingsError, load_settings


def _fail(message: str) -> None:
    click.echo(f"healthid enclave: {message}", err=True)
    sys.exit(2)


def releaser_client(address: Path | str) -> RemoteEnclave:
    """The releasing enclave's RPC: a Unix socket path, or ``tcp:<port>`` on 127.0.0.1."""
    text = str(address)
    if text.startswith("tcp:"):
        try:
            return RemoteEnclave(port=int(text.removeprefix("tcp:")))
        except ValueError:
            raise StartupError(f"key release: {text!r} is not tcp:<port>") from None
    return RemoteEnclave(Path(text))


def holds_keys(settings: Settings) -> bool:
    """Whether this enclave already has a sealed root key (or keys sealed under one)."""
    return (
        root_key_sealer(settings).exists() or (enclave_dir(settings) / IDENTITY_KEY_FILE).exists()
    )


async def join(settings: Settings, releaser_address: Path | str) -> None:
    """Receive the root key from the enclave at ``releaser_address`` and seal it here, with
    the identity key this enclave attested while joining (sealed under the root key)."""
    sealer = root_key_sealer(settings)
    identity_path = enclave_dir(settings) / IDENTITY_KEY_FILE
    if holds_keys(settings):
        raise StartupError(
            "--join: this enclave already holds a sealed root key (or keys sealed under one); "
            "start it without --join"
        )
    evidence = enclave_evidence(settings)
    identity = ec.generate_private_key(ec.SECP256R1())
    releaser = releaser_client(releaser_address)
    try:
        joined = await join_root_key(
            releaser,
            identity=identity.public_key(),
            evidence=evidence,
            policy=key_release_policy(settings),
        )
    finally:
        await releaser.aclose()
    sealer.seal(joined.root)
    identity_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_new(identity_path, seal_key(joined.root, "identity", identity), 0o600)
    click.echo(
        f"healthid enclave: joined: root key {joined.root.key_id} released by the enclave at "
        f"{releaser_address} (MRENCLAVE {joined.releaser_measurement})",
        err=True,
    )


async def run_enclave(
    settings: Settings,
    socket_path: Path | None,
    join_socket: Path | None = None,
    *,
    port: int | None = None,
) -> None:
    """Join (if asked), open the key store, build the enclave, serve until SIGTERM/SIGINT.

    ``--join`` joins or refuses to start; ``HEALTHID_KEY_RELEASE_FROM`` (a setting, so a
    measured Gramine manifest need not change) joins only while this enclave holds no key,
    and later starts load the sealed key."""
    if join_socket is not None:
        await join(settings, join_socket)
    elif settings.key_release_from is not None and not holds_keys(settings):
        await join(settings, settings.key_release_from)
    key_store = build_key_store(settings)
    enclave = build_enclave(settings, key_store.sign)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with EnclaveServer(enclave, socket_path, port=port) as server:
            status = await enclave.status()
            click.echo(
                f"healthid enclave: serving on {server.address} (tee={status.tee}, "
                f"root key {status.root_key_id})",
                err=True,
            )
            if status.warning:
                click.echo(f"healthid enclave: {status.warning}", err=True)
            tune_for_serving()
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
    "--port",
    type=click.IntRange(1, 65535),
    help="Listen on this TCP port of 127.0.0.1 instead of a Unix socket (under Gramine, "
    "whose Unix sockets do not reach the host; default: HEALTHID_ENCLAVE_PORT).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help=f"TOML settings file (instead of {CONFIG_ENV}).",
)
@click.option(
    "--join",
    "join_socket",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Before serving, receive the root key from the running enclave at this socket "
    "(attested key release); refuse to start if it is not released.",
)
def serve(
    socket_path: Path | None,
    port: int | None,
    config_path: Path | None,
    join_socket: Path | None,
) -> None:
    """Run the enclave as its own process, serving the host on a Unix socket (mode 0600)."""
    if config_path is not None:
        os.environ[CONFIG_ENV] = str(config_path)
    try:
        settings = load_settings()
    except SettingsError as exc:
        _fail(str(exc))
        return
    if socket_path is None and port is None:
        socket_path, port = settings.enclave_socket, settings.enclave_port
    if (socket_path is None) == (port is None):
        _fail("give one of --socket or --port (or HEALTHID_ENCLAVE_SOCKET / HEALTHID_ENCLAVE_PORT)")
        return
    try:
        asyncio.run(run_enclave(settings, socket_path, join_socket, port=port))
    except KeyReleaseError as exc:
        _fail(f"the root key was not released: {exc}")
    except (StartupError, EnclaveServerError, SealingError, KeyStoreError) as exc:
        _fail(str(exc))


if __name__ == "__main__":  # pragma: no cover - `python -m healthid.enclave_cli` (tests)
    serve()
