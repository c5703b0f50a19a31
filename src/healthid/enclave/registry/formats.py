"""Parsing and validation of registry files: CSV, JSON and gematik's test-identity format.

An import is all-or-nothing (issue #2): every row is validated, every problem is reported as a
:class:`RowError` naming the row and the field, and nothing is stored unless there is none.
Errors never repeat the offending value: it may be personal data (CONVENTIONS.md rule 15).

Row numbers: for CSV the line number in the file (the header is line 1); for JSON the 1-based
position in the array.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Any

from healthid.enclave.api import RowError
from healthid.enclave.registry.model import (
    ALL_FIELDS,
    BIRTH_DATE_PATTERN,
    COUNTRY_PATTERN,
    INSURED_TYPES,
    MAX_NAME_LEN,
    MAX_TEXT_LEN,
    POSTAL_CODE_PATTERN,
    REQUIRED_FIELDS,
    SEXES,
    Policyholder,
)
from healthid.protocol.identifiers import IdentifierError, validate_ik, validate_kvnr

MAX_IMPORT_BYTES = 1024 * 1024 * 1024  # 1 GiB per file; split larger registries
MAX_IMPORT_ROWS = 2_000_000
MAX_REPORTED_ERRORS = 10_000
MAX_EMAIL_LEN = 254
VERSICHERTER_PROFESSION_OID = "1.2.276.0.76.4.49"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
FILE_LEVEL = 0  # row number of errors about the file as a whole

# gematik gsi-server versicherte.gesundheitsid.json -> our field names
GEMATIK_FIELDS: Mapping[str, str | None] = {
    "urn:telematik:claims:id": "kvnr",
    "urn:telematik:claims:organization": "ik",
    "urn:telematik:claims:given_name": "given_name",
    "urn:telematik:claims:family_name": "family_name",
    "birthdate": "birth_date",
    "urn:telematik:claims:geschlecht": "sex",
    "urn:telematik:claims:email": "email",
    # derived or constant in gematik's file; checked or ignored
    "urn:telematik:claims:display_name": None,
    "urn:telematik:claims:alter": None,
    "urn:telematik:claims:profession": None,
}


class RegistryFormat(StrEnum):
    CSV = "csv"
    JSON = "json"
    GEMATIK = "gematik"


@dataclass(frozen=True, kw_only=True)
class ParsedRegistry:
    rows: list[tuple[int, Policyholder]]
    errors: list[RowError]
    errors_truncated: int = 0


@dataclass(frozen=True, kw_only=True)
class ParseOptions:
    today: date
    # gematik's published test identities carry KVNRs with wrong check digits (spec §2.1)
    accept_test_kvnr: bool = False


def _text(
    value: Any, *, required: bool, limit: int = MAX_TEXT_LEN
) -> tuple[str | None, str | None]:
    """(normalised value, reason if invalid)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, ("missing" if required else None)
    if not isinstance(value, str):
        return None, "must be a string"
    value = value.strip()
    if len(value) > limit:
        return None, f"longer than {limit} characters"
    if _CONTROL.search(value):
        return None, "contains control characters"
    return value, None


def _check_birth_date(value: str, today: date) -> str | None:
    m = BIRTH_DATE_PATTERN.fullmatch(value)
    if m is None:
        return "must be YYYY-MM-DD (or YYYY-MM, YYYY for partial dates)"
    year, month, day = int(m[1]), int(m[2] or 1), int(m[3] or 1)
    try:
        if date(year, month, day) > today:
            return "lies in the future"
    except ValueError:
        return "is not a calendar date"
    if year < today.year - 130:
        return "more than 130 years ago"
    return None


def _check_iso_date(value: str) -> str | None:
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return "must be a date YYYY-MM-DD"
    try:
        date.fromisoformat(value)
    except ValueError:
        return "is not a calendar date"
    return None


def validate_row(
    row_no: int, raw: Mapping[str, Any], options: ParseOptions
) -> tuple[Policyholder | None, list[RowError]]:
    """Validate one row's fields (names from model.ALL_FIELDS) into a :class:`Policyholder`."""
    errors: list[RowError] = []
    values: dict[str, str | None] = {}

    def fail(field: str, reason: str) -> None:
        errors.append(RowError(row=row_no, field=field, reason=reason))

    for name in sorted(set(raw) - set(ALL_FIELDS)):
        fail(name, "unknown column")
    for name in ALL_FIELDS:
        limit = MAX_NAME_LEN if name.endswith("_name") else MAX_TEXT_LEN
        value, reason = _text(raw.get(name), required=name in REQUIRED_FIELDS, limit=limit)
        if reason:
            fail(name, reason)
        values[name] = value

    checks = {
        "kvnr": lambda v: validate_kvnr(v, check_digit=not options.accept_test_kvnr),
        "ik": validate_ik,
    }
    for name, check in checks.items():
        if values[name] is not None:
            try:
                values[name] = check(values[name])
            except IdentifierError as exc:
                fail(name, str(exc))
    field_rules: dict[str, Any] = {
        "birth_date": lambda v: _check_birth_date(v, options.today),
        "sex": lambda v: None if v.upper() in SEXES else "must be one of M, W, X, D",
        "insured_type": lambda v: (
            None
            if v in INSURED_TYPES
            else "must be 1 (member), 3 (family insured) or 5 (pensioner)"
        ),
        "valid_from": _check_iso_date,
        "valid_until": _check_iso_date,
        "country": lambda v: None if COUNTRY_PATTERN.fullmatch(v) else "must be a country code",
        "postal_code": lambda v: (
            None if POSTAL_CODE_PATTERN.fullmatch(v) else "is not a postal code"
        ),
        "email": lambda v: (
            None
            if len(v) <= MAX_EMAIL_LEN and re.fullmatch(r"[^@\s]+@[^@\s]+", v)
            else "is not an e-mail address"
        ),
    }
    for name, rule in field_rules.items():
        value = values[name]
        if value is not None and (reason := rule(value)):
            fail(name, reason)
    if values["sex"] is not None:
        values["sex"] = values["sex"].upper()
    vf, vu = values["valid_from"], values["valid_until"]
    if vf and vu and not _check_iso_date(vf) and not _check_iso_date(vu) and vu < vf:
        fail("valid_until", "lies before valid_from")
    if errors:
        return None, errors
    return Policyholder(**values), []  # type: ignore[arg-type]


def _decode(data: bytes) -> tuple[str | None, RowError | None]:
    if len(data) > MAX_IMPORT_BYTES:
        return None, RowError(row=FILE_LEVEL, field="(file)", reason="larger than 1 GiB")
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        reason = f"is not UTF-8 (byte offset {exc.start})"
        return None, RowError(row=FILE_LEVEL, field="(file)", reason=reason)


def _csv_rows(text: str) -> Iterator[tuple[int, Mapping[str, Any] | RowError]]:
    first_line = text.split("\n", 1)[0]
    delimiter = ";" if first_line.count(";") > first_line.count(",") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        yield FILE_LEVEL, RowError(row=FILE_LEVEL, field="(header)", reason="the file is empty")
        return
    except csv.Error as exc:
        yield 1, RowError(row=1, field="(header)", reason=f"malformed CSV: {exc}")
        return
    dupes = sorted({h for h in header if header.count(h) > 1})
    for name in dupes:
        yield 1, RowError(row=1, field=name, reason="column appears more than once")
    for name in header:
        if name not in ALL_FIELDS:
            yield 1, RowError(row=1, field=name or "(empty)", reason="unknown column")
    if dupes or any(h not in ALL_FIELDS for h in header):
        return
    while True:
        line = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield line, RowError(row=line, field="(row)", reason=f"malformed CSV: {exc}")
            return
        if not any(c.strip() for c in cells):
            continue  # blank line
        if len(cells) != len(header):
            reason = f"has {len(cells)} fields, the header has {len(header)}"
            yield line, RowError(row=line, field="(row)", reason=reason)
            continue
        yield line, dict(zip(header, cells, strict=True))


def _json_rows(
    text: str, fmt: RegistryFormat
) -> Iterator[tuple[int, Mapping[str, Any] | RowError]]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        reason = f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        yield FILE_LEVEL, RowError(row=FILE_LEVEL, field="(file)", reason=reason)
        return
    if isinstance(doc, dict) and fmt is RegistryFormat.JSON and "policyholders" in doc:
        doc = doc["policyholders"]
    if not isinstance(doc, list):
        reason = 'must be a JSON array of objects (or {"policyholders": [...]})'
        yield FILE_LEVEL, RowError(row=FILE_LEVEL, field="(file)", reason=reason)
        return
    for i, item in enumerate(doc, start=1):
        if not isinstance(item, dict):
            yield i, RowError(row=i, field="(row)", reason="must be a JSON object")
        elif fmt is RegistryFormat.GEMATIK:
            yield i, _from_gematik(i, item)
        else:
            yield i, item


def _from_gematik(row: int, item: Mapping[str, Any]) -> Mapping[str, Any] | RowError:
    """Map one entry of gematik's ``versicherte.gesundheitsid.json`` to our fields."""
    for key in item:
        if key not in GEMATIK_FIELDS:
            return RowError(row=row, field=key, reason="unknown claim")
    profession = item.get("urn:telematik:claims:profession", VERSICHERTER_PROFESSION_OID)
    if profession != VERSICHERTER_PROFESSION_OID:
        reason = "is not the OID of an insured person (1.2.276.0.76.4.49)"
        return RowError(row=row, field="urn:telematik:claims:profession", reason=reason)
    out: dict[str, Any] = {
        ours: item[theirs] for theirs, ours in GEMATIK_FIELDS.items() if ours and theirs in item
    }
    # The test identities carry no coverage data: a member insured since birth.
    out.setdefault("insured_type", "1")
    birth = item.get("birthdate")
    out.setdefault("valid_from", birth if isinstance(birth, str) else None)
    return out


def detect_format(filename: str, data: bytes) -> RegistryFormat:
    """CSV or JSON by extension; JSON whose entries use gematik claim names is GEMATIK."""
    if filename.lower().endswith(".csv"):
        return RegistryFormat.CSV
    head = data[:4096].lstrip()
    if filename.lower().endswith(".json") or head.startswith((b"[", b"{")):
        return RegistryFormat.GEMATIK if b"urn:telematik:claims:id" in head else RegistryFormat.JSON
    return RegistryFormat.CSV


def parse_registry(data: bytes, fmt: RegistryFormat, options: ParseOptions) -> ParsedRegistry:
    """Parse and validate a whole registry file. Duplicate KVNRs are errors."""
    text, error = _decode(data)
    if error is not None or text is None:
        return ParsedRegistry(rows=[], errors=[error] if error else [])
    source: Iterable[tuple[int, Mapping[str, Any] | RowError]] = (
        _csv_rows(text) if fmt is RegistryFormat.CSV else _json_rows(text, fmt)
    )
    rows: list[tuple[int, Policyholder]] = []
    errors: list[RowError] = []
    seen: dict[str, int] = {}
    count = 0
    for row_no, item in source:
        count += 1
        if count > MAX_IMPORT_ROWS:
            reason = f"more than {MAX_IMPORT_ROWS} rows; split the file"
            errors.append(RowError(row=FILE_LEVEL, field="(file)", reason=reason))
            break
        if isinstance(item, RowError):
            errors.append(item)
            continue
        holder, row_errors = validate_row(row_no, item, options)
        errors.extend(row_errors)
        if holder is None:
            continue
        if holder.kvnr in seen:
            reason = f"duplicate KVNR (same as row {seen[holder.kvnr]})"
            errors.append(RowError(row=row_no, field="kvnr", reason=reason))
            continue
        seen[holder.kvnr] = row_no
        rows.append((row_no, holder))
    if not rows and not errors:
        errors.append(RowError(row=FILE_LEVEL, field="(file)", reason="contains no policyholders"))
    truncated = max(0, len(errors) - MAX_REPORTED_ERRORS)
    return ParsedRegistry(
        rows=rows, errors=errors[:MAX_REPORTED_ERRORS], errors_truncated=truncated
    )
