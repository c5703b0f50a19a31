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
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Any

from healthid.enclave.api import MAX_REPORTED_ERRORS, RowError
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

MAX_EMAIL_LEN = 254
VERSICHERTER_PROFESSION_OID = "1.2.276.0.76.4.49"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
EMAIL_PATTERN = re.compile(r"[^@\s]+@[^@\s]+")
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
    if value is None:
        return None, ("missing" if required else None)
    if not isinstance(value, str):
        return None, "must be a string"
    value = value.strip()
    if not value:
        return None, ("missing" if required else None)
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


def _check_sex(value: str) -> str | None:
    return None if value.upper() in SEXES else "must be one of M, W, X, D"


def _check_insured_type(value: str) -> str | None:
    if value in INSURED_TYPES:
        return None
    return "must be 1 (member), 3 (family insured) or 5 (pensioner)"


def _check_country(value: str) -> str | None:
    return None if COUNTRY_PATTERN.fullmatch(value) else "must be a country code"


def _check_postal_code(value: str) -> str | None:
    return None if POSTAL_CODE_PATTERN.fullmatch(value) else "is not a postal code"


def _check_email(value: str) -> str | None:
    if len(value) <= MAX_EMAIL_LEN and EMAIL_PATTERN.fullmatch(value):
        return None
    return "is not an e-mail address"


_FIELD_RULES: dict[str, Callable[[str], str | None]] = {
    "sex": _check_sex,
    "insured_type": _check_insured_type,
    "valid_from": _check_iso_date,
    "valid_until": _check_iso_date,
    "country": _check_country,
    "postal_code": _check_postal_code,
    "email": _check_email,
}
_LIMITS = {name: MAX_NAME_LEN if name.endswith("_name") else MAX_TEXT_LEN for name in ALL_FIELDS}
_REQUIRED = frozenset(REQUIRED_FIELDS)
_KNOWN = frozenset(ALL_FIELDS)


def validate_row(
    row_no: int, raw: Mapping[str, Any], options: ParseOptions
) -> tuple[Policyholder | None, list[RowError]]:
    """Validate one row's fields (names from model.ALL_FIELDS) into a :class:`Policyholder`."""
    errors: list[RowError] = []
    values: dict[str, str | None] = {}
    if not _KNOWN.issuperset(raw):
        errors += [
            RowError(row=row_no, field=name, reason="unknown column")
            for name in sorted(set(raw) - _KNOWN)
        ]
    for name in ALL_FIELDS:
        value = raw.get(name)
        if type(value) is str and (value := value.strip()):
            # fast path for the common case; _text() explains every refusal
            if len(value) <= _LIMITS[name] and not _CONTROL.search(value):
                values[name] = value
                continue
        value, reason = _text(raw.get(name), required=name in _REQUIRED, limit=_LIMITS[name])
        if reason:
            errors.append(RowError(row=row_no, field=name, reason=reason))
        values[name] = value

    kvnr, ik, birth = values["kvnr"], values["ik"], values["birth_date"]
    try:
        if kvnr is not None:
            values["kvnr"] = validate_kvnr(kvnr, check_digit=not options.accept_test_kvnr)
    except IdentifierError as exc:
        errors.append(RowError(row=row_no, field="kvnr", reason=str(exc)))
    try:
        if ik is not None:
            values["ik"] = validate_ik(ik)
    except IdentifierError as exc:
        errors.append(RowError(row=row_no, field="ik", reason=str(exc)))
    if birth is not None and (reason := _check_birth_date(birth, options.today)):
        errors.append(RowError(row=row_no, field="birth_date", reason=reason))
    for name, rule in _FIELD_RULES.items():
        value = values[name]
        if value is not None and (reason := rule(value)):
            errors.append(RowError(row=row_no, field=name, reason=reason))
    if values["sex"] is not None:
        values["sex"] = values["sex"].upper()
    vf, vu = values["valid_from"], values["valid_until"]
    if vf and vu and not _check_iso_date(vf) and not _check_iso_date(vu) and vu < vf:
        errors.append(RowError(row=row_no, field="valid_until", reason="lies before valid_from"))
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


RawRow = tuple[int, Mapping[str, Any]]


def read_rows(data: bytes, fmt: RegistryFormat) -> tuple[list[RawRow], list[RowError]]:
    """Split a file into raw rows (field name -> value) and the structural errors found."""
    text, error = _decode(data)
    if error is not None or text is None:
        return [], [error] if error else []
    source: Iterable[tuple[int, Mapping[str, Any] | RowError]] = (
        _csv_rows(text) if fmt is RegistryFormat.CSV else _json_rows(text, fmt)
    )
    rows: list[RawRow] = []
    errors: list[RowError] = []
    for row_no, item in source:
        if len(rows) + len(errors) >= MAX_IMPORT_ROWS:
            reason = f"more than {MAX_IMPORT_ROWS} rows; split the file"
            errors.append(RowError(row=FILE_LEVEL, field="(file)", reason=reason))
            break
        if isinstance(item, RowError):
            errors.append(item)
        else:
            rows.append((row_no, item))
    return rows, errors


def duplicate_kvnr_errors(keys: Iterable[tuple[int, Hashable]]) -> tuple[list[RowError], set[int]]:
    """Rows whose KVNR (or its blind index) appeared in an earlier row."""
    seen: dict[Hashable, int] = {}
    errors: list[RowError] = []
    for row_no, key in keys:
        if key in seen:
            reason = f"duplicate KVNR (same as row {seen[key]})"
            errors.append(RowError(row=row_no, field="kvnr", reason=reason))
        else:
            seen[key] = row_no
    return errors, {e.row for e in errors}


def finish_errors(errors: list[RowError], valid_rows: int) -> tuple[list[RowError], int]:
    """Order errors by row, add "no policyholders" for an empty file, cap the count."""
    if not valid_rows and not errors:
        errors = [RowError(row=FILE_LEVEL, field="(file)", reason="contains no policyholders")]
    errors = sorted(errors, key=lambda e: e.row)
    truncated = max(0, len(errors) - MAX_REPORTED_ERRORS)
    return errors[:MAX_REPORTED_ERRORS], truncated


def parse_registry(data: bytes, fmt: RegistryFormat, options: ParseOptions) -> ParsedRegistry:
    """Parse and validate a whole registry file. Duplicate KVNRs are errors."""
    raw, errors = read_rows(data, fmt)
    rows: list[tuple[int, Policyholder]] = []
    for row_no, item in raw:
        holder, row_errors = validate_row(row_no, item, options)
        errors.extend(row_errors)
        if holder is not None:
            rows.append((row_no, holder))
    dup_errors, dup_rows = duplicate_kvnr_errors((n, h.kvnr) for n, h in rows)
    rows = [(n, h) for n, h in rows if n not in dup_rows]
    reported, truncated = finish_errors(errors + dup_errors, len(rows))
    return ParsedRegistry(rows=rows, errors=reported, errors_truncated=truncated)
