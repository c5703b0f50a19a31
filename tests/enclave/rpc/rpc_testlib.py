"""What the enclave RPC tests share: settings, the enclave as a subprocess, a small registry,
eGK cards and ID-token requests."""

from __future__ import annotations

import csv
import io
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from healthid.demo.egk_test_ca import TestCard, TestEgkCa
from healthid.demo.synthetic import FIELDS, synthetic_rows
from healthid.enclave.api import (
    EnclaveClient,
    IdTokenRequest,
    SealedPolicyholder,
)
from healthid.enclave.service import Enclave
from healthid.enclave_runtime import EGK_TEST_CA_DIR, build_enclave
from healthid.keys.file import FileKeyStore
from healthid.protocol.jose.keys import public_jwk
from healthid.protocol.oauth.token import TokenGrant
from healthid.settings import Settings, load_settings
from session_testlib import LoggedIn, log_in_with_card

READY_TIMEOUT = 60.0  # seconds for `python -m healthid.enclave_cli` to listen (2 busy cores)
RP = "https://rp.example"
CLAIMS = (
    "urn:telematik:claims:id",
    "urn:telematik:claims:given_name",
    "urn:telematik:claims:family_name",
)


def enclave_settings(data_dir: Path) -> Settings:
    return load_settings(mode="development", data_dir=data_dir, enclave_workers=1)


def in_process(settings: Settings) -> Enclave:
    """The in-process enclave as ``open_runtime`` builds it (same key store and root key)."""
    return build_enclave(settings, FileKeyStore(settings.data_dir / "keys").sign)


@contextmanager
def short_socket_dir() -> Iterator[Path]:
    """A directory for a Unix socket (sun_path holds 107 bytes; pytest's tmp_path may not)."""
    directory = Path(tempfile.mkdtemp(prefix="hid-rpc-", dir="/tmp"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def connectable(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


@dataclass
class EnclaveProcess:
    """``python -m healthid.enclave_cli --socket PATH`` with the test's data directory
    (``args``: more options, e.g. ``--join``; ``env``: more HEALTHID_* settings)."""

    data_dir: Path
    socket_path: Path
    process: subprocess.Popen[bytes] | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        self.close()  # a restart: the previous process is gone, release its pipe
        env = {k: v for k, v in os.environ.items() if not k.startswith("HEALTHID_")}
        env |= {
            "HEALTHID_MODE": "development",
            "HEALTHID_DATA_DIR": str(self.data_dir),
            "HEALTHID_ENCLAVE_WORKERS": "1",
        } | self.env
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "healthid.enclave_cli",
                "--socket",
                str(self.socket_path),
                *self.args,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + READY_TIMEOUT
        while not connectable(self.socket_path):
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"the enclave process exited: {err}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError("the enclave process did not start listening")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: a crash (the socket file stays behind)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> int:
        """SIGTERM: a clean shutdown; returns the exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(20)

    def close(self) -> None:
        self.kill()
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()


# -- a small registry ---------------------------------------------------------------------
@dataclass(frozen=True)
class Person:
    kvnr: str
    given_name: str
    family_name: str


def registry_csv(count: int, *, seed: int = 7, broken_rows: tuple[int, ...] = ()) -> bytes:
    """``count`` synthetic people as CSV; rows at the given 0-based positions get a bad KVNR."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    for i, row in enumerate(synthetic_rows(count, seed=seed)):
        writer.writerow(row | {"kvnr": "0000000000"} if i in broken_rows else row)
    return out.getvalue().encode()


def people(count: int, *, seed: int = 7) -> list[Person]:
    return [
        Person(kvnr=r["kvnr"], given_name=r["given_name"], family_name=r["family_name"])
        for r in synthetic_rows(count, seed=seed)
    ]


async def import_people(
    enclave: EnclaveClient, count: int, *, seed: int = 7
) -> list[SealedPolicyholder]:
    """Seal ``count`` synthetic people (the registry import without the database)."""
    prepared = await enclave.prepare_import(
        registry_csv(count, seed=seed), filename="r.csv", fmt=None, accept_test_kvnr=False
    )
    sealed: list[SealedPolicyholder] = []
    try:
        for index in range(prepared.chunk_count):
            chunk = await enclave.seal_import_chunk(prepared.import_id, index)
            assert not chunk.errors
            sealed += chunk.sealed
    finally:
        await enclave.discard_import(prepared.import_id)
    return sealed


# -- eGK and ID tokens ----------------------------------------------------------------------
def egk_ca(settings: Settings) -> TestEgkCa:
    """The development eGK CA the enclave trusts (under the data directory)."""
    return TestEgkCa.create(settings.data_dir / EGK_TEST_CA_DIR)


def egk_card(settings: Settings, person: Person) -> TestCard:
    return egk_ca(settings).issue_card(person.kvnr, "109500969", person.given_name, "Test")


async def log_in(
    enclave: EnclaveClient, settings: Settings, sealed: SealedPolicyholder, person: Person
) -> LoggedIn:
    """What the wallet service does with the enclave: eGK proof, match, bind, login."""
    return await log_in_with_card(enclave, sealed, egk_card(settings, person))


def id_token_request(
    sealed: SealedPolicyholder,
    *,
    ticket: bytes,
    kid: str,
    rp_key: ec.EllipticCurvePrivateKey,
    nonce: str,
) -> IdTokenRequest:
    return IdTokenRequest(
        sealed=sealed,
        issuer="https://idp.example",
        grant=TokenGrant(
            client_id=RP, nonce=nonce, id_token_version="1.0.0", consented_claims=CLAIMS
        ),
        ticket=ticket,
        single_sign_on=False,
        kid=kid,
        x5c=(),
        rp_statements=(),
        rp_encryption_jwk=dict(public_jwk(rp_key.public_key(), kid="rp-enc", use="enc")),
    )


def same(a: Any, b: Any, *, key_order: bool = False) -> bool:
    """Equal with the same types all the way down (bool is not int, bytes is not bytearray),
    floats equal in sign too (0.0 vs -0.0); with ``key_order`` maps in the same key order."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, list):
        return len(a) == len(b) and all(
            same(x, y, key_order=key_order) for x, y in zip(a, b, strict=True)
        )
    if isinstance(a, dict):
        keys_match = list(a) == list(b) if key_order else a.keys() == b.keys()
        return keys_match and all(same(a[k], b[k], key_order=key_order) for k in a)
    return bool(a == b)
