"""Identifiers of the German statutory health insurance: KVNR and IK.

Sources: ../shared/spec/eid-egk-wallet-device.md §2.1 (KVNR, GKV-Spitzenverband guideline under
§ 290 SGB V: modified Luhn over the letter's alphabet position and the eight digits) and §2.2
(IK, ARGE-IK: weights 2,1,2,1,2,1 over digits 3-8).
"""

from __future__ import annotations

import re

KVNR_PATTERN = re.compile(r"[A-Z][0-9]{9}")
IK_PATTERN = re.compile(r"[0-9]{9}")


class IdentifierError(ValueError):
    """An identifier is malformed or its check digit is wrong. The message never repeats it."""


def _digit_sum(n: int) -> int:
    return n // 10 + n % 10


# digit sum of 2*d for d = 0..9 (the "doubled" positions of the Luhn-style checks)
_DOUBLED = tuple(_digit_sum(2 * d) for d in range(10))


def kvnr_check_digit(first_nine: str) -> int:
    """Check digit of the KVNR whose first nine characters are given (letter + 8 digits)."""
    if not re.fullmatch(r"[A-Z][0-9]{8}", first_nine):
        raise IdentifierError("a KVNR starts with a letter A-Z followed by digits")
    digits = [int(c) for c in f"{ord(first_nine[0]) - 64:02d}{first_nine[1:]}"]
    # weights 1,2,1,2,... ; products replaced by their digit sum; sum mod 10
    return (sum(digits[0::2]) + sum(_DOUBLED[d] for d in digits[1::2])) % 10


def normalise_kvnr(value: str) -> str:
    """Upper-case and strip surrounding blanks (no other rewriting: a KVNR has no separators)."""
    return value.strip().upper()


def validate_kvnr(value: str, *, check_digit: bool = True) -> str:
    """Return the normalised KVNR or raise :class:`IdentifierError`.

    ``check_digit=False`` is for gematik's published test identities only, several of which
    do not satisfy the check digit (spec §2.1: keep a bypass for fixtures, strict elsewhere).
    """
    kvnr = normalise_kvnr(value)
    if not KVNR_PATTERN.fullmatch(kvnr):
        raise IdentifierError("a KVNR is one letter A-Z followed by nine digits")
    if check_digit and kvnr_check_digit(kvnr[:9]) != int(kvnr[9]):
        raise IdentifierError("the KVNR check digit is wrong")
    return kvnr


def ik_check_digit(first_eight: str) -> int:
    """Check digit of the IK whose first eight digits are given."""
    if not re.fullmatch(r"[0-9]{8}", first_eight):
        raise IdentifierError("an IK consists of digits")
    weights = (2, 1, 2, 1, 2, 1)
    return sum(_digit_sum(int(c) * w) for c, w in zip(first_eight[2:8], weights, strict=True)) % 10


def validate_ik(value: str) -> str:
    """Return the IK (9 digits, valid check digit) or raise :class:`IdentifierError`."""
    ik = value.strip()
    if not IK_PATTERN.fullmatch(ik):
        raise IdentifierError("an IK is nine digits")
    if ik_check_digit(ik[:8]) != int(ik[8]):
        raise IdentifierError("the IK check digit is wrong")
    return ik
