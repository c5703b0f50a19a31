"""parse_form reads form bodies and query strings exactly as urllib.parse.parse_qs with blank
values kept, which the endpoints used before."""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from healthid.protocol.oauth.form import parse_form

# the characters that matter to the format, and then some: escapes valid and not, UTF-8
# escapes valid and not, the separators, spaces as +, non-ASCII text
_PIECES = st.sampled_from(
    ["&", "=", "+", "%", "%2", "%20", "%26", "%3D", "%2B", "%C3%A4", "%C3", "%FF", "%zz", " ", "ä"]
)
_TEXT = st.lists(_PIECES | st.text(max_size=4), max_size=16).map("".join)


@given(_TEXT)
@example("")
@example("&&")
@example("a")
@example("a=")
@example("=b")
@example("a=b=c")
@example("a=1&a=2&b")
@example("%61=%62")
@example("a%=b%")
def test_parse_form_is_parse_qs_with_blank_values(text: str) -> None:
    assert parse_form(text) == parse_qs(text, keep_blank_values=True)


@given(st.dictionaries(st.text(max_size=8), st.text(max_size=16), max_size=8))
def test_what_urlencode_writes_is_read_back(fields: dict[str, str]) -> None:
    assert parse_form(urlencode(fields)) == {k: [v] for k, v in fields.items()}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "scope=openid+urn%3Atelematik%3Aversicherter",
            {"scope": ["openid urn:telematik:versicherter"]},
        ),
        ("state=&nonce=n", {"state": [""], "nonce": ["n"]}),
        ("a=1&a=2", {"a": ["1", "2"]}),  # check_form refuses a repeated parameter
        ("bad=%FF", {"bad": ["\ufffd"]}),  # not UTF-8: replaced, as parse_qs does
    ],
)
def test_known_forms(text: str, expected: dict[str, list[str]]) -> None:
    assert parse_form(text) == expected
