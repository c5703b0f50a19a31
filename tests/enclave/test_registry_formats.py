"""Registry file parsing: every bad input is a clear error naming row and field, never the value."""

import json
from datetime import date
from pathlib import Path

import pytest

from healthid.enclave.registry.formats import (
    ParseOptions,
    RegistryFormat,
    detect_format,
    parse_registry,
)
from healthid.enclave.registry.model import Policyholder, name_birth_lookup_value

OPTS = ParseOptions(today=date(2026, 11, 28))
HEADER = "kvnr,ik,given_name,family_name,birth_date,sex,insured_type,valid_from,city\n"
GOOD = [
    "A123456780,109500969,Erika,Mustermann,1964-08-12,W,1,2000-01-01,Köln",
    "F678901231,104526376,Max,Beispiel,1990-02,M,3,2010-05-01,",
    "X110411675,109500969,Darius,Königsstein,1970,M,5,2001-01-01,Berlin",
]
GEMATIK = Path(__file__).parents[1] / "vectors" / "gematik_test_identities.json"


def csv_bytes(*rows: str, header: str = HEADER) -> bytes:
    return (header + "\n".join(rows) + "\n").encode()


def errors_of(
    data: bytes, fmt: RegistryFormat = RegistryFormat.CSV, opts: ParseOptions = OPTS
) -> list[tuple[int, str, str]]:
    parsed = parse_registry(data, fmt, opts)
    return [(e.row, e.field, e.reason) for e in parsed.errors]


def test_csv_parses_valid_rows_with_partial_birth_dates() -> None:
    parsed = parse_registry(csv_bytes(*GOOD), RegistryFormat.CSV, OPTS)
    assert parsed.errors == []
    assert [n for n, _ in parsed.rows] == [2, 3, 4]
    first = parsed.rows[0][1]
    assert first == Policyholder(
        kvnr="A123456780",
        ik="109500969",
        given_name="Erika",
        family_name="Mustermann",
        birth_date="1964-08-12",
        sex="W",
        insured_type="1",
        valid_from="2000-01-01",
        city="Köln",
    )
    assert parsed.rows[1][1].birth_date == "1990-02" and parsed.rows[1][1].city is None


def test_csv_accepts_semicolon_delimiter_and_bom() -> None:
    data = ("\ufeff" + HEADER.replace(",", ";") + GOOD[0].replace(",", ";") + "\n").encode()
    parsed = parse_registry(data, RegistryFormat.CSV, OPTS)
    assert parsed.errors == [] and len(parsed.rows) == 1


def test_policyholder_round_trips_through_cbor() -> None:
    holder = parse_registry(csv_bytes(GOOD[0]), RegistryFormat.CSV, OPTS).rows[0][1]
    assert Policyholder.from_cbor(holder.to_cbor()) == holder


@pytest.mark.parametrize(
    ("row", "field", "reason"),
    [
        ("A123456781,109500969,E,M,1964-08-12,W,1,2000-01-01,", "kvnr", "check digit"),
        ("A12345678,109500969,E,M,1964-08-12,W,1,2000-01-01,", "kvnr", "one letter"),
        ("A123456780,109500960,E,M,1964-08-12,W,1,2000-01-01,", "ik", "check digit"),
        ("A123456780,109500969,,M,1964-08-12,W,1,2000-01-01,", "given_name", "missing"),
        ("A123456780,109500969,E,M,1964-13-12,W,1,2000-01-01,", "birth_date", "calendar"),
        ("A123456780,109500969,E,M,2099-01-01,W,1,2000-01-01,", "birth_date", "future"),
        ("A123456780,109500969,E,M,12.08.1964,W,1,2000-01-01,", "birth_date", "YYYY-MM-DD"),
        ("A123456780,109500969,E,M,1964-08-12,Q,1,2000-01-01,", "sex", "M, W, X, D"),
        ("A123456780,109500969,E,M,1964-08-12,W,2,2000-01-01,", "insured_type", "member"),
        ("A123456780,109500969,E,M,1964-08-12,W,1,2000-02-30,", "valid_from", "calendar"),
        ("A123456780,109500969,E\x07,M,1964-08-12,W,1,2000-01-01,", "given_name", "control"),
        ("A123456780,109500969,E,M,1964-08-12,W,1,2000-01-01,Köln,extra", "(row)", "fields"),
    ],
)
def test_csv_bad_field_is_named_with_row_and_never_echoed(
    row: str, field: str, reason: str
) -> None:
    parsed = parse_registry(csv_bytes(GOOD[0], row), RegistryFormat.CSV, OPTS)
    assert parsed.rows and len(parsed.errors) == 1  # the good row is parsed, the bad one not
    err = parsed.errors[0]
    assert (err.row, err.field) == (3, field)
    assert reason in err.reason
    for value in row.split(","):
        if len(value) > 2:
            assert value not in str(err)


def test_csv_reports_every_bad_row_not_just_the_first() -> None:
    rows = [GOOD[0], GOOD[1].replace("F678901231", "F678901230"), GOOD[2].replace(",M,", ",?,")]
    assert [(r, f) for r, f, _ in errors_of(csv_bytes(*rows))] == [(3, "kvnr"), (4, "sex")]


def test_csv_rejects_duplicate_kvnr_naming_both_rows() -> None:
    errs = errors_of(csv_bytes(GOOD[0], GOOD[1], GOOD[0]))
    assert errs == [(4, "kvnr", "duplicate KVNR (same as row 2)")]


def test_csv_rejects_unknown_column() -> None:
    errs = errors_of(csv_bytes(GOOD[0] + ",x", header=HEADER.strip() + ",shoe_size\n"))
    assert errs == [(1, "shoe_size", "unknown column")]


def test_csv_rejects_missing_required_column_per_row() -> None:
    header = HEADER.replace("insured_type,", "")
    row = GOOD[0].replace(",1,2000", ",2000")
    assert errors_of(csv_bytes(row, header=header)) == [(2, "insured_type", "missing")]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"kvnr,ik\xff\xfe\n", "not UTF-8"),
        (HEADER.encode(), "no policyholders"),
        (b'kvnr,ik,"given_name\n', "malformed CSV"),
    ],
)
def test_csv_rejects_malformed_files(data: bytes, reason: str) -> None:
    errs = errors_of(data)
    assert len(errs) == 1 and reason in errs[0][2]


def test_json_accepts_array_and_wrapped_object() -> None:
    rows = [dict(zip(HEADER.strip().split(","), r.split(","), strict=True)) for r in GOOD]
    for doc in (rows, {"policyholders": rows}):
        parsed = parse_registry(json.dumps(doc).encode(), RegistryFormat.JSON, OPTS)
        assert parsed.errors == [] and len(parsed.rows) == 3


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (b"[{", (0, "(file)", "malformed JSON")),
        (b'{"a": 1}', (0, "(file)", "JSON array")),
        (b"[1]", (1, "(row)", "JSON object")),
        (b'[{"kvnr": 1234}]', (1, "kvnr", "must be a string")),
    ],
)
def test_json_rejects_malformed_documents(doc: bytes, expected: tuple[int, str, str]) -> None:
    errs = errors_of(doc, RegistryFormat.JSON)
    row, field, reason = errs[0]
    assert (row, field) == expected[:2] and expected[2] in reason


def test_gematik_test_identities_load_only_with_test_kvnr_bypass() -> None:
    data = GEMATIK.read_bytes()
    assert detect_format("versicherte.gesundheitsid.json", data) is RegistryFormat.GEMATIK
    strict = parse_registry(data, RegistryFormat.GEMATIK, OPTS)
    assert [(e.row, e.field) for e in strict.errors] == [(2, "kvnr")]
    lenient = parse_registry(
        data, RegistryFormat.GEMATIK, ParseOptions(today=OPTS.today, accept_test_kvnr=True)
    )
    assert lenient.errors == []
    holder = lenient.rows[0][1]
    assert (holder.kvnr, holder.ik, holder.sex, holder.valid_from) == (
        "X110411675",
        "109500969",
        "M",
        "1970-04-01",
    )


def test_gematik_rejects_non_insured_profession() -> None:
    doc = json.loads(GEMATIK.read_text())[:1]
    doc[0]["urn:telematik:claims:profession"] = "1.2.276.0.76.4.30"
    errs = errors_of(json.dumps(doc).encode(), RegistryFormat.GEMATIK)
    assert errs[0][:2] == (1, "urn:telematik:claims:profession")


def test_name_lookup_normalises_spelling_variants() -> None:
    a = name_birth_lookup_value("Dürrwächter-Groß", "Kim", "2001-07-14")
    b = name_birth_lookup_value("DUERRWAECHTER GROSS", "kim", "2001-07-14")
    c = name_birth_lookup_value("Dürrwächter-Groß", "Kim", "2001-07-15")
    assert a == b and a != c
