"""SOAP 1.1 envelopes of the eID-Interface (TR-03130-1 v2.4.0 §3, document/literal).

Operations and their SOAPAction are ``http://bsi.bund.de/eID/{useID|getResult}``. A message
is built with lxml (never by string formatting) and validated against our XSD before it is
sent; a received message is parsed by the hardened parser and validated before anything reads
it. In both directions the Body carries exactly one eID-Interface element or a SOAP Fault.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from lxml import etree

from healthid.eid.errors import EidProtocolError, SoapFaultError
from healthid.eid.validation import validate_envelope
from healthid.eid.xml import parse_xml

SOAP_ENV_NS = "http://schemas.xmlsoap.org/soap/envelope/"
EID_NS = "http://bsi.bund.de/eID/"
DSS_NS = "urn:oasis:names:tc:dss:1.0:core:schema"
XML_NS = "http://www.w3.org/XML/1998/namespace"
NSMAP = {"soapenv": SOAP_ENV_NS, "eid": EID_NS, "dss": DSS_NS}
# SOAP 1.1 over HTTP (SOAP 1.1 §6.1.1).
CONTENT_TYPE = "text/xml; charset=utf-8"


class Operation(StrEnum):
    USE_ID = "useID"
    GET_RESULT = "getResult"

    @property
    def soap_action(self) -> str:
        return f"{EID_NS}{self.value}"

    @property
    def request_element(self) -> str:
        return f"{self.value}Request"

    @property
    def response_element(self) -> str:
        return f"{self.value}Response"


def eid(name: str) -> str:
    """Clark name of an element in the eID namespace."""
    return f"{{{EID_NS}}}{name}"


def dss(name: str) -> str:
    """Clark name of an element in the OASIS DSS namespace."""
    return f"{{{DSS_NS}}}{name}"


def soapenv(name: str) -> str:
    return f"{{{SOAP_ENV_NS}}}{name}"


def local_name(element: Any) -> str:
    """Local part of an element's Clark name."""
    return str(element.tag).rpartition("}")[2]


def sub(parent: Any, tag: str, text: str | None = None) -> Any:
    """Append a child element (text set through lxml, so it is escaped, never interpreted)."""
    child = etree.SubElement(parent, tag)
    if text is not None:
        child.text = text
    return child


def message_element(local_name: str) -> Any:
    """A new root eID element (``useIDRequest`` ...) with the usual prefixes declared."""
    return etree.Element(eid(local_name), nsmap=NSMAP)


def to_envelope(message: Any) -> bytes:
    """Wrap ``message`` in a SOAP 1.1 envelope, validate it, and serialise it as UTF-8."""
    envelope = etree.Element(soapenv("Envelope"), nsmap=NSMAP)
    etree.SubElement(envelope, soapenv("Header"))
    etree.SubElement(envelope, soapenv("Body")).append(message)
    validate_envelope(envelope)
    data: bytes = etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")
    return data


def open_envelope(data: bytes) -> Any:
    """Parse and validate an envelope; return the one element in its Body."""
    root = parse_xml(data)
    validate_envelope(root)
    return root.find(soapenv("Body"))[0]


def is_fault(message: Any) -> bool:
    return bool(message.tag == soapenv("Fault"))


def fault_code(message: Any) -> str:
    """Local part of the faultcode QName (``Client``, ``Server`` ...), bounded."""
    code = (message.findtext("faultcode") or "").strip()
    return code.rpartition(":")[2][:64]


def expect_response(message: Any, operation: Operation) -> Any:
    """Return ``message`` if it is the response of ``operation``; raise otherwise."""
    if is_fault(message):
        raise SoapFaultError(fault_code(message))
    if message.tag != eid(operation.response_element):
        raise EidProtocolError(f"expected {operation.response_element} in the SOAP Body")
    return message


def fault_envelope(code: str, text: str) -> bytes:
    """A SOAP 1.1 Fault (``code`` is ``Client`` or ``Server``), for the stand-in."""
    fault = etree.Element(soapenv("Fault"), nsmap=NSMAP)
    sub(fault, "faultcode", f"soapenv:{code}")
    sub(fault, "faultstring", text)
    envelope = etree.Element(soapenv("Envelope"), nsmap=NSMAP)
    etree.SubElement(envelope, soapenv("Body")).append(fault)
    validate_envelope(envelope)
    data: bytes = etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")
    return data
