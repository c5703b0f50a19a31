"""A request's body, read straight from the ASGI channel, with a size limit.

Starlette's ``Request.stream()`` is an async generator, and the event loop registers each
async generator that starts (an entry in a ``WeakSet`` and a finalizer, in Python): about
as much work as reading a small body. The PAR, token and wallet bodies are read on every
flow, so they are read here with plain ``receive()`` calls instead.
"""

from __future__ import annotations

from starlette.requests import ClientDisconnect, Request


class BodyTooLarge(Exception):  # noqa: N818 - the name says the state
    """The body (or its declared Content-Length) is over the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body larger than {limit} bytes")
        self.limit = limit


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body; BodyTooLarge if the declared length or the bytes received pass
    ``limit`` (nothing beyond is read). A client that goes away raises Starlette's
    ``ClientDisconnect``, as ``Request.stream()`` does."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise BodyTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await request.receive()
        if message["type"] == "http.request":
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(limit)
            if chunk:
                chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        elif message["type"] == "http.disconnect":
            raise ClientDisconnect()
