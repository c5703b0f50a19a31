"""Benchmark: does enrolment and login stay as fast with 1,000,000 policyholders as with 10,000?

    .venv/bin/python bench/scale.py [--small 10000] [--large 1000000] [--enrolments 100]
                                    [--logins 400] [--rounds 4]

Against the real PostgreSQL and Redis, through the wallet service with the in-process enclave:
imports ``--small`` synthetic policyholders into one database and ``--large`` into another,
then measures, alternating between the two in ``--rounds`` rounds (the machine's speed drifts
over the minutes a run takes; alternating puts the drift on both sizes alike), the latency of
enrolments (eGK proof: card check in the enclave, KVNR blind-index lookup, identity match,
device binding) and of device-key logins (challenge + assertion), with people drawn from the
whole registry of each size. It also reads the Redis memory of
the device sessions the logins left. Targets of issue #7 item 8: latency at the large size
within 10 % of the small one; at most 2 KB of Redis memory per active login session.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

from benchlib import create_database, drop_database, forget_keys

TARGET_RATIO = 1.10
TARGET_SESSION_BYTES = 2048
REDIS_URL = os.environ.get("HEALTHID_TEST_REDIS_URL", "redis://127.0.0.1:6379/12")
SEED = 7


def registry_slice(start: int, stop: int) -> bytes:
    """Rows ``start``..``stop`` of the synthetic registry (one generator: KVNRs stay unique)."""
    from healthid.demo.synthetic import FIELDS, synthetic_rows

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    for i, row in enumerate(synthetic_rows(stop, seed=SEED)):
        if i >= start:
            writer.writerow(row)
    return out.getvalue().encode()


def rows_at(indexes: set[int], stop: int) -> dict[int, dict[str, str]]:
    from healthid.demo.synthetic import synthetic_rows

    return {i: row for i, row in enumerate(synthetic_rows(stop, seed=SEED)) if i in indexes}


async def import_rows(rt: Any, start: int, stop: int, dsn: str) -> float:
    from healthid.host.registry_import import import_registry

    data = registry_slice(start, stop)
    t0 = time.perf_counter()
    result = await import_registry(rt.enclave, rt.policyholders, data, filename="scale.csv")
    assert result.ok, result
    seconds = time.perf_counter() - t0
    # what autovacuum does soon after a bulk load anyway: fresh statistics, no background
    # vacuum competing with the measurement
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()
    return seconds


async def measure(
    rt: Any, people: list[dict[str, str]], logins: int, data_dir: Path
) -> dict[str, list[float]]:
    """Enrol ``people`` (one device each), then ``logins`` logins over those devices."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    from healthid.demo.egk_test_ca import TestEgkCa
    from healthid.protocol import device_auth
    from healthid.protocol.attestation import make_software_attestation
    from healthid.runtime import EGK_TEST_CA_DIR

    svc = rt.wallet_service()
    ca = TestEgkCa.create(data_dir / EGK_TEST_CA_DIR)
    enrol_ms: list[float] = []
    devices: list[tuple[ec.EllipticCurvePrivateKey, str]] = []
    for n, row in enumerate(people):
        card = ca.issue_card(row["kvnr"], row["ik"], row["given_name"], row["family_name"])
        key = ec.generate_private_key(ec.SECP256R1())
        spki = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        ip = f"10.{n // 60000}.{(n // 250) % 240}.{n % 250}"
        t0 = time.perf_counter()
        enrolment = await svc.start_enrolment(ip=ip)
        await svc.prove_with_egk(
            enrolment.enrolment_id,
            certificate=card.certificate_der,
            signature=card.sign(enrolment.challenge),
            ip=ip,
        )
        bound = await svc.bind_device(
            enrolment.enrolment_id,
            public_key=spki,
            attestation_format="healthid-software",
            attestation=make_software_attestation(
                key, enrolment.challenge, rt.settings.wallet_app_id
            ),
        )
        enrol_ms.append((time.perf_counter() - t0) * 1000)
        devices.append((key, bound.device_id))
    login_ms: list[float] = []
    counters = {d: int(time.time() * 1000) for _, d in devices}
    warm_up = len(devices)  # one unmeasured login per device first (its record gets cached)
    for n in range(-warm_up, logins):
        key, device_id = devices[n % len(devices)]
        ip = f"10.200.{(n // 250) % 240}.{n % 250}"  # n < 0 in the warm-up: another address
        t0 = time.perf_counter()
        challenge_id, challenge = await svc.login_challenge(device_id, ip=ip)
        counters[device_id] += 1
        message = device_auth.message(challenge, device_id, counters[device_id])
        r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
        await svc.login(
            challenge_id=challenge_id,
            device_id=device_id,
            counter=counters[device_id],
            signature=r.to_bytes(32, "big") + s.to_bytes(32, "big"),
            ip=ip,
        )
        if n >= 0:
            login_ms.append((time.perf_counter() - t0) * 1000)
    return {"enrolment": enrol_ms, "login": login_ms}


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def session_bytes(prefix: str) -> tuple[int, float]:
    """How many device sessions Redis holds under ``prefix`` and their mean MEMORY USAGE."""
    import redis.asyncio as redis

    client = redis.from_url(REDIS_URL)
    try:
        sizes = [
            int(await client.memory_usage(key) or 0)
            async for key in client.scan_iter(match=f"{prefix}devsess:*", count=1000)
        ]
    finally:
        await client.aclose()
    return len(sizes), (statistics.mean(sizes) if sizes else 0.0)


async def open_sized(name: str, size: int, tmp: Path, prefix: str) -> tuple[Any, Any, float]:
    """A runtime over a new database holding ``size`` policyholders: (database, runtime,
    import seconds)."""
    from healthid.runtime import open_runtime
    from healthid.settings import load_settings

    database = await create_database(name)
    settings = load_settings(
        data_dir=tmp,  # one data directory: the same enclave root key and eGK CA for both
        database_url=database.url,
        redis_url=REDIS_URL,
        redis_prefix=prefix,
        enclave_workers=os.cpu_count() or 1,
    )
    rt = await open_runtime(settings)
    seconds = await import_rows(rt, 0, size, database.dsn)
    return database, rt, seconds


async def main(args: argparse.Namespace) -> int:
    """Both sizes side by side (two databases), measured in alternating rounds, so that the
    machine's drift over the minutes of a run falls on both alike."""
    prefix = f"healthid-scale-{secrets.token_hex(4)}:"
    rnd = random.Random(1)  # which test people to enrol
    ok = True
    opened: list[tuple[Any, Any]] = []
    results: dict[str, dict[str, list[float]]] = {
        size: {"enrolment": [], "login": []} for size in ("small", "large")
    }
    try:
        with tempfile.TemporaryDirectory() as tmp:
            sizes = {"small": args.small, "large": args.large}
            runtimes = {}
            for size, count in sizes.items():
                database, rt, seconds = await open_sized(f"scale{size}", count, Path(tmp), prefix)
                opened.append((database, rt))
                runtimes[size] = rt
                print(
                    f"imported {count:,} policyholders in {seconds:.0f} s "
                    f"({count / seconds:,.0f} rows/s)"
                )
            people = {
                size: list(rows_at(set(rnd.sample(range(count), args.enrolments)), count).values())
                for size, count in sizes.items()
            }
            rounds = args.rounds
            for r in range(rounds):
                for size in ("small", "large") if r % 2 == 0 else ("large", "small"):
                    chunk = people[size][r::rounds]
                    measured = await measure(
                        runtimes[size], chunk, args.logins // rounds, Path(tmp)
                    )
                    for what, values in measured.items():
                        results[size][what] += values
            sessions, mean_bytes = await session_bytes(prefix)
        print("\nlatency (ms)        size        p50       p99")
        for what in ("enrolment", "login"):
            for size in ("small", "large"):
                values = results[size][what]
                count = args.small if size == "small" else args.large
                print(f"  {what:10} {count:>12,} {p(values, 0.5):9.2f} {p(values, 0.99):9.2f}")
            ratio = p(results["large"][what], 0.5) / p(results["small"][what], 0.5)
            verdict = "MET" if ratio <= TARGET_RATIO else "MISSED"
            print(f"  {what} p50 at {args.large:,} / at {args.small:,}: {ratio:.2f} ({verdict})")
            ok = ok and ratio <= TARGET_RATIO
        verdict = "MET" if mean_bytes <= TARGET_SESSION_BYTES else "MISSED"
        print(
            f"\nRedis memory per device session: {mean_bytes:.0f} bytes over {sessions} sessions "
            f"(target <= {TARGET_SESSION_BYTES}: {verdict})"
        )
        ok = ok and mean_bytes <= TARGET_SESSION_BYTES
    finally:
        for database, rt in opened:
            await rt.aclose()
            await drop_database(database.name)
        await forget_keys(REDIS_URL, prefix)
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="latency at 10k vs 1M policyholders")
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--enrolments", type=int, default=100)
    parser.add_argument("--logins", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=4, help="alternations of the two sizes")
    sys.exit(asyncio.run(main(parser.parse_args())))
