"""A pipelined Redis connection for the ephemeral store (:mod:`healthid.store.ephemeral.redis`).

Redis answers the commands of one connection in the order they came, so a connection needs
no lock: commands queued in one turn of the event loop leave in one write, and each reply
goes to the caller whose command it answers, in order. Under load several commands share a
write and a read (two system calls that cost more CPU than a command's own work).

redis-py's ``Connection`` connects, authenticates and selects the database (TLS too). Then
this module takes the connection's transport over (:class:`_ReplyProtocol`): what arrives is
fed to a hiredis reader and each reply handed to its caller at once, in the transport's
callback, instead of a reader task reading through redis-py's ``read_response`` and its
``StreamReader`` (a task step and several coroutine layers per reply). Sending, ordering and
the deadlines are this module's.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any, cast

import hiredis
from redis._parsers.base import BaseParser
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

_NOT_ENOUGH_DATA: Any = object()  # hiredis's answer while a reply is incomplete


def pack(*args: bytes) -> bytes:
    """One command in RESP, the Redis protocol: an array of bulk strings."""
    return b"".join([b"*%d\r\n" % len(args), *[b"$%d\r\n%b\r\n" % (len(a), a) for a in args]])


class PipelinedConnection:
    """One Redis connection, pipelined: the commands queued in one turn of the event loop
    leave in one write, and the connection's protocol (:class:`_ReplyProtocol`) hands Redis's
    replies, which come in the order of the commands, to the callers in that order.

    A reply owed longer than ``reply_timeout`` seconds, or a lost connection, drops the
    connection: every caller still waiting gets the error (nothing is sent again), and the
    next command connects anew, on a new ``Connection`` object, so that nothing of the old
    one (its protocol's last bytes, its closing) can touch the new one. A caller that is
    cancelled only stops waiting (its command, once queued, is sent and may run, as a
    command whose reply was lost may have run): its reply is still read, in its turn, and
    dropped, never handed to the next caller.
    """

    __slots__ = (
        "_closed",
        "_closing",
        "_connect_lock",
        "_connection",
        "_make_connection",
        "_outgoing",
        "_owed",
        "_reply_timeout",
        "_transport",
        "_watchdog",
    )

    def __init__(
        self, make_connection: Callable[[], AbstractConnection], *, reply_timeout: float
    ) -> None:
        """``make_connection``: a new, unconnected redis-py ``Connection`` for each connect."""
        self._make_connection = make_connection
        self._reply_timeout = reply_timeout
        self._connection: AbstractConnection | None = None
        self._transport: asyncio.Transport | None = None  # the connection's, while it is ours
        self._connect_lock = asyncio.Lock()
        self._closing: set[asyncio.Task[None]] = set()  # dropped connections disconnecting
        # (the caller's future, the deadline of its reply), in the order the commands left
        self._owed: deque[tuple[asyncio.Future[Any], float]] = deque()
        self._outgoing: list[bytes] = []  # queued in this turn of the loop, not yet written
        self._watchdog: asyncio.TimerHandle | None = None
        self._closed = False

    async def call(self, command: bytes) -> Any:
        """Send a packed command and return its reply; an error reply raises its
        ``ResponseError``."""
        if self._transport is None:
            await self._connect()
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        deadline = loop.time() + self._reply_timeout
        self._owed.append((reply, deadline))
        self._outgoing.append(command)
        if len(self._outgoing) == 1:  # the first of this turn: write once all have queued
            loop.call_soon(self._flush)
        if self._watchdog is None:
            self._watchdog = loop.call_at(deadline, self._check_deadline)
        return await reply

    async def _connect(self) -> None:
        async with self._connect_lock:
            if self._transport is not None:
                return  # another caller connected meanwhile
            connection = self._make_connection()
            try:
                async with asyncio.timeout(self._reply_timeout):
                    await connection.connect()  # type: ignore[no-untyped-call]
                writer = connection._writer
                if writer is None:
                    raise RedisConnectionError("redis-py left the connection without a writer")
                transport = cast(asyncio.Transport, writer.transport)
            except BaseException:
                await connection.disconnect(nowait=True)
                raise
            if self._closed:  # closed while connecting
                await connection.disconnect(nowait=True)
                raise RedisConnectionError("the Redis ephemeral store is closed")
            # the handshake's replies are read; nothing more is owed on this connection
            transport.set_protocol(_ReplyProtocol(self, connection, transport.get_protocol()))
            self._connection = connection
            self._transport = transport

    def _flush(self) -> None:
        if not self._outgoing:
            return  # written by an earlier flush, or failed by a drop
        batch = b"".join(self._outgoing)
        self._outgoing.clear()
        connection, transport = self._connection, self._transport
        if connection is None or transport is None:
            return  # dropped before the write: the callers already have their error
        # redis-py writes through its StreamWriter too (Connection.send_packed_command), but
        # only as a coroutine: this write must happen now, in order, without a task
        try:
            transport.write(batch)
        except Exception as exc:  # the transport is closing: the connection is lost
            self._drop(connection, exc)

    def _deliver(self, connection: AbstractConnection, reply: Any) -> bool:
        """Hand ``reply``, the next in order, to the caller that waits for it; False when the
        connection was dropped for it (read no more from it)."""
        if not self._owed:
            self._drop(connection, RedisConnectionError("a reply nobody waits for"))
            return False
        if isinstance(reply, RedisConnectionError):  # e.g. "max number of clients reached"
            self._drop(connection, reply)
            return False
        future = self._owed.popleft()[0]
        if future.done():
            return True  # its caller was cancelled
        if isinstance(reply, ResponseError):  # an error reply, read whole: still in step
            future.set_exception(reply)
        else:
            future.set_result(reply)
        return True

    def _check_deadline(self) -> None:
        self._watchdog = None
        if not self._owed or self._connection is None:
            return
        loop = asyncio.get_running_loop()
        deadline = self._owed[0][1]  # the oldest reply owed
        if loop.time() < deadline:
            self._watchdog = loop.call_at(deadline, self._check_deadline)
            return
        self._drop(self._connection, RedisTimeoutError("Redis did not answer in time"))

    def _drop(self, connection: AbstractConnection, cause: BaseException) -> None:
        """Give up ``connection`` (if it is still this lane's) and fail every caller waiting."""
        if connection is not self._connection:
            return  # an old connection's protocol, ending after its drop
        self._connection = self._transport = None
        # redis-py closes the socket (what it read no longer reaches anyone)
        closing = asyncio.get_running_loop().create_task(connection.disconnect(nowait=True))
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        owed, self._owed = self._owed, deque()
        self._outgoing.clear()
        for future, _ in owed:
            if not future.done():
                error = (
                    RedisTimeoutError(str(cause))
                    if isinstance(cause, RedisTimeoutError)
                    else RedisConnectionError(
                        f"the Redis connection was lost ({type(cause).__name__})"
                    )
                )
                future.set_exception(error)

    async def aclose(self) -> None:
        self._closed = True
        connection = self._connection
        if connection is not None:
            self._drop(connection, RedisConnectionError("the Redis ephemeral store is closed"))
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


class _ReplyProtocol(asyncio.Protocol):
    """The protocol of a lane's connection once redis-py has connected it: the bytes that
    arrive go to a hiredis reader, and every whole reply to :meth:`PipelinedConnection._deliver`
    in this callback. The transport's other events go on to redis-py's own protocol (its
    ``StreamReaderProtocol``), so that its writer still sees flow control and the close."""

    def __init__(
        self,
        lane: PipelinedConnection,
        connection: AbstractConnection,
        stream: asyncio.BaseProtocol,
    ) -> None:
        self._lane = lane
        self._connection = connection
        self._stream = cast(asyncio.Protocol, stream)
        # RESP2 (the lanes ask for it): no push messages, only replies in order
        self._replies = hiredis.Reader(
            protocolError=InvalidResponse,
            replyError=BaseParser.parse_error,  # NOSCRIPT -> NoScriptError, as redis-py reads
            notEnoughData=_NOT_ENOUGH_DATA,
        )
        self._dead = False

    def data_received(self, data: bytes) -> None:
        if self._dead:
            return
        replies = self._replies
        try:
            replies.feed(data)
            while (reply := replies.gets()) is not _NOT_ENOUGH_DATA:
                if not self._lane._deliver(self._connection, reply):
                    self._dead = True
                    return
        except Exception as exc:  # not RESP: out of step with the server
            self._dead = True
            self._lane._drop(self._connection, exc)

    def eof_received(self) -> bool:
        """The server closed its side: every reply still owed is lost (redis-py's reader
        would now raise), and the transport closes (False)."""
        self._dead = True
        self._lane._drop(self._connection, RedisConnectionError("closed by the server"))
        self._stream.eof_received()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._dead = True
        self._lane._drop(self._connection, exc or RedisConnectionError("closed by the server"))
        self._stream.connection_lost(exc)

    def pause_writing(self) -> None:
        self._stream.pause_writing()

    def resume_writing(self) -> None:
        self._stream.resume_writing()
