"""HTTP transport of the eID-Interface: SOAP 1.1 POSTs over (mutual) TLS.

TR-03130-1 v2.4.0 §3.5.1: eService and eID-Server communicate over TLS (TR-03116-4) with
client *and* server authentication. So this transport

- refuses a plain ``http://`` endpoint unless explicitly allowed (the local stand-in only);
- presents our client certificate when one is configured (mTLS), and trusts only the pinned
  CA bundle when one is given (not the system store);
- never follows a redirect, bounds connect and read time, and caps the response body, counting
  the decoded bytes as they arrive (a lying ``Content-Length`` or a compression bomb stops at
  the cap).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import httpx

from healthid.eid.errors import TransportError
from healthid.eid.soap import CONTENT_TYPE, Operation
from healthid.eid.xml import MAX_XML_BYTES

DEFAULT_CONNECT_TIMEOUT_SECONDS = 5.0
DEFAULT_READ_TIMEOUT_SECONDS = 15.0
# The parser refuses anything larger, so reading more would be wasted.
MAX_RESPONSE_BYTES = MAX_XML_BYTES
# SOAP 1.1 §6.2: a Fault travels with HTTP 500; every other answer with 200.
SOAP_STATUSES = frozenset({200, 500})


@dataclass(frozen=True, kw_only=True)
class TransportConfig:
    """Timeouts, the response cap, and the TLS material for the eID-Server connection.

    ``client_certificate``/``client_key``: PEM files of our TLS client certificate (mTLS).
    ``ca_file``: a PEM bundle of the only CAs trusted for the eID-Server's certificate.
    """

    connect_timeout_seconds: float = DEFAULT_CONNECT_TIMEOUT_SECONDS
    read_timeout_seconds: float = DEFAULT_READ_TIMEOUT_SECONDS
    max_response_bytes: int = MAX_RESPONSE_BYTES
    client_certificate: Path | None = None
    client_key: Path | None = None
    ca_file: Path | None = None
    allow_plain_http: bool = False


def ssl_context(config: TransportConfig) -> ssl.SSLContext:
    """TLS 1.2+ with hostname checks; the pinned CA bundle only, and our client certificate."""
    if (config.client_certificate is None) != (config.client_key is None):
        raise ValueError("client_certificate and client_key are configured together")
    if config.ca_file is not None:
        context = ssl.create_default_context(cafile=str(config.ca_file))
    else:
        context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if config.client_certificate is not None and config.client_key is not None:
        context.load_cert_chain(str(config.client_certificate), str(config.client_key))
    return context


def check_endpoint(endpoint: str, config: TransportConfig) -> None:
    """§3.5.1: TLS towards the eID-Server; plain HTTP only when explicitly allowed."""
    url = httpx.URL(endpoint)
    if url.scheme == "https" or (url.scheme == "http" and config.allow_plain_http):
        return
    raise ValueError("the eID-Server endpoint must be an https:// URL")


def build_http_client(
    config: TransportConfig, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """An httpx client with our limits; ``transport`` replaces the network (tests)."""
    timeout = httpx.Timeout(config.read_timeout_seconds, connect=config.connect_timeout_seconds)
    if transport is not None:
        return httpx.AsyncClient(transport=transport, timeout=timeout, follow_redirects=False)
    return httpx.AsyncClient(
        verify=ssl_context(config), timeout=timeout, follow_redirects=False, trust_env=False
    )


async def post_soap(
    client: httpx.AsyncClient,
    endpoint: str,
    operation: Operation,
    body: bytes,
    *,
    max_response_bytes: int = MAX_RESPONSE_BYTES,
) -> tuple[int, bytes]:
    """POST one SOAP request; return the status (200 or 500) and the capped body."""
    headers = {
        "Content-Type": CONTENT_TYPE,
        "SOAPAction": f'"{operation.soap_action}"',
        "Accept-Encoding": "identity",
    }
    try:
        async with client.stream("POST", endpoint, content=body, headers=headers) as response:
            if response.is_redirect:
                raise TransportError("the eID-Server answered with a redirect (not followed)")
            if response.status_code not in SOAP_STATUSES:
                raise TransportError(f"the eID-Server answered HTTP {response.status_code}")
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > max_response_bytes:
                raise TransportError(f"the response is larger than {max_response_bytes} bytes")
            received = bytearray()
            async for chunk in response.aiter_bytes():
                received += chunk
                if len(received) > max_response_bytes:
                    raise TransportError(f"the response is larger than {max_response_bytes} bytes")
            return response.status_code, bytes(received)
    except httpx.TimeoutException:
        raise TransportError("the eID-Server did not answer in time") from None
    except httpx.HTTPError as exc:
        raise TransportError(f"the HTTP exchange failed ({type(exc).__name__})") from None
