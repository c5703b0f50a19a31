"""The guarded outbound fetcher: bounds, no redirects, SSRF guard, content types."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from healthid.host import fetch as fetch_module
from healthid.host.fetch import (
    CONTENT_TYPE_ENTITY_STATEMENT,
    MAX_RESPONSE_BYTES,
    FetchError,
    GuardedFetcher,
    is_public_address,
)

PUBLIC_IP = "93.184.215.14"
ES = CONTENT_TYPE_ENTITY_STATEMENT
Handler = Callable[[httpx.Request], httpx.Response]


def resolver(*addresses: str) -> fetch_module.Resolver:
    async def resolve(host: str, port: int) -> list[str]:
        return list(addresses)

    return resolve


def fetcher(
    handler: Handler, *, development: bool = False, addresses: tuple[str, ...] = (PUBLIC_IP,)
) -> GuardedFetcher:
    return GuardedFetcher(
        development=development,
        transport=httpx.MockTransport(handler),
        resolver=resolver(*addresses),
    )


def statement(_request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": f"{ES};charset=UTF-8"}, content=b"a.b.c")


async def test_fetch_returns_a_bounded_body_of_the_accepted_type() -> None:
    async with fetcher(statement) as f:
        doc = await f.fetch("https://rp.example/.well-known/openid-federation", accept=ES)
    assert doc.text() == "a.b.c" and doc.media_type == ES and doc.status_code == 200


async def test_fetch_connects_to_the_checked_address_and_keeps_the_name_for_tls() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return statement(request)

    async with fetcher(handler) as f:
        await f.fetch("https://rp.example:8443/x", accept=ES, params={"sub": "https://a b"})
    (request,) = seen
    assert request.url.host == PUBLIC_IP and request.url.port == 8443
    assert request.headers["host"] == "rp.example:8443"
    assert request.extensions["sni_hostname"] == "rp.example"
    assert request.url.params["sub"] == "https://a b" and request.method == "GET"


async def test_fetch_rejects_a_read_timeout() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    async with fetcher(handler) as f:
        with pytest.raises(FetchError, match="timed out"):
            await f.fetch("https://rp.example/", accept=ES)


async def test_fetch_rejects_exceeding_the_total_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch_module, "TOTAL_TIMEOUT_SECONDS", 0.05)

    async def slow_body() -> AsyncIterator[bytes]:
        while True:  # a slowloris: one byte at a time, each within the read timeout
            await asyncio.sleep(0.01)
            yield b"a"

    def handler(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": ES}, content=slow_body())

    async with fetcher(handler) as f:
        with pytest.raises(FetchError, match="total deadline"):
            await f.fetch("https://rp.example/", accept=ES)


async def test_fetch_cuts_off_a_huge_body_while_streaming() -> None:
    produced = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal produced
        while True:
            produced += 1
            yield b"x" * 4096

    def handler(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": ES}, content=endless())

    async with fetcher(handler) as f:
        with pytest.raises(FetchError, match="larger than allowed"):
            await f.fetch("https://rp.example/", accept=ES)
    assert produced * 4096 <= MAX_RESPONSE_BYTES + 4096


async def test_fetch_rejects_a_declared_length_over_the_cap() -> None:
    def handler(_request: httpx.Request) -> httpx.Response:
        headers = {"content-type": ES, "content-length": str(MAX_RESPONSE_BYTES + 1)}
        return httpx.Response(200, headers=headers, content=b"")

    async with fetcher(handler) as f:
        with pytest.raises(FetchError, match="larger than allowed"):
            await f.fetch("https://rp.example/", accept=ES)


async def test_fetch_refuses_redirects() -> None:
    calls = 0

    def handler(_request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(302, headers={"location": "http://169.254.169.254/"})

    async with fetcher(handler) as f:
        with pytest.raises(FetchError, match="redirect") as info:
            await f.fetch("https://rp.example/", accept=ES)
    assert calls == 1 and info.value.status_code == 302


async def test_fetch_rejects_an_error_status() -> None:
    def handler(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, headers={"content-type": ES}, content=b"secret detail")

    async with fetcher(handler) as f:
        with pytest.raises(FetchError) as info:
            await f.fetch("https://rp.example/", accept=ES)
    assert info.value.status_code == 404 and "secret" not in str(info.value)


@pytest.mark.parametrize(
    "addresses",
    [
        ("10.0.0.5",),
        ("127.0.0.1",),
        ("169.254.169.254",),
        ("::1",),
        ("::ffff:127.0.0.1",),
        ("fe80::1%eth0",),
        ("224.0.0.1",),
        ("0.0.0.0",),  # noqa: S104 - the address under test
        ("240.0.0.1",),
        (PUBLIC_IP, "192.168.1.1"),  # every address counts, not just the first
        (),
    ],
)
async def test_fetch_refuses_private_addresses_in_production(addresses: tuple[str, ...]) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return statement(request)

    async with fetcher(handler, addresses=addresses) as f:
        with pytest.raises(FetchError, match="address"):
            await f.fetch("https://internal.example/", accept=ES)
    assert calls == 0


@pytest.mark.parametrize("url", ["https://127.0.0.1/", "https://[::1]/", "https://10.1.2.3/"])
async def test_fetch_refuses_private_ip_literals_in_production(url: str) -> None:
    async with fetcher(statement) as f:
        with pytest.raises(FetchError, match="non-public"):
            await f.fetch(url, accept=ES)


async def test_fetch_allows_private_addresses_in_development() -> None:
    async with fetcher(statement, development=True, addresses=("127.0.0.1",)) as f:
        doc = await f.fetch("http://127.0.0.1:8083/.well-known/openid-federation", accept=ES)
    assert doc.body == b"a.b.c"


async def test_fetch_refuses_http_in_production() -> None:
    async with fetcher(statement) as f:
        with pytest.raises(FetchError, match="https"):
            await f.fetch("http://rp.example/", accept=ES)


@pytest.mark.parametrize(
    "url", ["ftp://rp.example/", "https://user:pw@rp.example/", "https:///x", "x" * 3000]
)
async def test_fetch_refuses_malformed_urls(url: str) -> None:
    async with fetcher(statement) as f:
        with pytest.raises(FetchError):
            await f.fetch(url, accept=ES)


async def test_fetch_rejects_a_wrong_content_type() -> None:
    def handler(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/html"}, content=b"<html>")

    async with fetcher(handler) as f:
        with pytest.raises(FetchError, match="content type"):
            await f.fetch("https://rp.example/", accept=ES)


async def test_fetch_rejects_a_content_encoded_body() -> None:
    def handler(_request: httpx.Request) -> httpx.Response:
        headers = {"content-type": ES, "content-encoding": "gzip"}
        return httpx.Response(200, headers=headers, content=b"\x1f\x8b")

    async with fetcher(handler) as f:
        with pytest.raises(FetchError, match="encoded"):
            await f.fetch("https://rp.example/", accept=ES)


def test_public_address_check() -> None:
    assert is_public_address(PUBLIC_IP) and is_public_address("2606:4700::1111")
    assert not is_public_address("100.64.0.1")  # carrier-grade NAT
    assert not is_public_address("fc00::1") and not is_public_address("not an ip")
