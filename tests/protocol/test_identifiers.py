import json
from pathlib import Path

import pytest

from healthid.protocol.identifiers import (
    IdentifierError,
    ik_check_digit,
    kvnr_check_digit,
    validate_ik,
    validate_kvnr,
)

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "identifiers.json").read_text())


@pytest.mark.parametrize("kvnr", VECTORS["kvnr_valid"])
def test_kvnr_check_digit_matches_known_valid_numbers(kvnr: str) -> None:
    assert kvnr_check_digit(kvnr[:9]) == int(kvnr[9])
    assert validate_kvnr(kvnr) == kvnr


def test_kvnr_is_normalised_to_upper_case() -> None:
    assert validate_kvnr(" x110411675 ") == "X110411675"


@pytest.mark.parametrize("kvnr", VECTORS["kvnr_bad_check_digit"])
def test_kvnr_rejects_wrong_check_digit(kvnr: str) -> None:
    with pytest.raises(IdentifierError, match="check digit"):
        validate_kvnr(kvnr)
    assert validate_kvnr(kvnr, check_digit=False) == kvnr


@pytest.mark.parametrize("kvnr", VECTORS["kvnr_malformed"])
def test_kvnr_rejects_malformed_even_without_check_digit(kvnr: str) -> None:
    with pytest.raises(IdentifierError) as info:
        validate_kvnr(kvnr, check_digit=False)
    assert kvnr.strip() == "" or kvnr not in str(info.value)


@pytest.mark.parametrize("ik", VECTORS["ik_valid"])
def test_ik_check_digit_matches_known_valid_numbers(ik: str) -> None:
    assert ik_check_digit(ik[:8]) == int(ik[8])
    assert validate_ik(ik) == ik


@pytest.mark.parametrize("ik", VECTORS["ik_bad_check_digit"] + VECTORS["ik_malformed"])
def test_ik_rejects_bad_values(ik: str) -> None:
    with pytest.raises(IdentifierError):
        validate_ik(ik)


def test_every_single_digit_change_of_a_kvnr_is_detected() -> None:
    base = "A123456780"
    for pos in range(1, 10):
        for digit in "0123456789":
            if digit == base[pos]:
                continue
            changed = base[:pos] + digit + base[pos + 1 :]
            with pytest.raises(IdentifierError):
                validate_kvnr(changed)
