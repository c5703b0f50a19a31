"""The registry in SQLite and PostgreSQL: only ciphertext at rest, records bound to their owner."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections.abc import AsyncIterator
from contextlib import closing
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from healthid.demo.synthetic import synthetic_rows
from healthid.enclave.registry.model import Policyholder
from healthid.enclave.service import Enclave
from healthid.enclave.vault import RootKey, Vault, VaultError
from healthid.host.registry_import import import_registry
from healthid.store.sql.engine import create_engine, upgrade
from healthid.store.sql.policyholders import PolicyholderRepository
from healthid.store.sql.schema import records

COUNT = 60


def registry_csv(count: int = COUNT, seed: int = 7) -> tuple[bytes, list[dict[str, str]]]:
    rows = list(synthetic_rows(count, seed=seed))
    # some policyholders with names and birth dates that are easy to spot in a dump
    rows[0] |= {
        "given_name": "Wilhelmine",
        "family_name": "Plaintextfinder",
        "birth_date": "1961-03-17",
    }
    rows[1] |= {
        "given_name": "Jürgen",
        "family_name": "Übermaß-Ölmühle",
        "birth_date": "1977-11-02",
    }
    header = list(rows[0])
    lines = [",".join(header)] + [",".join(r[h] for h in header) for r in rows]
    return ("\n".join(lines) + "\n").encode(), rows


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(db_url)
    await upgrade(eng)
    yield eng
    await eng.dispose()


@pytest.fixture
def enclave() -> Enclave:
    return Enclave(Vault(RootKey.from_secret(os.urandom(32))), today=lambda: date(2026, 11, 28))


async def dump_database(engine: AsyncEngine) -> bytes:
    """Everything the database holds, as the operator could read it."""
    url = engine.url
    if url.get_backend_name() == "sqlite":
        db_path = Path(str(url.database))
        raw = b"".join(p.read_bytes() for p in db_path.parent.glob(db_path.name + "*"))
        with closing(sqlite3.connect(db_path)) as conn:
            lines = list(conn.iterdump())
        return raw + "\n".join(lines).encode()
    env = {**os.environ, "PGPASSWORD": url.password or ""}
    cmd = [
        "pg_dump",
        "-h",
        url.host or "127.0.0.1",
        "-p",
        str(url.port or 5432),
        "-U",
        url.username or "postgres",
        url.database or "",
    ]
    return subprocess.run(cmd, check=True, capture_output=True, env=env).stdout


def needles(row: dict[str, str]) -> list[bytes]:
    values = [row["kvnr"], row["given_name"], row["family_name"], row["birth_date"]]
    out = []
    for v in values:
        raw = v.encode()
        out += [raw, raw.hex().encode(), raw.hex().upper().encode()]
    return out


async def test_import_stores_no_plaintext_names_kvnrs_or_birth_dates(
    engine: AsyncEngine, enclave: Enclave
) -> None:
    data, rows = registry_csv()
    repo = PolicyholderRepository(engine)
    result = await import_registry(enclave, repo, data, filename="registry.csv")
    assert result.ok and result.imported == COUNT
    assert await repo.count() == COUNT
    dump = await dump_database(engine)
    assert len(dump) > COUNT * 100  # the dump really contains the data
    for row in rows[:2] + rows[-5:]:
        for needle in needles(row):
            assert needle not in dump, "plaintext personal data found in the database dump"
    # and the enclave can read every record back
    async for batch in repo.iter_all(batch_size=25):
        assert await enclave.verify_policyholders(batch) == []
    sealed = await repo.find_by_kvnr_index(enclave.kvnr_index(rows[0]["kvnr"]))
    assert sealed is not None
    assert enclave.open_policyholder(sealed).family_name == "Plaintextfinder"


async def test_record_copied_to_another_policyholder_fails_to_decrypt(
    engine: AsyncEngine, enclave: Enclave
) -> None:
    data, rows = registry_csv()
    repo = PolicyholderRepository(engine)
    assert (await import_registry(enclave, repo, data, filename="r.csv")).ok
    victim = await repo.find_by_kvnr_index(enclave.kvnr_index(rows[0]["kvnr"]))
    other = await repo.find_by_kvnr_index(enclave.kvnr_index(rows[1]["kvnr"]))
    assert victim is not None and other is not None
    async with engine.begin() as conn:
        await conn.execute(
            update(records)
            .where(records.c.pseudonym == other.pseudonym)
            .values(ciphertext=victim.records[0].ciphertext)
        )
    moved = await repo.get(other.pseudonym)
    assert moved is not None and moved.records[0].ciphertext == victim.records[0].ciphertext
    with pytest.raises(VaultError):
        enclave.open_policyholder(moved)
    assert await enclave.verify_policyholders([moved]) == [other.pseudonym]
    # the victim's own row still decrypts
    assert enclave.open_policyholder(victim).given_name == "Wilhelmine"


async def test_whole_row_moved_under_another_kvnr_index_is_refused(
    engine: AsyncEngine, enclave: Enclave
) -> None:
    data, rows = registry_csv()
    repo = PolicyholderRepository(engine)
    assert (await import_registry(enclave, repo, data, filename="r.csv")).ok
    a = await repo.find_by_kvnr_index(enclave.kvnr_index(rows[0]["kvnr"]))
    b = await repo.find_by_kvnr_index(enclave.kvnr_index(rows[1]["kvnr"]))
    assert a is not None and b is not None
    forged = type(a)(**{**a.__dict__, "kvnr_index": b.kvnr_index})
    with pytest.raises(VaultError, match="KVNR index"):
        enclave.open_policyholder(forged)


async def test_shredding_the_data_key_makes_records_unreadable(
    engine: AsyncEngine, enclave: Enclave
) -> None:
    data, rows = registry_csv(count=5)
    repo = PolicyholderRepository(engine)
    assert (await import_registry(enclave, repo, data, filename="r.csv")).ok
    target = await repo.find_by_kvnr_index(enclave.kvnr_index(rows[2]["kvnr"]))
    assert target is not None
    assert await repo.shred(target.pseudonym)
    shredded = await repo.get(target.pseudonym)
    assert shredded is not None and shredded.wrapped_key is None
    assert shredded.records == target.records  # ciphertext is still there ...
    with pytest.raises(VaultError, match="shredded"):
        enclave.open_policyholder(shredded)  # ... but nobody can read it
    # even with the old wrapped key from a backup, once the row is erased nothing remains
    assert await repo.erase(target.pseudonym)
    assert await repo.get(target.pseudonym) is None
    async with engine.connect() as conn:
        left = (
            await conn.execute(select(records).where(records.c.pseudonym == target.pseudonym))
        ).all()
    assert left == []


async def test_import_is_all_or_nothing(engine: AsyncEngine, enclave: Enclave) -> None:
    data, rows = registry_csv(count=10)
    bad = data.replace(rows[6]["ik"].encode() + b",", b"123456789,", 1)  # first row with that IK
    repo = PolicyholderRepository(engine)
    result = await import_registry(enclave, repo, bad, filename="r.csv")
    assert not result.ok and result.imported == 0
    assert next((e.field, e.reason) for e in result.errors) == ("ik", "the IK check digit is wrong")
    assert await repo.count() == 0


async def test_reimport_of_a_stored_kvnr_is_refused_and_changes_nothing(
    engine: AsyncEngine, enclave: Enclave
) -> None:
    data, _rows = registry_csv(count=10)
    repo = PolicyholderRepository(engine)
    assert (await import_registry(enclave, repo, data, filename="r.csv")).ok
    more, _ = registry_csv(count=3, seed=99)
    mixed = more + b"\n".join(data.splitlines()[3:4]) + b"\n"
    result = await import_registry(enclave, repo, mixed, filename="r.csv")
    assert not result.ok
    assert [(e.row, e.field, e.reason) for e in result.errors] == [
        (5, "kvnr", "already in the registry")
    ]
    assert await repo.count() == 10


async def test_lookup_by_name_and_birth_date_finds_all_candidates(
    engine: AsyncEngine, enclave: Enclave
) -> None:
    data, rows = registry_csv(count=20)
    repo = PolicyholderRepository(engine)
    assert (await import_registry(enclave, repo, data, filename="r.csv")).ok
    from healthid.enclave.registry.model import name_birth_lookup_value
    from healthid.enclave.service import NAME_BIRTH_INDEX

    r = rows[1]
    digest = enclave._vault.blind_index(
        NAME_BIRTH_INDEX,
        name_birth_lookup_value("UEBERMASS OELMUEHLE", r["given_name"], r["birth_date"]),
    )
    found = await repo.find_by_lookup(NAME_BIRTH_INDEX, digest)
    assert [enclave.open_policyholder(f).kvnr for f in found] == [r["kvnr"]]
    assert isinstance(enclave.open_policyholder(found[0]), Policyholder)


async def test_worker_pool_import_matches_inline_rules(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Large imports seal in enclave worker processes; errors and duplicates span chunks."""
    import healthid.enclave.service as service

    monkeypatch.setattr(service, "IMPORT_CHUNK", 40)
    root = RootKey.from_secret(os.urandom(32))
    pooled = Enclave(Vault(root), root=root, workers=2, today=lambda: date(2026, 11, 28))
    try:
        data, rows = registry_csv(count=200)
        lines = data.decode().splitlines()
        lines.append(lines[5])  # duplicate of row 6, in the last chunk
        bad = ("\n".join(lines) + "\n").encode()
        repo = PolicyholderRepository(engine)
        result = await import_registry(pooled, repo, bad, filename="r.csv")
        assert [(e.row, e.reason) for e in result.errors] == [
            (202, "duplicate KVNR (same as row 6)")
        ]
        assert await repo.count() == 0
        result = await import_registry(pooled, repo, data, filename="r.csv")
        assert result.ok and result.imported == 200
        sealed = await repo.find_by_kvnr_index(pooled.kvnr_index(rows[150]["kvnr"]))
        assert sealed is not None
        # sealed by a worker, opened by the parent: same root key, same vault rules
        assert pooled.open_policyholder(sealed).kvnr == rows[150]["kvnr"]
    finally:
        pooled.close()
