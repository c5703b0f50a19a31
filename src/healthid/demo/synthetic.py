"""Synthetic policyholder registries of any size, for development, tests and benchmarks.

Every person is made up: names are drawn from short lists, KVNRs and IKs are generated with
valid check digits. Deterministic for a given seed. Written as a stream, so a million rows
need no more memory than ten.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterator
from datetime import date, timedelta
from typing import IO

from healthid.protocol.identifiers import ik_check_digit, kvnr_check_digit

GIVEN = (
    "Anna Ben Clara David Emma Felix Greta Hannes Ida Jonas Karla Leon Mia Noah Olga Paul "
    "Queenie Rafael Sophie Till Ute Valentin Wilma Xaver Yara Zeno Jürgen Ömer Søren Zoë"
).split()
FAMILY = (
    "Beispiel Muster Probe Testmann Fiktiv Erfunden Lorem Ipsum Dolor Sitamet Consectetur "
    "Adipisci Mustermann Schmidt-Probe Müller-Test Größe Weiß Übel Ärmel Özdemir-Test"
).split()
STREETS = "Teststraße Musterweg Probeallee Beispielplatz Am Fiktivpark Lindenring".split()
CITIES = (("10115", "Berlin"), ("20095", "Hamburg"), ("80331", "München"), ("50667", "Köln"))
FIELDS = (
    "kvnr ik given_name family_name birth_date sex insured_type valid_from "
    "street house_number postal_code city country"
).split()
_KVNR_SPACE = 26 * 10**8
_KVNR_STRIDE = 1_000_000_007  # coprime with _KVNR_SPACE: a permutation, so KVNRs are unique


def synthetic_kvnr(i: int, offset: int) -> str:
    n = (offset + i * _KVNR_STRIDE) % _KVNR_SPACE
    head = chr(ord("A") + n // 10**8) + f"{n % 10**8:08d}"
    return head + str(kvnr_check_digit(head))


def synthetic_ik(n: int) -> str:
    head = f"10{n % 1_000_000:06d}"
    return head + str(ik_check_digit(head))


def synthetic_rows(
    count: int, *, seed: int = 0, today: date | None = None
) -> Iterator[dict[str, str]]:
    rnd = random.Random(seed)  # noqa: S311 - test data, not secrets
    today = today or date(2026, 1, 1)
    offset = rnd.randrange(_KVNR_SPACE)
    iks = [synthetic_ik(rnd.randrange(10**6)) for _ in range(5)]
    for i in range(count):
        birth = today - timedelta(days=rnd.randrange(365 * 1, 365 * 100))
        postal, city = rnd.choice(CITIES)
        yield {
            "kvnr": synthetic_kvnr(i, offset),
            "ik": rnd.choice(iks),
            "given_name": rnd.choice(GIVEN),
            "family_name": rnd.choice(FAMILY),
            "birth_date": birth.isoformat(),
            "sex": rnd.choice("MWXD"),
            "insured_type": rnd.choice("11113335"),
            "valid_from": max(birth, date(1995, 1, 1)).isoformat(),
            "street": rnd.choice(STREETS),
            "house_number": str(rnd.randrange(1, 200)),
            "postal_code": postal,
            "city": city,
            "country": "D",
        }


def write_registry(out: IO[str], count: int, *, fmt: str = "csv", seed: int = 0) -> None:
    rows = synthetic_rows(count, seed=seed)
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return
    if fmt != "json":
        raise ValueError("format must be csv or json")
    out.write("[\n")
    for i, row in enumerate(rows):
        out.write(("," if i else "") + json.dumps(row, ensure_ascii=False) + "\n")
    out.write("]\n")
