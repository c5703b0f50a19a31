"""Benchmark: the VAU channel's pure state machines (healthid.protocol.vau), server side.

    .venv/bin/python bench/vau.py [--mode mlkem768 kyber768] [--handshakes 2000]
                                  [--requests 20000] [--size 512] [--park-state]

Handshakes: a client and a server run complete M1-M4 handshakes in this one process; only the
server's calls (M1 → M2 and M3 → M4) are timed, as CPU time (time.process_time), so the
client's work is excluded. With --park-state the server also serialises its state after each
message and loads it again before the next (handshake and session), as a stateless server
parking it in a store would (the store's own cost is not included).

Requests: per request the client encrypts, the server decrypts, the server encrypts the
response and the client decrypts it; the server's two calls are timed as the channel overhead
per request, and the whole round trip is reported too.

Everything runs on one thread, so the figures are single-core figures. Targets (issue #6):
≥ 1,000 server handshakes/s and < 0.3 ms server channel overhead per request.
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import statistics
import sys
import time
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec

from healthid.protocol.vau import (
    ClientConfig,
    Environment,
    KemMode,
    ServerConfig,
    ServerHandshake,
    ServerPrivateKeys,
    ServerSession,
    client,
    es256_signer,
    es256_verifier,
    server,
    sign_public_keys,
)

TARGET_HANDSHAKES_PER_S = 1000
TARGET_REQUEST_MS = 0.3
KEY_VALIDITY = 7 * 24 * 3600


def wall_clock() -> int:
    return int(time.time())


@dataclass
class Pair:
    server: ServerConfig
    client: ClientConfig


def make_pair(mode: KemMode) -> Pair:
    keys = ServerPrivateKeys.generate(secrets.token_bytes)
    identity = ec.generate_private_key(ec.SECP256R1())
    now = wall_clock()
    blob = sign_public_keys(
        keys.public_keys(iat=now - 60, exp=now + KEY_VALIDITY, comment="bench"),
        mode,
        es256_signer(identity),
        cert_hash=bytes(32),
    )
    return Pair(
        server=ServerConfig(
            signed_public_keys=blob,
            private_keys=keys,
            environment=Environment.TEST,
            clock=wall_clock,
            rng=secrets.token_bytes,
            mode=mode,
        ),
        client=ClientConfig(
            environment=Environment.TEST,
            verifier=es256_verifier(identity.public_key()),
            clock=wall_clock,
            rng=secrets.token_bytes,
            mode=mode,
        ),
    )


def bench_handshakes(pair: Pair, count: int, park_state: bool) -> list[float]:
    """Server CPU seconds per handshake (M1 → M2 plus M3 → M4)."""
    samples = []
    for _ in range(count):
        m1, client_handshake = client.start(pair.client)
        t0 = time.process_time()
        m2, handshake = server.receive_m1(pair.server, m1)
        if park_state:
            parked = handshake.to_bytes()
        t1 = time.process_time()
        m3, confirmation = client.receive_m2(pair.client, client_handshake, m2)
        t2 = time.process_time()
        if park_state:
            handshake = ServerHandshake.from_bytes(parked)
        m4, _ = server.receive_m3(pair.server, handshake, m3)
        t3 = time.process_time()
        client.receive_m4(pair.client, confirmation, m4)
        samples.append((t1 - t0) + (t3 - t2))
    return samples


def bench_requests(pair: Pair, count: int, size: int, park_state: bool) -> tuple[float, float]:
    """(server CPU s per request, whole round trip CPU s per request)."""
    m1, client_handshake = client.start(pair.client)
    m2, handshake = server.receive_m1(pair.server, m1)
    m3, confirmation = client.receive_m2(pair.client, client_handshake, m2)
    m4, server_session = server.receive_m3(pair.server, handshake, m3)
    client_session = client.receive_m4(pair.client, confirmation, m4)
    request_body, response_body = b"q" * size, b"r" * size
    parked = server_session.to_bytes()
    server_cpu = 0.0
    start = time.process_time()
    for _ in range(count):
        client_session, request = client.encrypt_request(pair.client, client_session, request_body)
        t0 = time.process_time()
        if park_state:
            server_session = ServerSession.from_bytes(parked)
        server_session, received = server.decrypt_request(pair.server, server_session, request)
        server_session, response = server.encrypt_response(
            pair.server, server_session, received.counter, response_body
        )
        if park_state:
            parked = server_session.to_bytes()
        t1 = time.process_time()
        client_session, _ = client.decrypt_response(pair.client, client_session, response)
        server_cpu += t1 - t0
    total = time.process_time() - start
    return server_cpu / count, total / count


def verdict(ok: bool) -> str:
    return "meets target" if ok else "BELOW TARGET"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--mode", nargs="+", choices=[m.value for m in KemMode], default=[m.value for m in KemMode]
    )
    parser.add_argument("--handshakes", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--size", type=int, default=512, help="request/response body bytes")
    parser.add_argument(
        "--park-state",
        action="store_true",
        help="serialise the server's state between messages, as a stateless server would",
    )
    args = parser.parse_args(argv)

    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs")
    print("single thread: all figures are one core's CPU time (time.process_time)")
    for mode in (KemMode(m) for m in args.mode):
        pair = make_pair(mode)
        bench_handshakes(pair, max(10, args.handshakes // 20), args.park_state)  # warm up
        samples = bench_handshakes(pair, args.handshakes, args.park_state)
        per_handshake = sum(samples) / len(samples)
        rate = 1 / per_handshake
        p50 = statistics.median(samples) * 1e3
        p99 = statistics.quantiles(samples, n=100)[98] * 1e3
        server_s, round_s = bench_requests(pair, args.requests, args.size, args.park_state)
        parked = " (state parked as bytes)" if args.park_state else ""
        print(f"\n[{mode.value}]")
        print(
            f"  server handshakes/s{parked}: {rate:8.0f}  "
            f"(mean {per_handshake * 1e3:.3f} ms, p50 {p50:.3f} ms, p99 {p99:.3f} ms CPU)  "
            f"target ≥ {TARGET_HANDSHAKES_PER_S}: {verdict(rate >= TARGET_HANDSHAKES_PER_S)}"
        )
        print(
            f"  server channel overhead per request{parked} ({args.size} B each way): "
            f"{server_s * 1e3:.4f} ms  target < {TARGET_REQUEST_MS} ms: "
            f"{verdict(server_s * 1e3 < TARGET_REQUEST_MS)}"
        )
        print(f"  full round trip, both sides{parked}: {round_s * 1e3:.4f} ms per request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
