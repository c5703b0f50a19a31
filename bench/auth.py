"""Benchmark: device-key authentications per second (challenge + verify round trip).

    .venv/bin/python bench/auth.py [--seconds 10] [--devices 50] [--processes 2]

Runs the wallet service's login flow (challenge in Redis, single-use consume, device lookup,
ES256 verification, counter advance in PostgreSQL, sealed history event) against the real
PostgreSQL and Redis, in several processes (two cores), and compares with the target of
issue #3: at least 1,500 authentications/s.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import multiprocessing
import os
import secrets
import sys
import time

from benchlib import create_database, drop_database, forget_keys

TARGET_PER_S = 1_500
REDIS_URL = os.environ.get("HEALTHID_TEST_REDIS_URL", "redis://127.0.0.1:6379/14")
REDIS_PREFIX = f"healthid-bench-{os.getppid()}:"  # shared by the workers of one run
CONCURRENCY = 16  # logins in flight per process


def _settings(db_url: str, data_dir: str):
    from healthid.settings import load_settings

    return load_settings(
        database_url=db_url,
        redis_url=REDIS_URL,
        redis_prefix=os.environ.get("HEALTHID_BENCH_PREFIX", REDIS_PREFIX),
        data_dir=data_dir,
        enclave_workers=1,
    )


async def _setup(db_url: str, data_dir: str, devices: int) -> list[tuple[str, str]]:
    """Import a registry, enrol ``devices`` wallets; return (wallet dir, device id) pairs."""
    from healthid.demo.egk_test_ca import TestEgkCa
    from healthid.demo.synthetic import synthetic_rows, write_registry
    from healthid.host.registry_import import import_registry
    from healthid.runtime import EGK_TEST_CA_DIR, open_runtime
    from healthid.wallet.client import b64d, b64e

    settings = _settings(db_url, data_dir)
    rt = await open_runtime(settings)
    buf = io.StringIO()
    write_registry(buf, devices, seed=11)
    assert (
        await import_registry(
            rt.enclave, rt.policyholders, buf.getvalue().encode(), filename="b.csv"
        )
    ).ok
    svc = rt.wallet_service()
    ca = TestEgkCa.create(settings.data_dir / EGK_TEST_CA_DIR)
    out = []
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from healthid.protocol.attestation import make_software_attestation

    for i, row in enumerate(synthetic_rows(devices, seed=11)):
        card = ca.issue_card(row["kvnr"], row["ik"], row["given_name"], row["family_name"])
        enrolment = await svc.start_enrolment(ip=f"10.0.{i // 250}.{i % 250}")
        await svc.prove_with_egk(
            enrolment.enrolment_id,
            certificate=card.certificate_der,
            signature=card.sign(enrolment.challenge),
            ip="127.0.0.1",
        )
        key = ec.generate_private_key(ec.SECP256R1())
        spki = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        bound = await svc.bind_device(
            enrolment.enrolment_id,
            public_key=spki,
            attestation_format="healthid-software",
            attestation=make_software_attestation(key, enrolment.challenge, settings.wallet_app_id),
        )
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        out.append((pem, bound.device_id))
    del b64d, b64e
    await rt.aclose()
    return out


def _worker(
    db_url: str,
    data_dir: str,
    devices: list[tuple[str, str]],
    seconds: float,
    q: multiprocessing.Queue,
) -> None:  # type: ignore[type-arg]
    async def run() -> int:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        from healthid.protocol import device_auth
        from healthid.runtime import open_runtime

        rt = await open_runtime(_settings(db_url, data_dir), migrate=False)
        svc = rt.wallet_service()
        keys = [(serialization.load_pem_private_key(p.encode(), None), d) for p, d in devices]
        counters = {d: int(time.time() * 1000) for _, d in keys}
        done = 0
        deadline = time.perf_counter() + seconds

        async def one(slot: int) -> None:
            nonlocal done
            key, device_id = keys[slot % len(keys)]
            while time.perf_counter() < deadline:
                ip = f"10.9.{slot}.{done % 250}"  # phones come from many addresses
                cid, challenge = await svc.login_challenge(device_id, ip=ip)
                counters[device_id] += 1
                msg = device_auth.message(challenge, device_id, counters[device_id])
                assert isinstance(key, ec.EllipticCurvePrivateKey)
                r, s = decode_dss_signature(key.sign(msg, ec.ECDSA(hashes.SHA256())))
                sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
                await svc.login(
                    challenge_id=cid,
                    device_id=device_id,
                    counter=counters[device_id],
                    signature=sig,
                    ip=ip,
                )
                done += 1

        await asyncio.gather(*(one(i) for i in range(min(CONCURRENCY, len(keys)))))
        await rt.aclose()
        return done

    try:
        import uvloop  # the production server (uvicorn) uses it when installed

        q.put(uvloop.run(run()))
    except ImportError:
        q.put(asyncio.run(run()))


def main() -> int:
    import tempfile

    parser = argparse.ArgumentParser(description="device-key authentications per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--devices", type=int, default=64)
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    os.environ["HEALTHID_BENCH_PREFIX"] = f"healthid-bench-{secrets.token_hex(4)}:"
    database = asyncio.run(create_database("bench"))
    name, url = database.name, database.url
    try:
        with tempfile.TemporaryDirectory() as data_dir:
            devices = asyncio.run(_setup(url, data_dir, args.devices))
            share = [devices[i :: args.processes] for i in range(args.processes)]
            ctx = multiprocessing.get_context("spawn")
            q = ctx.Queue()
            procs = [
                ctx.Process(target=_worker, args=(url, data_dir, s, args.seconds, q)) for s in share
            ]
            start = time.perf_counter()
            for p in procs:
                p.start()
            total = sum(q.get(timeout=args.seconds + 120) for _ in procs)
            for p in procs:
                p.join(timeout=30)
            elapsed = time.perf_counter() - start
    finally:
        asyncio.run(drop_database(name))
        asyncio.run(forget_keys(REDIS_URL, os.environ["HEALTHID_BENCH_PREFIX"]))
    rate = total / args.seconds
    print("device-key authentication (challenge + verify) against PostgreSQL + Redis")
    print(
        f"  processes     {args.processes}, {CONCURRENCY} logins in flight each, "
        f"{args.devices} devices"
    )
    print(f"  logins        {total} in {args.seconds:.0f} s (wall {elapsed:.1f} s incl. start-up)")
    print(
        f"  rate          {rate:8.0f} /s   (target >= {TARGET_PER_S}: "
        f"{'MET' if rate >= TARGET_PER_S else 'MISSED'})"
    )
    return 0 if rate >= TARGET_PER_S else 1


if __name__ == "__main__":
    sys.exit(main())
