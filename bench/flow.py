"""Benchmark: complete login flows per second through the sectoral IdP.

    .venv/bin/python bench/flow.py [--seconds 10] [--concurrency 1 8 32] [--wallets 64]
        [--workers 2] [--enclave in-process|process|both] [--rounds 1]

One flow = PAR (mTLS header) → the app's claims call → device-key challenge → assertion →
consent → token → the RP decrypts and verifies the ID token. The IdP runs as its own process
(uvicorn, PostgreSQL + Redis, in-process enclave); this process plays the relying party and
the wallets. Prints flows/s, p50/p99 per endpoint and the server's CPU milliseconds per flow,
and compares them with the targets of issue #4: ≥ 400 flows/s, ≤ 2.5 ms server CPU per flow,
p99 < 100 ms at concurrency 32 (issue #7: the same with the enclave process).

``--enclave both --rounds N`` alternates N+1 in-process and N process runs against the same
database and enrolled wallets, and takes the boundary's cost (issue #5: < 0.5 ms CPU per
flow added) as each process run minus the mean of the in-process runs beside it: the VM's
speed drifts by ±20 % within the hour, more than the boundary costs.

``--cpu-by-task`` prints, after each round, the server workers' CPU per flow by endpoint and
by stretch between two awaits (bench/taskcpu.py), to find where the time goes.

``--access-log`` logs as ``healthid serve`` does in production (one JSON line per request on
``healthid.access``, to ``server-log.jsonl`` in the bench's directory); without it the server
logs only warnings.

Profiling (cProfile statistics to a file): ``HEALTHID_BENCH_PROFILE`` the server (one
worker), ``HEALTHID_BENCH_ENCLAVE_PROFILE`` the enclave process, ``HEALTHID_BENCH_CLIENT_PROFILE``
this load generator.

``--instructions`` runs the server (one worker) and the enclave process under Valgrind's
callgrind, counting only while flows run, and prints the instructions per flow of each: a
figure that does not drift with the VM's speed, for comparing two versions of the code
(``PYTHONPATH=<other checkout>/src``). Everything runs ~50x slower; use concurrency 1, where
no batching depends on timing (``--concurrency 1 --seconds 30 --wallets 8``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import cProfile
import hashlib
import io
import json
import multiprocessing
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from benchlib import create_database, drop_database, forget_keys, machine_speed_ms
from loadgen import LoadClient
from taskcpu import summary

TARGET_FLOWS_PER_S = 400
TARGET_CPU_MS = 2.5
TARGET_P99_MS = 100
TARGET_BOUNDARY_MS = 0.5  # issue #5: CPU per flow the enclave process may add
REDIS_URL = os.environ.get("HEALTHID_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
RP = "https://rp.bench.example"
REDIRECT = f"{RP}/callback"
SCOPES = "openid urn:telematik:versicherter urn:telematik:display_name"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rp_material(directory: Path) -> None:
    """The bench RP's TLS certificate and encryption key (generated once per run)."""
    tls = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rp.bench.example")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(tls.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(tls, hashes.SHA256())
    )
    enc = ec.generate_private_key(ec.SECP256R1())
    (directory / "rp-cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "rp-enc.pem").write_bytes(
        enc.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def bench_app() -> Any:
    """The IdP app with a resolver that knows the bench RP (uvicorn's factory in each worker;
    the settings come from the environment the bench sets)."""
    from healthid.protocol.federation import ResolvedRelyingParty
    from healthid.protocol.federation.trust_chain import RelyingPartyKeys
    from healthid.protocol.jose import public_jwk
    from healthid.runtime import build_app
    from healthid.settings import load_settings

    d = Path(os.environ["HEALTHID_BENCH_DIR"])
    cert = x509.load_pem_x509_certificate((d / "rp-cert.pem").read_bytes())
    enc = serialization.load_pem_private_key((d / "rp-enc.pem").read_bytes(), None)
    assert isinstance(enc, ec.EllipticCurvePrivateKey)
    resolved = ResolvedRelyingParty(
        client_id=RP,
        expires_at=2**31,
        redirect_uris=(REDIRECT,),
        scopes=tuple(SCOPES.split()),
        federation_jwks={"keys": []},
        jwks=None,
        signed_jwks_uri=None,
        keys=RelyingPartyKeys(
            tls_certificates=(cert.public_bytes(serialization.Encoding.DER),),
            encryption_jwk=public_jwk(enc.public_key(), kid="puk_fd_enc", use="enc"),
        ),
        id_token_versions_supported=("1.0.0", "2.0.0"),
        metadata={},
    )

    class Resolver:  # as the federation registry with the RP in its cache
        async def resolve(self, client_id: str) -> ResolvedRelyingParty:
            return resolved

        async def cached(self, client_id: str) -> ResolvedRelyingParty | None:
            return resolved if client_id == RP else None

    settings = load_settings(
        data_dir=d / "idp",
        database_url=os.environ["HEALTHID_BENCH_DB"],
        redis_url=REDIS_URL,
        redis_prefix=os.environ["HEALTHID_BENCH_REDIS_PREFIX"],
        enclave_workers=1,
        trusted_proxies=["127.0.0.1"],
        enclave_socket=os.environ.get("HEALTHID_BENCH_ENCLAVE_SOCKET") or None,
    )
    app = build_app(settings, resolver=Resolver(), prepared=True)
    if task_cpu := os.environ.get("HEALTHID_BENCH_TASK_CPU"):  # --cpu-by-task
        from taskcpu import install

        install(Path(task_cpu))
    if not os.environ.get("HEALTHID_BENCH_DEFAULT_GC"):  # as `healthid serve` runs it
        from healthid.gc_tuning import tune_for_serving

        tune_for_serving()
    return app


def serve(directory: str, db_url: str, prefix: str, port: int, workers: int) -> None:
    """The IdP process(es): uvicorn as `healthid serve` runs it."""
    import uvicorn

    os.environ.update(
        HEALTHID_BENCH_DIR=directory,
        HEALTHID_BENCH_DB=db_url,
        HEALTHID_BENCH_REDIS_PREFIX=prefix,
    )
    # the client certificate header is believed only from the trusted proxies, which the
    # app checks itself; uvicorn rewrites no addresses
    options: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "log_level": "warning",
        "access_log": False,
        "proxy_headers": False,
        "server_header": False,  # as healthid serve runs it
        "http": "healthid.host.http_protocol:HeadCoalescingHttpToolsProtocol",  # as healthid serve
    }
    if os.environ.get("HEALTHID_BENCH_ACCESS_LOG"):  # --access-log: logging as healthid serve
        from healthid.host.observability import logging_config

        log = os.open(Path(directory) / "server-log.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.dup2(log, 2)  # the workers inherit it: one JSON line per request, to a file
        os.close(log)
        options.update(log_level="info", log_config=logging_config(True))
    if workers > 1:
        uvicorn.run("flow:bench_app", factory=True, workers=workers, **options)
        return
    profile = os.environ.get("HEALTHID_BENCH_PROFILE")  # write cProfile stats of the server
    if not profile:
        uvicorn.run(bench_app(), **options)
        return

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        uvicorn.run(bench_app(), **options)
    finally:
        profiler.disable()
        profiler.dump_stats(profile)


async def enrol(
    base: str, directory: Path, count: int
) -> list[tuple[ec.EllipticCurvePrivateKey, str]]:
    """Import a registry and enrol ``count`` wallets with test eGKs; their device keys."""
    from healthid.demo.egk_test_ca import TestEgkCa
    from healthid.demo.synthetic import synthetic_rows, write_registry
    from healthid.protocol.attestation import make_software_attestation

    del write_registry
    ca = TestEgkCa.create(directory / "idp" / "egk-test-ca")
    out = []
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        for i, row in enumerate(synthetic_rows(count, seed=41)):
            card = ca.issue_card(row["kvnr"], row["ik"], row["given_name"], row["family_name"])
            start = (
                await http.post("/wallet/v1/enrolments", headers={"X-Forwarded-For": f"10.3.{i}.1"})
            ).json()
            challenge = b64d(start["challenge"])
            r = await http.post(
                f"/wallet/v1/enrolments/{start['enrolment_id']}/egk",
                json={
                    "certificate": b64e(card.certificate_der),
                    "signature": b64e(card.sign(challenge)),
                },
            )
            assert r.status_code == 200, r.text
            key = ec.generate_private_key(ec.SECP256R1())
            spki = key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            r = await http.post(
                f"/wallet/v1/enrolments/{start['enrolment_id']}/device",
                json={
                    "public_key": b64e(spki),
                    "attestation_format": "healthid-software",
                    "attestation": b64e(
                        make_software_attestation(key, challenge, "de.healthid.wallet.dev")
                    ),
                },
            )
            assert r.status_code == 201, r.text
            out.append((key, r.json()["device_id"]))
    return out


def b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> str:
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return b64e(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


async def run_level(
    base: str,
    directory: Path,
    wallets: list[Any],
    concurrency: int,
    seconds: float,
    server_pids: list[int],
    count_instructions: bool = False,
) -> dict[str, Any]:
    from healthid.protocol import device_auth
    from healthid.protocol.jose import decrypt_id_token, verify_compact
    from healthid.protocol.jose.jws import TYP_ID_TOKEN, TYP_SIGNED_JWKS

    cert_header = {"X-SSL-CERT": quote((directory / "rp-cert.pem").read_text())}
    enc = serialization.load_pem_private_key((directory / "rp-enc.pem").read_bytes(), None)
    assert isinstance(enc, ec.EllipticCurvePrivateKey)
    timings: dict[str, list[float]] = defaultdict(list)
    counters = {device: int(time.time() * 1000) for _, device in wallets}
    done = 0
    async with LoadClient(base, connections=concurrency + 4) as http:
        config = (await http.get("/.well-known/openid-federation")).text
        config_jwks = json.loads(b64d(config.split(".")[1]))["jwks"]
        signed = verify_compact(
            (await http.get("/jws.json")).text, jwks=config_jwks, typ=TYP_SIGNED_JWKS
        )
        token_jwks = {"keys": signed.claims["keys"]}

        async def timed(name: str, coro: Any) -> Any:
            t0 = time.perf_counter()
            result = await coro
            timings[name].append(time.perf_counter() - t0)
            return result

        async def flow(slot: int) -> None:
            nonlocal done
            key, device = wallets[slot % len(wallets)]
            ip = {"X-Forwarded-For": f"10.4.{slot}.{done % 250}"}
            verifier = secrets.token_urlsafe(48)
            challenge = b64e(hashlib.sha256(verifier.encode()).digest())
            form = {
                "client_id": RP,
                "state": "s",
                "redirect_uri": REDIRECT,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
                "response_type": "code",
                "nonce": "n",
                "scope": SCOPES,
                "acr_values": "gematik-ehealth-loa-substantial",
            }
            par = await timed("PAR", http.post("/PAR_Auth", data=form, headers=cert_header))
            request_uri = par.json()["request_uri"]
            await timed(
                "auth (claims)",
                http.get(
                    "/auth",
                    params={"client_id": RP, "request_uri": request_uri, "app_version": "1"},
                ),
            )
            issued = (
                await timed(
                    "challenge",
                    http.post(
                        "/wallet/v1/auth/challenges", json_body={"device_id": device}, headers=ip
                    ),
                )
            ).json()
            counters[device] += 1
            msg = device_auth.message(b64d(issued["challenge"]), device, counters[device])
            session = (
                await timed(
                    "assertion",
                    http.post(
                        "/wallet/v1/auth/assertions",
                        headers=ip,
                        json_body={
                            "challenge_id": issued["challenge_id"],
                            "device_id": device,
                            "counter": counters[device],
                            "signature": sign(key, msg),
                        },
                    ),
                )
            ).json()["session"]
            location = (
                await timed(
                    "consent",
                    http.post(
                        "/wallet/v1/authorizations",
                        headers={"Authorization": f"Bearer {session}"},
                        json_body={
                            "client_id": RP,
                            "request_uri": request_uri,
                            "selected_claims": ["urn:telematik:claims:id"],
                        },
                    ),
                )
            ).json()["redirect"]
            code = parse_qs(urlsplit(location).query)["code"][0]
            tok = await timed(
                "token",
                http.post(
                    "/token",
                    headers=cert_header,
                    data={
                        "grant_type": "authorization_code",
                        "code": code,
                        "code_verifier": verifier,
                        "client_id": RP,
                        "redirect_uri": REDIRECT,
                    },
                ),
            )
            inner = decrypt_id_token(tok.json()["id_token"], private_key=enc)
            verify_compact(inner, jwks=token_jwks, typ=TYP_ID_TOKEN)
            done += 1

        async def worker(slot: int, deadline: float) -> None:
            while time.perf_counter() < deadline:
                await flow(slot)

        counting = (
            callgrind_counting(directory, server_pids)
            if count_instructions
            else contextlib.nullcontext({})
        )
        parts_before = [server_cpu_seconds(p) for p in server_pids]
        client_before = time.process_time()
        start = time.perf_counter()
        deadline = start + seconds
        with counting as instructions:
            await asyncio.gather(*(worker(i, deadline) for i in range(concurrency)))
        elapsed = time.perf_counter() - start
        parts = [server_cpu_seconds(p) - b for p, b in zip(server_pids, parts_before, strict=True)]
        cpu = sum(parts)
        client_cpu = time.process_time() - client_before
    return {
        "client_cpu_ms_per_flow": client_cpu * 1000 / max(done, 1),
        "enclave_cpu_ms_per_flow": sum(parts[1:]) * 1000 / max(done, 1),
        "concurrency": concurrency,
        "flows": done,
        "elapsed": elapsed,
        "cpu_ms_per_flow": cpu * 1000 / max(done, 1),
        "timings": timings,
        "instructions_per_flow": [instructions.get(p, 0) / max(done, 1) for p in server_pids]
        if count_instructions
        else None,
    }


def server_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of the server process and all its descendants (workers)."""
    ticks = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}  # pid -> (parent, cpu seconds)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks)
    tree, grew = {pid}, True
    while grew:
        more = {p for p, (parent, _) in stats.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    return sum(stats[p][1] for p in tree if p in stats)


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"--instructions needs {name} (Debian package valgrind)")
    return found


def callgrind_prefix(directory: Path) -> list[str]:
    """The command that runs a process under callgrind with counting off (turned on for
    the measured flows only by :func:`callgrind_counting`)."""
    return [
        _tool("valgrind"),
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={directory}/callgrind.%p",
        "--log-file=/dev/null",
    ]


def callgrind_python(directory: Path) -> str:
    """An executable that multiprocessing can spawn the server with: our interpreter under
    callgrind."""
    wrapper = directory / "python-under-callgrind"
    prefix = " ".join(callgrind_prefix(directory))
    wrapper.write_text(f'#!/bin/sh\nexec {prefix} {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


@contextlib.contextmanager
def callgrind_counting(directory: Path, pids: list[int]) -> Any:
    """Count instructions in ``pids`` while the block runs; the counts end up in the
    returned dict (pid -> instructions) when it exits."""
    counts: dict[int, int] = {}

    def control(*args: str) -> None:
        for pid in pids:
            subprocess.run(  # noqa: S603 - fixed arguments
                [_tool("callgrind_control"), *args, str(pid)], check=True, capture_output=True
            )

    before = set(directory.glob("callgrind.*"))
    control("--zero")
    control("--instr=on")
    try:
        yield counts
    finally:
        control("--instr=off")
        control("--dump")
        keep = os.environ.get("HEALTHID_BENCH_KEEP_CALLGRIND")  # for callgrind_annotate
        for pid in pids:
            for dump in sorted(set(directory.glob(f"callgrind.{pid}*")) - before):
                if keep:
                    shutil.copy(dump, Path(keep) / f"{dump.name}.{secrets.token_hex(3)}")
                for line in dump.read_text(errors="replace").splitlines():
                    if line.startswith(("summary:", "totals:")):
                        counts[pid] = max(counts.get(pid, 0), int(line.split()[1]))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


@contextlib.asynccontextmanager
async def running_idp(
    directory: Path,
    db_url: str,
    prefix: str,
    workers: int,
    enclave_mode: str,
    callgrind: bool = False,
) -> AsyncIterator[tuple[str, list[int]]]:
    """The IdP (and, for ``process``, the enclave process before it) on a fresh port: its base
    URL and the process ids whose CPU counts as the server's (the enclave's last). With
    ``callgrind``, both run under it (counting off until :func:`callgrind_counting`)."""
    slow = 20 if callgrind else 1  # startup under valgrind
    enclave: subprocess.Popen[bytes] | None = None
    server = None
    try:
        if enclave_mode == "process":  # the enclave as its own process, on a Unix socket
            socket_path = directory / "enclave.sock"
            socket_path.unlink(missing_ok=True)
            os.environ["HEALTHID_BENCH_ENCLAVE_SOCKET"] = str(socket_path)
            enclave = subprocess.Popen(  # noqa: S603 - our interpreter, fixed arguments
                (callgrind_prefix(directory) if callgrind else [])
                + [sys.executable]
                + (  # write cProfile stats of the enclave process
                    ["-m", "cProfile", "-o", profile]
                    if (profile := os.environ.get("HEALTHID_BENCH_ENCLAVE_PROFILE"))
                    else []
                )
                + ["-m", "healthid.enclave_cli", "--socket", str(socket_path)],
                env={
                    **{k: v for k, v in os.environ.items() if not k.startswith("HEALTHID_")},
                    "HEALTHID_DATA_DIR": str(directory / "idp"),
                    "HEALTHID_ENCLAVE_WORKERS": "1",
                },
            )
            for _ in range(300 * slow):
                if socket_path.exists():
                    break
                await asyncio.sleep(0.05)
        else:
            os.environ.pop("HEALTHID_BENCH_ENCLAVE_SOCKET", None)
        port = free_port()
        context = multiprocessing.get_context("spawn")
        if callgrind:
            context.set_executable(callgrind_python(directory))
        server = context.Process(
            target=serve, args=(str(directory), db_url, prefix, port, workers), daemon=False
        )
        server.start()
        base = f"http://127.0.0.1:{port}"
        for _ in range(200 * slow):
            try:
                async with httpx.AsyncClient(timeout=5 * slow) as c:
                    if (await c.get(base + "/healthz")).status_code == 200:
                        break
            except httpx.HTTPError:
                await asyncio.sleep(0.1)
        yield base, [server.pid or 0] + ([enclave.pid] if enclave is not None else [])
    finally:
        if enclave is not None:
            enclave.terminate()
            enclave.wait(timeout=30)
        if server is not None:
            if server.pid is not None:
                os.kill(server.pid, signal.SIGINT)  # uvicorn shuts down gracefully
            server.join(timeout=30)
            if server.is_alive():
                server.terminate()
                server.join(timeout=10)


def verdict(good: bool) -> str:
    return "MET" if good else "MISSED"


def report(level: int, r: dict[str, Any], enclave_mode: str) -> None:
    rate = r["flows"] / r["elapsed"]
    print(
        f"\nconcurrency {level}: {r['flows']} flows, {rate:7.1f} flows/s, "
        f"server CPU {r['cpu_ms_per_flow']:.2f} ms/flow "
        f"(this load generator: {r['client_cpu_ms_per_flow']:.2f} ms/flow)"
        + (
            f"\n  of which the enclave process: {r['enclave_cpu_ms_per_flow']:.2f} ms/flow"
            if enclave_mode == "process"
            else ""
        )
    )
    if r["instructions_per_flow"] is not None:
        server, *enclave = r["instructions_per_flow"]
        print(
            f"  instructions per flow (callgrind): server {server / 1e6:.2f} M"
            + (f", enclave process {enclave[0] / 1e6:.2f} M" if enclave else "")
        )
        return  # the times under valgrind mean nothing
    for endpoint, values in r["timings"].items():
        p50, p99 = pct(values, 0.5), pct(values, 0.99)
        print(f"  {endpoint:14} p50 {p50:7.1f} ms   p99 {p99:7.1f} ms")


def targets_met(r: dict[str, Any]) -> bool:
    rate = r["flows"] / r["elapsed"]
    worst = max(pct(v, 0.99) for v in r["timings"].values())
    cpu = r["cpu_ms_per_flow"]
    print(
        f"\ntargets: >= {TARGET_FLOWS_PER_S} flows/s: "
        f"{verdict(rate >= TARGET_FLOWS_PER_S)} ({rate:.0f})"
    )
    print(
        f"         <= {TARGET_CPU_MS} ms server CPU/flow: "
        + f"{verdict(cpu <= TARGET_CPU_MS)} ({cpu:.2f})"
    )
    print(f"         p99 < {TARGET_P99_MS} ms: {verdict(worst < TARGET_P99_MS)} ({worst:.0f})")
    return rate >= TARGET_FLOWS_PER_S and cpu <= TARGET_CPU_MS and worst < TARGET_P99_MS


def boundary_summary(cpu: dict[str, list[float]]) -> bool:
    """The enclave boundary's cost from interleaved rounds: each process round against the
    mean of the in-process rounds beside it (the machine's speed drifts between rounds)."""
    inproc, proc = cpu["in-process"], cpu["process"]
    pairs = [p - (inproc[i] + inproc[min(i + 1, len(inproc) - 1)]) / 2 for i, p in enumerate(proc)]
    median = statistics.median(pairs)
    print(
        "\nthe enclave boundary (server CPU per flow, process minus in-process, interleaved "
        f"rounds):\n  in-process {' '.join(f'{v:.2f}' for v in inproc)} ms"
        f"\n  process    {' '.join(f'{v:.2f}' for v in proc)} ms"
        f"\n  each process round minus its neighbours: {' '.join(f'{d:+.2f}' for d in pairs)} ms"
    )
    print(
        f"target: < {TARGET_BOUNDARY_MS} ms added per flow: "
        f"{verdict(median < TARGET_BOUNDARY_MS)} (median {median:+.2f})"
    )
    return median < TARGET_BOUNDARY_MS


async def main(args: argparse.Namespace) -> int:
    from healthid.demo.synthetic import write_registry
    from healthid.host.registry_import import import_registry
    from healthid.runtime import open_runtime
    from healthid.settings import load_settings

    database = await create_database("flow")
    db_url = database.url
    prefix = f"healthid-flow-{secrets.token_hex(4)}:"
    modes = (
        ["in-process", "process"] * args.rounds + ["in-process"]
        if args.enclave == "both"
        else [args.enclave] * args.rounds
    )
    cpu: dict[str, list[float]] = defaultdict(list)
    ok = True
    try:
        with tempfile.TemporaryDirectory() as tmp:
            directory = Path(tmp)
            rp_material(directory)
            settings = load_settings(
                data_dir=directory / "idp",
                database_url=db_url,
                redis_url=REDIS_URL,
                redis_prefix=prefix,
                enclave_workers=1,
            )
            rt = await open_runtime(settings)
            buf = io.StringIO()
            write_registry(buf, args.wallets, seed=41)
            assert (
                await import_registry(
                    rt.enclave, rt.policyholders, buf.getvalue().encode(), filename="r.csv"
                )
            ).ok
            await rt.ensure_keys()
            await rt.aclose()
            wallets: list[tuple[ec.EllipticCurvePrivateKey, str]] = []
            task_dir = directory / "taskcpu"
            if args.access_log:
                os.environ["HEALTHID_BENCH_ACCESS_LOG"] = "1"
            if args.cpu_by_task:
                task_dir.mkdir()
                os.environ["HEALTHID_BENCH_TASK_CPU"] = str(task_dir)
            for round_, mode in enumerate(modes, 1):
                async with running_idp(
                    directory, db_url, prefix, args.workers, mode, args.instructions
                ) as (base, pids):
                    if not wallets:  # enrolled once; both kinds of enclave share the root key
                        wallets = await enrol(base, directory, args.wallets)
                    print(
                        f"\n== complete flows through the IdP (uvicorn, {args.workers} "
                        f"worker(s), PostgreSQL + Redis, {mode} enclave)"
                        + (f", round {round_} of {len(modes)}" if len(modes) > 1 else "")
                        + f"\nthis machine now: reference workload {machine_speed_ms():.0f} ms CPU "
                        "(bench/benchlib.machine_speed_ms; lower is faster)"
                    )
                    for level in args.concurrency:
                        client_profile = os.environ.get("HEALTHID_BENCH_CLIENT_PROFILE")
                        profiler = cProfile.Profile() if client_profile else None
                        if profiler is not None:  # cProfile stats of this load generator
                            profiler.enable()
                        r = await run_level(
                            base, directory, wallets, level, args.seconds, pids, args.instructions
                        )
                        if profiler is not None and client_profile:
                            profiler.disable()
                            profiler.dump_stats(client_profile)
                        report(level, r, mode)
                        if args.instructions:
                            continue  # no figure here is comparable with the targets
                        if level == max(args.concurrency):
                            cpu[mode].append(r["cpu_ms_per_flow"])
                            ok = targets_met(r) and ok
                if args.access_log:
                    log = directory / "server-log.jsonl"
                    lines = log.read_bytes().count(b"\n") if log.exists() else 0
                    print(f"access log: {lines} lines so far ({log.name})")
                if args.cpu_by_task:  # the workers wrote their figures as they stopped
                    print("\n".join(summary(task_dir)))
                    for path in task_dir.glob("taskcpu.*.json"):
                        path.unlink()
            if args.enclave == "both":
                ok = boundary_summary(cpu) and ok
    finally:
        os.environ.pop("HEALTHID_BENCH_ENCLAVE_SOCKET", None)
        os.environ.pop("HEALTHID_BENCH_TASK_CPU", None)
        os.environ.pop("HEALTHID_BENCH_ACCESS_LOG", None)
        await drop_database(database.name)
        await forget_keys(REDIS_URL, prefix)
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="complete flows per second through the IdP")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--wallets", type=int, default=64)
    parser.add_argument(
        "--workers", type=int, default=2, help="server worker processes (healthid serve --workers)"
    )
    parser.add_argument(
        "--enclave",
        choices=["in-process", "process", "both"],
        default="in-process",
        help="process: the enclave runs as `healthid enclave serve` behind its RPC; its CPU "
        "counts as the server's. both: rounds of each, interleaved (in-process first and "
        "last), and the boundary's cost per flow from them",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="runs of each kind of enclave, one after the other (both: in-process, process, "
        "..., in-process)",
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count the instructions per flow of the server (one worker) and the enclave "
        "process under callgrind instead of timing them: a figure for comparing code, "
        "independent of the VM's speed",
    )
    parser.add_argument(
        "--cpu-by-task",
        action="store_true",
        help="after each round, the server workers' CPU per flow by asyncio task (endpoint) "
        "and by stretch between awaits (bench/taskcpu.py): where the time goes. The timing "
        "itself costs a little, so these rounds are not for the targets",
    )
    parser.add_argument(
        "--access-log",
        action="store_true",
        help="log as healthid serve does in production: a JSON access line per request (to a "
        "file); without it the server logs only warnings",
    )
    import uvloop

    parsed = parser.parse_args()
    if parsed.instructions:
        parsed.workers = 1
    sys.exit(uvloop.run(main(parsed)))
