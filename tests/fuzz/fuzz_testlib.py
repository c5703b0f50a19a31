"""What the bad-input suite shares: hypothesis settings, mutation strategies and a counter.

Every property test calls :func:`tried` once per generated input, so the session summary
(``conftest.py``) can say how many inputs each parser was given. The settings are derandomized:
CI sees the same inputs on every run.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

TESTS = Path(__file__).resolve().parent.parent
# helpers of the protocol tests (their directories are only on sys.path when collected)
for _helper_dir in ("protocol/attestation", "protocol/federation", "protocol/tee"):
    _path = str(TESTS / _helper_dir)
    if _path not in sys.path:
        sys.path.append(_path)

INPUTS: Counter[str] = Counter()


def tried(parser: str) -> None:
    """Count one input given to ``parser`` (printed at the end of the session)."""
    INPUTS[parser] += 1


def fuzz_settings(max_examples: int) -> Any:
    """Deterministic, no deadline (CI machines are slow), no example database on disk."""
    return settings(
        max_examples=max_examples,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.function_scoped_fixture,
            HealthCheck.filter_too_much,
        ],
    )


# -- structured mutations of a valid input -------------------------------------------------
@st.composite
def mutated_bytes(draw: st.DrawFn, valid: bytes, max_random: int = 512) -> bytes:
    """``valid`` with bit flips, a truncation, an insertion (of random bytes or of ``valid``
    itself), a deleted span, or plain random bytes."""
    kind = draw(
        st.sampled_from(["flip", "truncate", "insert", "splice", "delete", "random", "valid"])
    )
    data = bytearray(valid)
    if kind == "random" or not data:
        return draw(st.binary(max_size=max_random))
    if kind == "valid":
        return bytes(data)
    if kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        return bytes(data)
    if kind == "truncate":
        return bytes(data[: draw(st.integers(0, len(data) - 1))])
    if kind == "delete":
        i = draw(st.integers(0, len(data) - 1))
        return bytes(data[:i] + data[i + draw(st.integers(1, 64)) :])
    i = draw(st.integers(0, len(data)))
    inserted = valid if kind == "splice" else draw(st.binary(min_size=1, max_size=64))
    return bytes(data[:i]) + inserted + bytes(data[i:])


@st.composite
def mutated_text(draw: st.DrawFn, valid: str, alphabet: str | None = None) -> str:
    """Text mutations of ``valid``: replaced, inserted or deleted characters, truncation."""
    chars = st.characters() if alphabet is None else st.sampled_from(alphabet)
    kind = draw(st.sampled_from(["replace", "insert", "delete", "truncate", "random", "splice"]))
    if kind == "random":
        return draw(st.text(chars, max_size=256))
    i = draw(st.integers(0, max(len(valid) - 1, 0)))
    if kind == "replace":
        return valid[:i] + draw(chars) + valid[i + 1 :]
    if kind == "insert":
        return valid[:i] + draw(st.text(chars, min_size=1, max_size=16)) + valid[i:]
    if kind == "delete":
        return valid[:i] + valid[i + draw(st.integers(1, 16)) :]
    if kind == "splice":
        return valid[:i] + valid + valid[i:]
    return valid[:i]


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=20,
)


def with_keys(keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """JSON objects whose keys are mostly the ones a parser reads, with values of any type."""
    names = st.sampled_from(keys) | st.text(max_size=12)
    return st.dictionaries(names, json_values, max_size=len(keys) + 2)
