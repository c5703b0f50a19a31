"""Hardened XML parsing for the eID-Interface (shared/spec/security-checklist.md, XML inputs).

Every message we receive, and every message the stand-in receives, goes through
:func:`parse_xml`:

- the size is checked *before* parsing (:data:`MAX_XML_BYTES`);
- a document type declaration anywhere is refused, internal subset or not: the eID-Interface
  never uses one, and refusing it removes entity expansion ("billion laughs") and external
  entities (XXE) as a class. The raw bytes are scanned first (UTF-8, UTF-16), and the parsed
  tree is checked again, so an unusual encoding cannot smuggle one past;
- lxml is told not to load DTDs, not to resolve entities, not to touch the network, and to keep
  libxml2's default limits (``huge_tree`` off: depth and text-node limits stay on);
- comments and processing instructions are dropped.

Errors never quote the input (it may be personal data).
"""

from __future__ import annotations

from typing import Any

from lxml import etree

from healthid.eid.errors import MalformedMessageError

# An eID-Interface message is a few KiB; PersonalData with every data group and a written
# signature stays well below this. Checked before the parser sees a byte.
MAX_XML_BYTES = 256 * 1024

_DOCTYPE_MARKERS = tuple(
    marker.encode(encoding)
    for marker in ("<!DOCTYPE", "<!doctype", "<!ENTITY", "<!entity")
    for encoding in ("utf-8", "utf-16-le", "utf-16-be")
)


def _parser() -> Any:
    """A fresh parser per document (lxml parsers are not safe to share between threads)."""
    return etree.XMLParser(
        resolve_entities=False,
        load_dtd=False,
        dtd_validation=False,
        no_network=True,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
        collect_ids=False,
    )


def parse_xml(data: bytes, *, max_bytes: int = MAX_XML_BYTES) -> Any:
    """Parse ``data`` into an lxml element, or raise :class:`MalformedMessageError`."""
    if not isinstance(data, bytes):
        raise MalformedMessageError("XML input must be bytes")
    if len(data) > max_bytes:
        raise MalformedMessageError(f"XML message larger than {max_bytes} bytes")
    if not data.strip():
        raise MalformedMessageError("empty XML message")
    if any(marker in data for marker in _DOCTYPE_MARKERS):
        raise MalformedMessageError("XML with a document type declaration (DTD) is refused")
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError:
        raise MalformedMessageError("the message is not well-formed XML") from None
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise MalformedMessageError("XML with a document type declaration (DTD) is refused")
    return root
