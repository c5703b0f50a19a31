"""The ``healthid`` command as an operator uses it (click's runner, real SQLite file)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from healthid.cli import main

GEMATIK = Path(__file__).parent / "vectors" / "gematik_test_identities.json"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith("HEALTHID_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HEALTHID_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_help_lists_every_command() -> None:
    code, out, _ = run("--help")
    assert code == 0
    for command in (
        "serve",
        "config",
        "db",
        "registry",
        "keys",
        "enclave",
        "wallet",
        "fedmaster",
        "eid-standin",
        "egk-test-ca",
    ):
        assert command in out
    code, out, _ = run("registry", "--help")
    for command in ("import", "generate", "verify", "count"):
        assert command in out


def test_generate_import_count_verify(env: Path) -> None:
    reg = env / "reg.csv"
    code, _, _ = run("registry", "generate", "--count", "250", "-o", str(reg))
    assert code == 0 and len(reg.read_text().splitlines()) == 251
    code, out, err = run("registry", "import", str(reg))
    assert code == 0, err
    assert "imported 250 policyholders (csv)" in out
    assert run("registry", "count")[1].strip() == "250"
    code, out, _ = run("registry", "verify")
    assert code == 0 and "checked 250 policyholders, 0 failed" in out


def test_import_of_bad_file_names_rows_and_fields_and_imports_nothing(env: Path) -> None:
    reg = env / "reg.csv"
    run("registry", "generate", "--count", "20", "-o", str(reg))
    lines = reg.read_text().splitlines()
    lines[3] = "B" + lines[3][1:]  # KVNR check digit now wrong
    lines[5] = (
        lines[5]
        .replace(",D,", ",Q,")
        .replace(",M,", ",Q,")
        .replace(",W,", ",Q,")
        .replace(",X,", ",Q,")
    )
    lines.append(lines[7])  # duplicate KVNR
    reg.write_text("\n".join(lines) + "\n")
    code, _out, err = run("registry", "import", str(reg))
    assert code == 1
    assert "nothing imported, 3 error(s)" in err
    assert "row 4, field kvnr: the KVNR check digit is wrong" in err
    assert "row 6, field sex" in err
    assert "row 22, field kvnr: duplicate KVNR (same as row 8)" in err
    assert lines[3].split(",")[0] not in err  # the value itself is never echoed
    assert run("registry", "count")[1].strip() == "0"


def test_import_of_unknown_column_fails(env: Path) -> None:
    reg = env / "reg.json"
    run("registry", "generate", "--count", "3", "--format", "json", "-o", str(reg))
    doc = json.loads(reg.read_text())
    doc[1]["favourite_colour"] = "blue"
    reg.write_text(json.dumps(doc))
    code, _, err = run("registry", "import", str(reg))
    assert code == 1 and "row 2, field favourite_colour: unknown column" in err


def test_gematik_test_identities_need_the_explicit_flag(env: Path) -> None:
    code, _, err = run("registry", "import", str(GEMATIK))
    assert code == 1 and "row 2, field kvnr: the KVNR check digit is wrong" in err
    code, out, _ = run("registry", "import", "--test-identities", str(GEMATIK))
    assert code == 0 and "imported 3 policyholders (gematik)" in out


def test_production_mode_refuses_to_start_and_says_why(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEALTHID_MODE", "production")
    code, _, err = run("registry", "count")
    assert code == 2
    assert "HEALTHID_TEE=simulated" in err and "HEALTHID_KEY_BACKEND=file" in err


def test_enclave_status_says_simulated(env: Path) -> None:
    code, out, _ = run("enclave", "status")
    assert code == 0
    status = json.loads(out)
    assert status["tee"] == "simulated" and "INSECURE" in status["warning"]


def test_db_upgrade_and_current(env: Path) -> None:
    assert run("db", "current")[1].strip() == "(empty database)"
    assert run("db", "upgrade")[0] == 0
    assert run("db", "current")[1].strip() == "0004"


def test_key_rotation_publishes_next_key_before_it_signs(env: Path) -> None:
    code, out, _ = run("keys", "rotate", "token")
    assert code == 0 and "token key" in out
    first_kid = out.split()[2]
    code, out, _ = run("keys", "rotate", "token")
    assert code == 0
    next_kid = out.split()[2]
    listing = run("keys", "list")[1]
    active_line = next(line for line in listing.splitlines() if first_kid in line)
    next_line = next(line for line in listing.splitlines() if next_kid in line)
    assert " active " in active_line and " next " in next_line
    published = json.loads(run("keys", "jwks", "token")[1])
    assert {k["kid"] for k in published["keys"]} == {first_kid, next_kid}
    assert all("d" not in k for k in published["keys"])  # public halves only
    code, _, err = run("keys", "rotate", "token")
    assert code == 1 and "already waiting" in err
    key_files = list((env / "data" / "keys").glob("*.pem"))
    assert len(key_files) == 2
