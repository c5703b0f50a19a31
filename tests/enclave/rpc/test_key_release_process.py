"""The attested key release between two real enclave processes (``healthid enclave serve`` and
``healthid enclave serve --join``), over the enclave RPC, through a relay that records every
byte (the untrusted hosts between two enclaves). Spec vau-and-tee.md §4.3."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from rpc_testlib import EnclaveProcess, import_people, short_socket_dir

from healthid.enclave import api
from healthid.enclave.attestation import enclave_jwk, make_attestation_document
from healthid.enclave.key_release import (
    KEY_RELEASE_ROLE,
    KeyReleaseRefused,
    MeasuredSimulatedEvidence,
    ReleasedRootKey,
    join_root_key,
    simulated_body,
)
from healthid.enclave.rpc import EnclaveServer, RemoteEnclave, RpcError
from healthid.enclave_runtime import IDENTITY_KEY_FILE, ROOT_KEY_FILE
from healthid.settings import Settings

EVENT = api.HistoryEvent(kind="login", at=1_700_000_000, device_id="d1", detail="rp")
# Both enclaves state this SIMULATED MRENCLAVE (the default, a hash of the healthid sources,
# would change under a test that runs while the sources are being edited).
PINNED = {"mrenclave": "5a" * 32}


def root_secret(data_dir: Path) -> bytes:
    """The development root key from its (insecure, simulated) sealed file."""
    doc = json.loads((data_dir / "enclave" / ROOT_KEY_FILE).read_text())
    return base64.b64decode(doc["secret"])


class Recorder:
    """A Unix-socket relay in front of ``target`` that keeps every byte in either direction."""

    def __init__(self, path: Path, target: Path) -> None:
        self.path = path
        self.target = target
        self.captured = bytearray()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Recorder:
        self._server = await asyncio.start_unix_server(self._relay, path=str(self.path))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_unix_connection(str(self.target))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    self.captured += data
                    dst.write(data)
                    await dst.drain()
            finally:
                dst.close()

        await asyncio.gather(
            pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True
        )


@pytest.fixture(scope="module")
def releaser() -> Iterator[EnclaveProcess]:
    """Enclave A: a running instance with a root key, default policy (the same enclave as A)."""
    with short_socket_dir() as sockets, tempfile.TemporaryDirectory() as data:
        process = EnclaveProcess(
            data_dir=Path(data),
            socket_path=sockets / "a.sock",
            env={"HEALTHID_SIMULATED_MEASUREMENT": json.dumps(PINNED)},
        )
        process.start()
        try:
            yield process
        finally:
            process.close()


def joining(
    data_dir: Path, socket_path: Path, releaser_socket: Path, **settings: str
) -> EnclaveProcess:
    env = {"HEALTHID_SIMULATED_MEASUREMENT": json.dumps(PINNED)}
    env |= {f"HEALTHID_{name.upper()}": value for name, value in settings.items()}
    return EnclaveProcess(
        data_dir=data_dir,
        socket_path=socket_path,
        args=("--join", str(releaser_socket)),
        env=env,
    )


def run_to_exit(process: EnclaveProcess) -> subprocess.CompletedProcess[str]:
    """Run an enclave process that is expected to refuse to start."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEALTHID_")}
    env |= {
        "HEALTHID_MODE": "development",
        "HEALTHID_DATA_DIR": str(process.data_dir),
        "HEALTHID_ENCLAVE_WORKERS": "1",
    } | process.env
    argv = [sys.executable, "-m", "healthid.enclave_cli", "--socket", str(process.socket_path)]
    return subprocess.run(
        [*argv, *process.args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


# -- the release ------------------------------------------------------------------------------
async def test_a_new_instance_joins_and_uses_the_same_root_key(
    releaser: EnclaveProcess, settings: Settings, socket_dir: Path
) -> None:
    secret = root_secret(releaser.data_dir)
    b_data = settings.data_dir
    async with Recorder(socket_dir / "relay.sock", releaser.socket_path) as relay:
        b = joining(b_data, socket_dir / "b.sock", relay.path)
        await asyncio.to_thread(b.start)  # the relay keeps running meanwhile
    a_remote, b_remote = RemoteEnclave(releaser.socket_path), RemoteEnclave(b.socket_path)
    try:
        a_status, b_status = await a_remote.status(), await b_remote.status()
        assert b_status.root_key_id == a_status.root_key_id
        # Sealed by A, opened by B (and the other way round): one root key.
        by_a = await import_people(a_remote, 2)
        assert await b_remote.verify_policyholders(by_a) == []
        event = await b_remote.seal_history(by_a[0], EVENT)
        assert event.created_at == EVENT.at
        by_b = await import_people(b_remote, 1, seed=11)
        assert await a_remote.verify_policyholders(by_b) == []
    finally:
        await a_remote.aclose()
        await b_remote.aclose()
        b.close()
    # B sealed the released key (and the identity key it attested while joining) locally.
    assert root_secret(b_data) == secret
    assert (b_data / "enclave" / IDENTITY_KEY_FILE).is_file()
    # The relay saw the whole exchange, and never the root key.
    wire = bytes(relay.captured)
    assert b"release_root_key" in wire and b"key-release" in wire
    for spelling in (secret, secret.hex().encode(), base64.b64encode(secret)):
        assert spelling not in wire
    assert base64.urlsafe_b64encode(secret).rstrip(b"=") not in wire


async def status_of(process: EnclaveProcess) -> api.EnclaveStatus:
    remote = RemoteEnclave(process.socket_path)
    try:
        return await remote.status()
    finally:
        await remote.aclose()


async def test_a_joined_instance_restarts_from_its_sealed_root_key(
    releaser: EnclaveProcess, settings: Settings, socket_dir: Path
) -> None:
    b = joining(settings.data_dir, socket_dir / "b.sock", releaser.socket_path)
    b.start()
    try:
        root_key_id = (await status_of(b)).root_key_id
        assert b.stop() == 0
        again = run_to_exit(b)  # --join once more: it already holds a root key
        assert again.returncode == 2
        assert "already holds a sealed root key" in again.stderr
        plain = EnclaveProcess(data_dir=settings.data_dir, socket_path=b.socket_path)
        plain.start()  # without --join: its own sealed root key, the releaser's
        try:
            assert (await status_of(plain)).root_key_id == root_key_id
        finally:
            plain.close()
    finally:
        b.close()


async def test_the_release_setting_joins_once_then_the_sealed_key_is_loaded(
    releaser: EnclaveProcess, settings: Settings, socket_dir: Path
) -> None:
    """HEALTHID_KEY_RELEASE_FROM instead of --join (a measured Gramine command line cannot
    change): the first start joins, every later start with the same setting loads its own
    sealed key without asking again."""
    env = {
        "HEALTHID_SIMULATED_MEASUREMENT": json.dumps(PINNED),
        "HEALTHID_KEY_RELEASE_FROM": str(releaser.socket_path),
    }
    b = EnclaveProcess(data_dir=settings.data_dir, socket_path=socket_dir / "b.sock", env=env)
    b.start()
    try:
        a_root = (await status_of(releaser)).root_key_id
        assert (await status_of(b)).root_key_id == a_root
        assert b.stop() == 0
        releaser_gone = EnclaveProcess(
            data_dir=settings.data_dir,
            socket_path=socket_dir / "b.sock",
            env=env | {"HEALTHID_KEY_RELEASE_FROM": str(socket_dir / "nobody.sock")},
        )
        releaser_gone.start()  # a releaser that is not there does not matter any more
        try:
            assert (await status_of(releaser_gone)).root_key_id == a_root
        finally:
            releaser_gone.close()
    finally:
        b.close()


@pytest.mark.parametrize(
    ("measurement", "rule"),
    [
        ({"mrenclave": "ab" * 32}, "mrenclave_not_allowed"),
        (PINNED | {"debug": True}, "debug_enclave"),
    ],
    ids=["wrong-measurement", "debug"],
)
def test_an_enclave_the_policy_does_not_name_gets_no_key_and_does_not_start(
    releaser: EnclaveProcess,
    settings: Settings,
    socket_dir: Path,
    measurement: dict[str, object],
    rule: str,
) -> None:
    b = joining(
        settings.data_dir,
        socket_dir / "b.sock",
        releaser.socket_path,
        simulated_measurement=json.dumps(measurement),
    )
    result = run_to_exit(b)
    assert result.returncode == 2
    assert f"the root key was not released: key release refused ({rule})" in result.stderr
    assert not b.socket_path.exists()
    assert not (settings.data_dir / "enclave" / ROOT_KEY_FILE).exists()
    assert root_secret(releaser.data_dir).hex() not in result.stderr


def test_joining_an_enclave_that_is_not_there_does_not_start(
    settings: Settings, socket_dir: Path
) -> None:
    result = run_to_exit(joining(settings.data_dir, socket_dir / "b.sock", socket_dir / "none"))
    assert result.returncode == 2
    assert "not reachable" in result.stderr
    assert not (settings.data_dir / "enclave" / ROOT_KEY_FILE).exists()


# -- a joining enclave played by the test, against the running releaser -------------------------
EVIDENCE_LIKE_A = MeasuredSimulatedEvidence(body=simulated_body(PINNED))


class Recording:
    """Wraps the releaser's client; may alter B's document, keeps what was sent."""

    def __init__(self, remote: RemoteEnclave, *, swap_transport_key: bool = False) -> None:
        self.remote = remote
        self.swap = swap_transport_key
        self.sent: list[dict[str, bytes]] = []

    async def key_release_challenge(self) -> bytes:
        return await self.remote.key_release_challenge()

    async def release_root_key(
        self, *, challenge: bytes, nonce: bytes, attestation: bytes
    ) -> ReleasedRootKey:
        if self.swap:
            doc = json.loads(attestation)
            doc["claims"]["keys"][KEY_RELEASE_ROLE] = transport_jwk()
            attestation = json.dumps(doc).encode()
        self.sent.append({"challenge": challenge, "nonce": nonce, "attestation": attestation})
        return await self.remote.release_root_key(
            challenge=challenge, nonce=nonce, attestation=attestation
        )


def transport_jwk() -> dict[str, str]:
    """A transport key the relay knows the private part of (it never gets a wrap to it)."""
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return enclave_jwk(KEY_RELEASE_ROLE, key, use="enc")


async def join_a(peer: Recording) -> bytes:
    identity = ec.generate_private_key(ec.SECP256R1()).public_key()
    joined = await join_root_key(peer, identity=identity, evidence=EVIDENCE_LIKE_A)
    return joined.root.secret


async def test_a_replayed_release_request_is_refused(releaser: EnclaveProcess) -> None:
    remote = RemoteEnclave(releaser.socket_path)
    try:
        peer = Recording(remote)
        assert await join_a(peer) == root_secret(releaser.data_dir)
        with pytest.raises(api.EnclaveError, match=r"\(challenge\): unknown, expired or already"):
            await remote.release_root_key(**peer.sent[0])
    finally:
        await remote.aclose()


async def test_a_document_for_another_nonce_is_refused(releaser: EnclaveProcess) -> None:
    remote = RemoteEnclave(releaser.socket_path)
    try:
        challenge = await remote.key_release_challenge()
        key = ec.generate_private_key(ec.SECP256R1()).public_key()
        stale = make_attestation_document(
            keys={"identity": key, KEY_RELEASE_ROLE: transport_jwk()},
            nonce=os.urandom(32),  # not the challenge
            provider=EVIDENCE_LIKE_A,
            now=datetime.now(UTC),
        )
        with pytest.raises(api.EnclaveError, match=r"\(nonce_mismatch\)"):
            await remote.release_root_key(
                challenge=challenge, nonce=os.urandom(32), attestation=stale.to_json()
            )
    finally:
        await remote.aclose()


async def test_a_tampered_document_is_refused(releaser: EnclaveProcess) -> None:
    remote = RemoteEnclave(releaser.socket_path)
    try:
        with pytest.raises(KeyReleaseRefused, match=r"\(report_data_mismatch\)"):
            await join_a(Recording(remote, swap_transport_key=True))
    finally:
        await remote.aclose()


async def test_an_enclave_without_key_release_refuses_the_group(socket_dir: Path) -> None:
    server = EnclaveServer(object(), socket_dir / "stub.sock")  # type: ignore[arg-type]
    await server.start()
    remote = RemoteEnclave(server.socket_path)
    try:
        with pytest.raises(RpcError, match="does not release its root key"):
            await remote.key_release_challenge()
    finally:
        await remote.aclose()
        await server.aclose()
