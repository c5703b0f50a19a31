"""read_body: a request's body from the ASGI channel, bounded, without Request.stream()."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.requests import ClientDisconnect, Request

from healthid.host.request_body import BodyTooLarge, read_body


def request(messages: list[dict[str, Any]], headers: dict[str, str] | None = None) -> Request:
    received: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        message = messages[len(received)]  # IndexError: read past the end of the body
        received.append(message)
        return message

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "headers": [(k.encode(), v.encode()) for k, v in (headers or {}).items()],
    }
    req = Request(scope, receive)
    req.state.received = received
    return req


def part(body: bytes, more: bool) -> dict[str, Any]:
    return {"type": "http.request", "body": body, "more_body": more}


async def test_the_body_arrives_whole_from_one_or_many_messages() -> None:
    assert await read_body(request([part(b"a=1", False)]), 100) == b"a=1"
    chunks = [part(b"a", True), part(b"", True), part(b"=1&b", True), part(b"=2", False)]
    assert await read_body(request(chunks), 100) == b"a=1&b=2"
    assert await read_body(request([{"type": "http.request"}]), 100) == b""


async def test_a_body_over_the_limit_is_refused_as_soon_as_it_passes_it() -> None:
    req = request([part(b"x" * 60, True), part(b"x" * 60, True), part(b"never read", False)])
    with pytest.raises(BodyTooLarge, match="larger than 100 bytes"):
        await read_body(req, 100)
    assert len(req.state.received) == 2
    assert await read_body(request([part(b"x" * 100, False)]), 100) == b"x" * 100


@pytest.mark.parametrize("declared", ["101", "1" * 40, "-1", "ten"])
async def test_a_declared_length_over_the_limit_or_not_a_number_is_refused_unread(
    declared: str,
) -> None:
    req = request([part(b"x", False)], {"content-length": declared})
    with pytest.raises(BodyTooLarge):
        await read_body(req, 100)
    assert req.state.received == []


async def test_a_client_that_goes_away_raises_client_disconnect() -> None:
    with pytest.raises(ClientDisconnect):
        await read_body(request([part(b"a", True), {"type": "http.disconnect"}]), 100)
