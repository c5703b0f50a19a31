"""Benchmark: the VAU channel (issue #6), its pure state machines and through the host.

    .venv/bin/python bench/vau.py [--part pure host] [--mode mlkem768 kyber768]
                                  [--handshakes 2000] [--requests 20000] [--size 512]
                                  [--park-state] [--seconds 5] [--concurrency 1 8]
                                  [--enclave in-process process]

**pure** — the protocol (healthid.protocol.vau) in this one process, server side timed.
Handshakes: a client and a server run complete M1-M4 handshakes; only the server's calls
(M1 → M2 and M3 → M4) are timed, as CPU time (time.process_time), so the client's work is
excluded. With --park-state the server also serialises its state after each message and
loads it again before the next (handshake and session), as a stateless server parking it in
a store would (the store's own cost is not included). Requests: per request the client
encrypts, the server decrypts, the server encrypts the response and the client decrypts it;
the server's two calls are timed as the channel overhead per request, and the whole round
trip is reported too. One thread: single-core figures.

**host** — the real stack: the host app (uvicorn, one worker, SQLite and the in-memory
ephemeral store, development mode) in its own process, with the enclave in that process
(``in-process``, the embedded default) or as its own process behind the enclave RPC
(``process``, as in production). This process plays the wallets over a lean HTTP/1.1 client
(bench/loadgen.py): it verifies the enclave's attestation once, then runs complete
handshakes (``POST /VAU`` + ``POST /VAU/<cid>``) and encrypted request round trips (the
``status`` operation: the channel alone, no database) for --seconds each, at each
concurrency. The server's CPU (host process, and the enclave process when separate) is read
from /proc; per handshake and per request it is compared with a plain ``GET /healthz`` round
trip, so the channel's overhead is the difference. Targets (issue #6, two cores): ≥ 1,000
handshakes/s inside the enclave; < 0.3 ms channel overhead per request.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import ec

from healthid.protocol.vau import (
    ClientConfig,
    ClientSession,
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
from healthid.protocol.vau import cbor as vau_cbor
from loadgen import LoadClient

TARGET_HANDSHAKES_PER_S = 1000
TARGET_REQUEST_MS = 0.3
KEY_VALIDITY = 7 * 24 * 3600
STARTUP_TIMEOUT = 60.0


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


# -- through the host --------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_host(directory: str, port: int, enclave_socket: str) -> None:
    """The host process: uvicorn as `healthid serve` runs it (one worker)."""
    import uvicorn

    from healthid.runtime import build_app
    from healthid.settings import load_settings

    for name in [n for n in os.environ if n.startswith("HEALTHID_")]:
        del os.environ[name]
    settings = load_settings(
        mode="development",
        data_dir=Path(directory),
        enclave_workers=1,
        enclave_socket=Path(enclave_socket) if enclave_socket else None,
    )
    uvicorn.run(
        build_app(settings),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        proxy_headers=False,
    )


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of one process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for(url: str, process: Any) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None if hasattr(process, "poll") else not process.is_alive():
            raise RuntimeError("the server process exited during start-up")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


@dataclass
class Phase:
    name: str
    count: int
    seconds: float
    server_cpu: float  # host process + enclave process
    enclave_cpu: float  # the enclave process alone (0 when in-process)
    client_cpu: float

    def per(self, cpu: float) -> float:
        return cpu * 1e3 / max(self.count, 1)


class Servers:
    def __init__(self, pids: list[int], enclave_pid: int | None) -> None:
        self.pids, self.enclave_pid = pids, enclave_pid

    def cpu(self) -> tuple[float, float]:
        enclave = cpu_seconds(self.enclave_pid) if self.enclave_pid else 0.0
        return sum(cpu_seconds(p) for p in self.pids) + enclave, enclave


async def timed(name: str, servers: Servers, concurrency: int, seconds: float, one: Any) -> Phase:
    """Run ``one(slot)`` in ``concurrency`` loops for ``seconds``; count and take the CPU."""
    count = 0
    deadline = time.monotonic() + seconds

    async def loop(slot: int) -> None:
        nonlocal count
        while time.monotonic() < deadline:
            await one(slot)
            count += 1

    server_before, enclave_before = servers.cpu()
    client_before, start = time.process_time(), time.monotonic()
    await asyncio.gather(*(loop(i) for i in range(concurrency)))
    elapsed = time.monotonic() - start
    server_after, enclave_after = servers.cpu()
    return Phase(
        name=name,
        count=count,
        seconds=elapsed,
        server_cpu=server_after - server_before,
        enclave_cpu=enclave_after - enclave_before,
        client_cpu=time.process_time() - client_before,
    )


async def handshake(http: Any, config: ClientConfig) -> tuple[str, ClientSession]:
    m1, state = client.start(config)
    cbor_type = {"content-type": "application/cbor"}
    m2 = await http.request("POST", "/VAU", body=m1, headers=cbor_type)
    if m2.status != 200:
        raise RuntimeError(f"POST /VAU: {m2.status}")
    cid = m2.headers["vau-cid"]
    m3, confirmation = client.receive_m2(config, state, m2.body)
    m4 = await http.request("POST", cid, body=m3, headers=cbor_type)
    if m4.status != 200:
        raise RuntimeError(f"POST {cid}: {m4.status}")
    return cid, client.receive_m4(config, confirmation, m4.body)


STATUS_REQUEST = vau_cbor.encode({"op": "status", "session": "", "args": {}})


async def run_host(args: argparse.Namespace, *, enclave: str) -> None:
    from healthid.protocol.tee import TeePolicy
    from healthid.wallet.tee_verify import verify_enclave
    from healthid.wallet.vau_channel import client_config

    print(f"\n== through the host: POST /VAU (uvicorn, 1 worker, {enclave} enclave) ==")
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="hid-vau-", dir="/tmp") as directory:
        enclave_process = None
        socket_path = ""
        if enclave == "process":
            socket_path = str(Path(directory) / "enclave.sock")
            env = {k: v for k, v in os.environ.items() if not k.startswith("HEALTHID_")}
            env |= {
                "HEALTHID_MODE": "development",
                "HEALTHID_DATA_DIR": directory,
                "HEALTHID_ENCLAVE_WORKERS": "1",
            }
            enclave_process = subprocess.Popen(  # noqa: S603 - our interpreter, fixed arguments
                [sys.executable, "-m", "healthid.enclave_cli", "--socket", socket_path],
                env=env,
            )
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while not Path(socket_path).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        port = free_port()
        server = ctx.Process(target=serve_host, args=(directory, port, socket_path))
        server.start()
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for(f"{base}/healthz", server)
            policy = TeePolicy(mrsigners=frozenset({bytes(32)}), isv_prod_id=0)
            with httpx.Client(base_url=base) as http:
                verified = verify_enclave(http, base, policy=policy, development=True)
            config = client_config(verified)
            servers = Servers([server.pid or 0], enclave_process.pid if enclave_process else None)
            for concurrency in args.concurrency:
                await host_level(base, config, servers, concurrency, args.seconds)
        finally:
            if server.pid:
                os.kill(server.pid, signal.SIGINT)
            server.join(30)
            if enclave_process is not None:
                enclave_process.terminate()
                enclave_process.wait(30)


async def host_level(
    base: str, config: ClientConfig, servers: Servers, concurrency: int, seconds: float
) -> None:
    async with LoadClient(base, connections=concurrency) as http:
        sessions: dict[int, tuple[str, ClientSession]] = {}
        for slot in range(concurrency):
            sessions[slot] = await handshake(http, config)

        async def one_handshake(slot: int) -> None:
            await handshake(http, config)

        async def one_request(slot: int) -> None:
            cid, session = sessions[slot]
            session, message = client.encrypt_request(config, session, STATUS_REQUEST)
            answer = await http.request(
                "POST",
                cid,
                body=message,
                headers={"content-type": "application/octet-stream", "vau-op": "status"},
            )
            if answer.status != 200:
                raise RuntimeError(f"POST {cid}: {answer.status}")
            session, _ = client.decrypt_response(config, session, answer.body)
            sessions[slot] = (cid, session)

        async def one_plain(slot: int) -> None:
            answer = await http.request("GET", "/healthz")
            if answer.status != 200:
                raise RuntimeError(f"GET /healthz: {answer.status}")

        await timed("warm-up", servers, concurrency, 1.0, one_request)
        phases = [
            await timed("handshakes", servers, concurrency, seconds, one_handshake),
            await timed("encrypted requests", servers, concurrency, seconds, one_request),
            await timed("plain GET /healthz", servers, concurrency, seconds, one_plain),
        ]
    hs, req, plain = phases
    print(f"\n  concurrency {concurrency}:")
    for phase in phases:
        enclave_part = (
            f", enclave process {phase.per(phase.enclave_cpu):.3f} ms"
            if servers.enclave_pid
            else ""
        )
        print(
            f"    {phase.name:<20} {phase.count / phase.seconds:8.0f}/s  server CPU "
            f"{phase.per(phase.server_cpu):.3f} ms each{enclave_part}  "
            f"(this client {phase.per(phase.client_cpu):.3f} ms)"
        )
    hs_cpu = hs.server_cpu / max(hs.count, 1)
    inside = hs.enclave_cpu / max(hs.count, 1) if servers.enclave_pid else hs_cpu
    where = "enclave process" if servers.enclave_pid else "host process incl. HTTP"
    per_core = 1 / inside if inside else float("inf")
    print(
        f"    handshakes per core of the {where}: {per_core:6.0f}/s  "
        f"target ≥ {TARGET_HANDSHAKES_PER_S}/s on two cores, checked here on one: "
        f"{verdict(per_core >= TARGET_HANDSHAKES_PER_S)}"
    )
    overhead = req.per(req.server_cpu) - plain.per(plain.server_cpu)
    print(
        f"    channel overhead per request (server CPU, encrypted status minus plain GET): "
        f"{overhead:.3f} ms  target < {TARGET_REQUEST_MS} ms: "
        f"{verdict(overhead < TARGET_REQUEST_MS)}"
    )


def run_pure(args: argparse.Namespace) -> None:
    print("\n== pure state machines ==")
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", nargs="+", choices=["pure", "host"], default=["pure", "host"])
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
    parser.add_argument("--seconds", type=float, default=5.0, help="host: seconds per phase")
    parser.add_argument(
        "--concurrency", nargs="+", type=int, default=[1, 8], help="host: wallets at once"
    )
    parser.add_argument(
        "--enclave",
        nargs="+",
        choices=["in-process", "process"],
        default=["in-process", "process"],
        help="host: the enclave inside the host process, or its own process (RPC)",
    )
    args = parser.parse_args(argv)

    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs")
    if "pure" in args.part:
        run_pure(args)
    if "host" in args.part:
        for enclave in args.enclave:
            asyncio.run(run_host(args, enclave=enclave))
    return 0


if __name__ == "__main__":
    sys.exit(main())
