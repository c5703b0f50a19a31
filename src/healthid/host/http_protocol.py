"""uvicorn's httptools protocol, sending each response's head and first body bytes in one write.

uvicorn's ``RequestResponseCycle.send`` writes the status line and headers
(``http.response.start``) with one ``transport.write`` and each body message with another,
so a small JSON response costs two ``write``/``send`` syscalls, two TCP segments and two
wake-ups of the client. :class:`HeadCoalescingHttpToolsProtocol` (uvicorn's ``http=``
option) holds the head back and writes it together with the next write of the same response:

- the head alone, at once, when the body message writes nothing (HEAD requests);
- the head alone, before the connection closes (the app raised or returned after starting
  the response: uvicorn then closes the connection; the client gets the head as before);
- never, after the client disconnected (uvicorn's own writes would have gone nowhere).

An app that starts a response and then waits before its first body message delivers the head
only with that message (no app of ours does: every response is built before it is sent).
Everything else is uvicorn's: parsing, keep-alive, pipelining, flow control, the ``100
Continue`` interim response (written by ``receive`` before the response starts, never held),
the 400 response for unparseable requests (the protocol writes it itself, not the cycle).

What this relies on (uvicorn 0.54; :func:`_check_uvicorn` fails the import if it changed):

1. ``HttpToolsProtocol.on_headers_complete`` makes a new ``RequestResponseCycle`` for each
   request and stores it in ``self.cycle`` (its ASGI task is created or queued, not run);
2. the cycle writes only through its ``transport`` attribute; its ``send`` writes the
   response's head in one ``write`` without suspending once flow control lets it write
   (``flow.write_paused`` false), and each body message with at most one ``write``; it
   ends a response early with ``transport.close()``;
3. ``RequestResponseCycle`` has no ``__slots__`` (the cycle's class is switched in place).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

from uvicorn._types import ASGISendEvent
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

__all__ = ["HeadCoalescingHttpToolsProtocol"]


class _HeadHoldingTransport:
    """One request cycle's view of the connection's transport: when armed, keeps the next
    write (the response's head) and puts it in front of the write after it. Everything but
    ``write`` and ``close`` is the real transport's (``is_closing``, flow control, ...)."""

    __slots__ = ("_head", "_transport", "hold_next")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._head: bytes | None = None
        self.hold_next = False

    def write(self, data: bytes) -> None:
        if self.hold_next:
            self.hold_next = False
            self._head = data
            return
        head = self._head
        if head is None:
            self._transport.write(data)
        else:
            self._head = None
            self._transport.write(head + data)

    def flush(self) -> None:
        """Write a held head on its own (unless the connection is already going away)."""
        head = self._head
        if head is not None:
            self._head = None
            if not self._transport.is_closing():
                self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _HeadHoldingCycle(RequestResponseCycle):
    """A uvicorn request cycle whose head write is held by its :class:`_HeadHoldingTransport`
    (``held``, also its ``transport``)."""

    held: _HeadHoldingTransport

    @classmethod
    def adopt(cls, cycle: RequestResponseCycle) -> None:
        """Turn a fresh uvicorn cycle (nothing sent yet) into one of these, in place."""
        held = _HeadHoldingTransport(cycle.transport)
        cycle.__class__ = cls
        cast(_HeadHoldingCycle, cycle).held = held
        cycle.transport = cast(asyncio.Transport, held)

    async def send(self, message: ASGISendEvent) -> None:
        if self.response_started:  # a body message: writes head + body, or nothing
            await super().send(message)
            self.held.flush()  # a no-op unless it wrote nothing (HEAD): then the head goes now
            return
        # Wait for flow control here, so that super().send() does not suspend before its
        # head write: only that write may be held (a concurrent receive() may meanwhile
        # write the 100 Continue interim response, which must go out at once).
        while self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        self.held.hold_next = True
        try:
            await super().send(message)
        finally:
            self.held.hold_next = False  # not written: disconnected, or an invalid message


class HeadCoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's ``HttpToolsProtocol`` whose responses write their head with their body."""

    def on_headers_complete(self) -> None:
        previous = self.cycle
        super().on_headers_complete()
        if self.cycle is not previous:  # a new request (none for a WebSocket upgrade)
            _HeadHoldingCycle.adopt(self.cycle)


class _StandIn:
    """Transport (keeping what is written), flow control and message event of the cycle
    that :func:`_check_uvicorn` runs."""

    write_paused = False

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def set(self) -> None:
        pass


def _check_uvicorn() -> None:
    """Fail loudly when uvicorn's internals no longer are what this module relies on: run a
    head and a body message through a held cycle without an event loop (``send`` must not
    suspend) and expect one write of both."""
    names = HttpToolsProtocol.on_headers_complete.__code__.co_names
    if not {"cycle", "RequestResponseCycle", "transport"} <= set(names):
        raise RuntimeError("HttpToolsProtocol.on_headers_complete no longer sets self.cycle")
    recorder = _StandIn()
    cycle = RequestResponseCycle(
        scope={"method": "GET"},  # type: ignore[typeddict-item]
        transport=cast(asyncio.Transport, recorder),
        flow=cast(FlowControl, recorder),
        logger=logging.getLogger(__name__),
        access_logger=logging.getLogger(__name__),
        access_log=False,
        default_headers=[],
        message_event=cast(asyncio.Event, recorder),
        expect_100_continue=False,
        keep_alive=False,
        on_response=lambda: None,
    )
    _HeadHoldingCycle.adopt(cycle)
    for message in (
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]},
        {"type": "http.response.body", "body": b"{}"},
    ):
        try:
            cycle.send(cast(ASGISendEvent, message)).send(None)
        except StopIteration:
            continue
        raise RuntimeError("uvicorn's RequestResponseCycle.send suspends before writing")
    expected = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}"
    if recorder.writes != [expected] or not recorder.closed:
        raise RuntimeError(
            f"uvicorn's RequestResponseCycle writes differently than expected: {recorder.writes}"
        )


try:
    _check_uvicorn()
except Exception as exc:  # any surprise: refuse to serve with a protocol built on guesses
    raise ImportError(
        f"healthid.host.http_protocol does not fit this uvicorn version ({exc!r}); "
        "see the module docstring for what it relies on"
    ) from exc
