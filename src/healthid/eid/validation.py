"""XSD validation of every eID-Interface message, in both directions.

The schemas under ``schema/`` are our own subset of BSI TR-03130-1 v2.4.0 (§3.2-§3.4) wrapped
in SOAP 1.1: ``soap11-envelope.xsd`` imports ``tr03130-eid.xsd``, which imports
``dss-result.xsd`` (which imports ``xml-lang.xsd``). They are loaded once from the package
directory, with the network off.

A validation error names the element path only (namespace prefixes removed), never the value
that failed: values can be personal data.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

from lxml import etree

from healthid.eid.errors import MalformedMessageError

SCHEMA_DIR = Path(__file__).with_name("schema")
ENVELOPE_XSD = SCHEMA_DIR / "soap11-envelope.xsd"
# Longest element path quoted in an error message.
MAX_ERROR_PATH_CHARS = 200

_PREFIX = re.compile(r"(?<=/)[^/:\[\]]+:")


@cache
def envelope_schema() -> Any:
    """The compiled schema of a SOAP 1.1 envelope carrying one eID-Interface message."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    return etree.XMLSchema(etree.parse(str(ENVELOPE_XSD), parser))


def validate_envelope(root: Any) -> None:
    """Raise :class:`MalformedMessageError` unless ``root`` is a valid envelope of our schema."""
    schema = envelope_schema()
    if schema.validate(root):
        return
    error = schema.error_log.last_error
    path = _PREFIX.sub("", (error.path or "") if error is not None else "")
    path = path[:MAX_ERROR_PATH_CHARS] or "/"
    raise MalformedMessageError(f"the message does not match the eID-Interface schema at {path}")
