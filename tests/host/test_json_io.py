"""healthid.host.json_io: orjson writes what Starlette's JSONResponse wrote, and refuses what it
refused; request bodies are read strictly."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.responses import JSONResponse as StarletteJSONResponse

from healthid.host import json_io
from healthid.host.json_io import JSONResponse

# what the host answers and stores: text keys; text, 64-bit integers, booleans, null, lists
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.text()
    | st.floats(allow_nan=False, allow_infinity=False, min_value=-1e15, max_value=1e15)
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(_values)
def test_the_answer_is_the_bytes_starlette_wrote(value: Any) -> None:
    ours = JSONResponse(value).body
    theirs = StarletteJSONResponse(value).body
    # floats may be spelled differently (1e+16 / 1e16); the value read back is the same
    assert ours == theirs or json.loads(ours) == json.loads(theirs)


@given(st.dictionaries(st.text(), st.text() | st.integers(-(2**63), 2**63 - 1), max_size=8))
def test_text_and_integers_are_byte_for_byte_starlettes(value: dict[str, Any]) -> None:
    assert JSONResponse(value).body == StarletteJSONResponse(value).body


def test_the_headers_are_starlettes() -> None:
    headers = {"Cache-Control": "no-store"}
    ours = JSONResponse({"a": "ä"}, status_code=201, headers=headers)
    theirs = StarletteJSONResponse({"a": "ä"}, status_code=201, headers=headers)
    assert ours.raw_headers == theirs.raw_headers
    assert ours.body == '{"a":"ä"}'.encode()


@pytest.mark.parametrize(
    "value",
    [
        math.nan,
        {"a": math.inf},
        [1, [-math.inf]],
        {"nested": {"list": (1.0, math.nan)}},
    ],
)
def test_a_value_that_is_not_finite_is_refused_as_starlette_refused_it(value: Any) -> None:
    with pytest.raises(ValueError, match="not JSON compliant"):
        StarletteJSONResponse(value)
    with pytest.raises(ValueError, match="not JSON compliant"):
        JSONResponse(value)


def test_null_and_the_word_null_are_not_taken_for_a_refused_float() -> None:
    value = {"a": None, "b": "null", "c": 1.5}
    assert json_io.dumps_strict(value) == b'{"a":null,"b":"null","c":1.5}'


def test_records_write_a_float_that_is_not_finite_as_null() -> None:
    assert json_io.dumps({"a": math.nan}) == b'{"a":null}'


@pytest.mark.parametrize("value", [{1: "x"}, {"n": 2**64}, {"o": object()}])
def test_what_json_cannot_say_is_a_type_error(value: Any) -> None:
    with pytest.raises(TypeError):
        json_io.dumps(value)
    with pytest.raises(TypeError):
        json_io.dumps_strict(value)


def test_records_round_trip_with_tuples_as_lists() -> None:
    record = {"scopes": ("openid", "urn:telematik:versicherter"), "n": 3, "t": "Müller"}
    assert json_io.loads(json_io.dumps(record)) == {**record, "scopes": list(record["scopes"])}


def test_records_written_by_the_standard_library_are_read() -> None:
    record = {"name": "Jürgen 😀", "n": 1, "l": [True, None]}
    for written in (json.dumps(record), json.dumps(record, ensure_ascii=False)):
        assert json_io.loads(written.encode()) == record


@pytest.mark.parametrize(
    "raw",
    [
        b"NaN",
        b'{"a": Infinity}',
        b'{"a": -Infinity}',
        b'"\\ud800"',  # a lone surrogate
        b'{"a": 1',
        b"\xff\xfe{}",  # not UTF-8
        b"\xef\xbb\xbf{}",  # a byte order mark (RFC 8259 section 8.1)
        '{"a": 1}'.encode("utf-16"),
        b"[" * 2000 + b"]" * 2000,  # nesting deeper than 1,024
        b"",
    ],
)
def test_loads_refuses_what_is_not_strict_json_with_a_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError):
        json_io.loads(raw)


def test_loads_takes_the_last_of_duplicate_keys_as_json_does() -> None:
    assert json_io.loads(b'{"a": 1, "a": 2}') == json.loads('{"a": 1, "a": 2}') == {"a": 2}


def test_an_integer_beyond_64_bits_is_read_as_a_float_and_refused_as_a_counter() -> None:
    from healthid.host.wallet_api import _counter
    from healthid.host.wallet_errors import WalletError

    assert json_io.loads(b"18446744073709551615") == 2**64 - 1
    body = json_io.loads(b'{"counter": 100000000000000000000000}')
    assert isinstance(body["counter"], float)
    for raw in (b'{"counter": 100000000000000000000000}', b'{"counter": 9223372036854775808}'):
        with pytest.raises(WalletError, match="counter must be an integer"):
            _counter(json_io.loads(raw))
    assert _counter(json_io.loads(b'{"counter": 9223372036854775807}')) == 2**63 - 1
