"""Helpers of the VAU tests: a settable clock, matched client/server configs, handshakes."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from healthid.protocol.vau import (
    ClientConfig,
    ClientSession,
    Environment,
    KemMode,
    ServerConfig,
    ServerPrivateKeys,
    ServerSession,
    client,
    es256_signer,
    es256_verifier,
    server,
    sign_public_keys,
)
from healthid.protocol.vau.state import ClientHandshake, ClientKeyConfirmation, ServerHandshake

VECTORS = Path(__file__).parent / "vectors"
FIXTURES = VECTORS / "lib-vau-fixtures"
NOW = 1_800_000_000  # 2027-01-15
DAY = 24 * 3600


def load_json(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / name).read_text())
    return data


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: int = NOW) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def fixed_rng(*chunks: bytes) -> Any:
    """An RNG that returns ``chunks`` first (each call must ask for its length), then random."""
    queue = list(chunks)

    def rng(n: int) -> bytes:
        if queue:
            chunk = queue.pop(0)
            assert len(chunk) == n, (len(chunk), n)
            return chunk
        return secrets.token_bytes(n)

    return rng


@dataclass
class Peers:
    server: ServerConfig
    client: ClientConfig
    identity: ec.EllipticCurvePrivateKey
    clock: Clock


def make_peers(
    mode: KemMode = KemMode.MLKEM768,
    *,
    server_environment: Environment = Environment.TEST,
    client_environment: Environment = Environment.TEST,
    keys: ServerPrivateKeys | None = None,
    clock: Clock | None = None,
    iat: int = NOW - 60,
    exp: int = NOW + 7 * DAY,
    max_plaintext_size: int = 1024 * 1024,
) -> Peers:
    clock = clock or Clock()
    keys = keys or ServerPrivateKeys.generate(secrets.token_bytes)
    identity = ec.generate_private_key(ec.SECP256R1())
    blob = sign_public_keys(
        keys.public_keys(iat=iat, exp=exp, comment="healthid test"),
        mode,
        es256_signer(identity),
        cert_hash=bytes(32),
        cdv=1,
    )
    server_config = ServerConfig(
        signed_public_keys=blob,
        private_keys=keys,
        environment=server_environment,
        clock=clock,
        rng=secrets.token_bytes,
        mode=mode,
        max_plaintext_size=max_plaintext_size,
    )
    client_config = ClientConfig(
        environment=client_environment,
        verifier=es256_verifier(identity.public_key()),
        clock=clock,
        rng=secrets.token_bytes,
        mode=mode,
        max_plaintext_size=max_plaintext_size,
    )
    return Peers(server=server_config, client=client_config, identity=identity, clock=clock)


@dataclass
class Flight:
    """Every message and intermediate state of one handshake, for tests that tamper with one."""

    m1: bytes
    m2: bytes
    m3: bytes
    m4: bytes
    client_handshake: ClientHandshake
    server_handshake: ServerHandshake
    client_confirmation: ClientKeyConfirmation
    client_session: ClientSession
    server_session: ServerSession


def run_handshake(peers: Peers) -> Flight:
    m1, client_handshake = client.start(peers.client)
    m2, server_handshake = server.receive_m1(peers.server, m1)
    m3, confirmation = client.receive_m2(peers.client, client_handshake, m2)
    m4, server_session = server.receive_m3(peers.server, server_handshake, m3)
    client_session = client.receive_m4(peers.client, confirmation, m4)
    return Flight(
        m1=m1,
        m2=m2,
        m3=m3,
        m4=m4,
        client_handshake=client_handshake,
        server_handshake=server_handshake,
        client_confirmation=confirmation,
        client_session=client_session,
        server_session=server_session,
    )


def flip(data: bytes, index: int, mask: int = 0x01) -> bytes:
    """``data`` with one bit flipped at ``index`` (negative indexes count from the end)."""
    out = bytearray(data)
    out[index] ^= mask
    return bytes(out)
