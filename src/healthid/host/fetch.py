"""The one guarded outbound fetcher of the IdP (spec §1.3, §4; CONVENTIONS 6, SSRF guard).

Everything the IdP fetches from the federation goes through :class:`GuardedFetcher`: RP entity
configurations (``<client_id>/.well-known/openid-federation``), the master's entity
configuration and fetch endpoint, and signed JWKS. Those URLs are chosen by whoever sends a
PAR request, so every fetch is bounded and refuses to reach the IdP's own network:

- GET only, no request body, no cookies, no proxies from the environment (``trust_env``
  off: a proxy would resolve the name itself and void the address check below);
- connect, read and total deadlines and a response byte cap, enforced while streaming (the
  declared ``Content-Length`` is checked first, then every received chunk);
- no redirects: a 3xx is an error, so a public host cannot bounce us to an internal one;
- ``https://`` only, without userinfo; ``http://`` only when built with ``development=True``;
- production only: the host name is resolved first, EVERY address it resolves to must be a
  public unicast address (not private, loopback, link-local, multicast, unspecified or
  reserved; IPv4-mapped IPv6 is unwrapped), and the connection then goes to the checked
  address itself (the URL's host is replaced by the IP; TLS SNI and certificate verification
  still use the host name through httpcore's ``sni_hostname`` extension; the ``Host`` header
  keeps the name). The name is therefore resolved exactly once, by us, which is what defeats
  DNS rebinding. Keep-alive pooling is off so a TLS connection verified for one host name is
  never reused for another name that resolves to the same address;
- the media type is checked per use (``application/entity-statement+jwt`` for statements).

Errors are one flat :class:`FetchError` whose message is safe to log and to show: it names
the check that failed, never the response body.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Final

import httpx

# CONVENTIONS 6: every bound is a named constant next to the code that enforces it.
CONNECT_TIMEOUT_SECONDS: Final = 3.0
READ_TIMEOUT_SECONDS: Final = 5.0
# Deadline for the whole fetch: name resolution, connect, TLS, headers and body.
TOTAL_TIMEOUT_SECONDS: Final = 10.0
# An entity statement is a compact JWS of at most ~72 KiB (healthid.protocol.jose.jws bounds).
MAX_RESPONSE_BYTES: Final = 128 * 1024
MAX_URL_CHARS: Final = 2048
# A host name resolving to more addresses than this is refused (bound before checking them).
MAX_RESOLVED_ADDRESSES: Final = 16

CONTENT_TYPE_ENTITY_STATEMENT: Final = "application/entity-statement+jwt"  # spec §1.1, §3
CONTENT_TYPE_SIGNED_JWKS: Final = "application/jwk-set+json"  # spec §1.1, §3.1
CONTENT_TYPE_JWT: Final = "application/jwt"  # spec §9 (idp list)
CONTENT_TYPE_JSON: Final = "application/json"

USER_AGENT: Final = "healthid-federation-fetcher"

Resolver = Callable[[str, int], Awaitable[list[str]]]
"""``resolve(host, port) -> [ip, ...]``: every address a host name resolves to."""


class FetchError(Exception):
    """An outbound fetch was refused or failed; ``str(error)`` is safe to log and show.

    ``status_code`` is the upstream HTTP status when the failure was a non-2xx answer.
    """

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass(frozen=True, kw_only=True)
class FetchedDocument:
    """A 2xx response body of at most :data:`MAX_RESPONSE_BYTES`, of an accepted media type."""

    url: str
    status_code: int
    media_type: str
    body: bytes

    def text(self) -> str:
        """The body as ASCII (a compact JWS is ASCII by construction, RFC 7515 §7.1)."""
        try:
            return self.body.decode("ascii").strip()
        except UnicodeDecodeError:
            raise FetchError("the response body is not ASCII") from None


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, via the event loop's ``getaddrinfo``."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise FetchError("the host name does not resolve") from None
    return [str(info[4][0]) for info in infos]


def is_public_address(address: str) -> bool:
    """Whether ``address`` is a public unicast address we may connect to in production."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is loopback
    return ip.is_global and not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_unspecified
        or ip.is_reserved
    )


def media_type(content_type: str | None) -> str:
    """The ``type/subtype`` of a Content-Type header, lower-cased, without parameters."""
    return (content_type or "").split(";", 1)[0].strip().lower()


class GuardedFetcher:
    """Bounded, redirect-free, SSRF-guarded GETs (module docstring).

    ``transport`` replaces the network in tests (``httpx.MockTransport``, ``ASGITransport``);
    ``resolver`` replaces DNS. ``development=True`` allows ``http://`` and private addresses
    and connects by name (local federations on 127.0.0.1); never set it in production.
    """

    def __init__(
        self,
        *,
        development: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
        resolver: Resolver = system_resolver,
    ) -> None:
        self._development = development
        self._resolver = resolver
        self._client = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(
                connect=CONNECT_TIMEOUT_SECONDS,
                read=READ_TIMEOUT_SECONDS,
                write=READ_TIMEOUT_SECONDS,
                pool=CONNECT_TIMEOUT_SECONDS,
            ),
            # Fresh connection per fetch: a connection verified for one name must not serve
            # another name on the same pinned address (module docstring).
            limits=httpx.Limits(max_keepalive_connections=0),
            follow_redirects=False,
            trust_env=False,
        )

    @property
    def development(self) -> bool:
        return self._development

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> GuardedFetcher:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def fetch(
        self,
        url: str,
        *,
        accept: frozenset[str] | str,
        params: Mapping[str, str] | None = None,
    ) -> FetchedDocument:
        """GET ``url`` (with ``params`` merged into its query) and return the bounded body.

        ``accept``: the media types this use allows; any other Content-Type is refused.
        """
        allowed = frozenset({accept}) if isinstance(accept, str) else accept
        target = self._checked_url(url, params)
        try:
            async with asyncio.timeout(TOTAL_TIMEOUT_SECONDS):
                return await self._get(target, allowed)
        except TimeoutError:
            raise FetchError("the fetch exceeded its total deadline") from None

    def _checked_url(self, url: str, params: Mapping[str, str] | None) -> httpx.URL:
        if not isinstance(url, str) or len(url) > MAX_URL_CHARS:
            raise FetchError("the URL is not a string of bounded length")
        try:
            parsed = httpx.URL(url)
            if params:
                parsed = parsed.copy_merge_params(dict(params))
        except (httpx.InvalidURL, TypeError, ValueError):
            raise FetchError("the URL does not parse") from None
        schemes = {"https", "http"} if self._development else {"https"}
        if parsed.scheme not in schemes:
            raise FetchError("only https URLs may be fetched")
        if not parsed.host:
            raise FetchError("the URL has no host")
        if parsed.userinfo:
            raise FetchError("the URL may not carry credentials")
        if len(str(parsed)) > MAX_URL_CHARS:
            raise FetchError("the URL is too long")
        return parsed

    async def _pinned(self, url: httpx.URL) -> tuple[httpx.URL, dict[str, str], dict[str, str]]:
        """``(url to connect to, extra headers, request extensions)``; see the module docstring."""
        if self._development:
            return url, {}, {}
        host = url.host
        port = url.port or (443 if url.scheme == "https" else 80)
        addresses = [host] if _is_ip_literal(host) else await self._resolver(host, port)
        if not addresses or len(addresses) > MAX_RESOLVED_ADDRESSES:
            raise FetchError("the host name resolves to no or too many addresses")
        if not all(is_public_address(a) for a in addresses):
            raise FetchError("the host resolves to a non-public address")
        if _is_ip_literal(host):
            return url, {}, {}
        host_header = host if url.port is None else f"{host}:{url.port}"
        pinned = url.copy_with(host=addresses[0].split("%", 1)[0])
        return pinned, {"Host": host_header}, {"sni_hostname": host}

    async def _get(self, url: httpx.URL, allowed: frozenset[str]) -> FetchedDocument:
        target, headers, extensions = await self._pinned(url)
        request = self._client.build_request(
            "GET",
            target,
            headers={
                **headers,
                "Accept": ", ".join(sorted(allowed)),
                "Accept-Encoding": "identity",
                "User-Agent": USER_AGENT,
            },
            extensions=extensions,
        )
        try:
            response = await self._client.send(request, stream=True)
        except httpx.TimeoutException:
            raise FetchError("the fetch timed out") from None
        except httpx.HTTPError:
            raise FetchError("the fetch failed") from None
        try:
            return await self._read(url, response, allowed)
        finally:
            await response.aclose()

    async def _read(
        self, url: httpx.URL, response: httpx.Response, allowed: frozenset[str]
    ) -> FetchedDocument:
        status = response.status_code
        if 300 <= status < 400:
            raise FetchError("the server answered with a redirect", status_code=status)
        if not 200 <= status < 300:
            raise FetchError(f"the server answered HTTP {status}", status_code=status)
        media = media_type(response.headers.get("content-type"))
        if media not in allowed:
            raise FetchError("the response has an unexpected content type", status_code=status)
        if response.headers.get("content-encoding", "identity").lower() != "identity":
            raise FetchError("the response is content-encoded", status_code=status)
        declared = response.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_RESPONSE_BYTES):
            raise FetchError("the response is larger than allowed", status_code=status)
        if response.is_stream_consumed:  # a transport that handed over a preloaded body
            return _document(url, status, media, response.content)
        body = bytearray()
        try:
            async for chunk in response.aiter_raw():
                body += chunk
                if len(body) > MAX_RESPONSE_BYTES:
                    raise FetchError("the response is larger than allowed", status_code=status)
        except httpx.TimeoutException:
            raise FetchError("the fetch timed out") from None
        except httpx.HTTPError:
            raise FetchError("the fetch failed") from None
        return _document(url, status, media, bytes(body))


def _document(url: httpx.URL, status: int, media: str, body: bytes) -> FetchedDocument:
    if len(body) > MAX_RESPONSE_BYTES:
        raise FetchError("the response is larger than allowed", status_code=status)
    return FetchedDocument(url=str(url), status_code=status, media_type=media, body=body)


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True
