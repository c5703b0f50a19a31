"""A pipelined Redis connection for the ephemeral store (:mod:`healthid.store.ephemeral.redis`).

Redis answers the commands of one connection in the order they came, so a connection needs
no lock: commands queued in one turn of the event loop leave in one write, and one reader
task hands each reply to the caller whose command it answers. Under load several commands
share a write and a read (two system calls that cost more CPU than a command's own work).

redis-py's ``Connection`` connects, authenticates, selects the database (TLS too) and parses
the replies (hiredis); sending, ordering and the deadlines are this module's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from typing import Any

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError


def pack(*args: bytes) -> bytes:
    """One command in RESP, the Redis protocol: an array of bulk strings."""
    return b"".join([b"*%d\r\n" % len(args), *[b"$%d\r\n%b\r\n" % (len(a), a) for a in args]])


class PipelinedConnection:
    """One Redis connection, pipelined: the commands queued in one turn of the event loop
    leave in one write, and one reader task hands Redis's replies, which come in the order of
    the commands, to the callers in that order.

    A reply owed longer than ``reply_timeout`` seconds, or a lost connection, drops the
    connection: every caller still waiting gets the error (nothing is sent again), and the
    next command connects anew, on a new ``Connection`` object, so that nothing of the old
    one (its reader's last read, its closing) can touch the new one. A caller that is
    cancelled only stops waiting (its command, once queued, is sent and may run, as a
    command whose reply was lost may have run): its reply is still read, in its turn, and
    dropped, never handed to the next caller.
    """

    __slots__ = (
        "_closed",
        "_connect_lock",
        "_connection",
        "_make_connection",
        "_outgoing",
        "_owed",
        "_reader",
        "_reply_timeout",
        "_watchdog",
    )

    def __init__(
        self, make_connection: Callable[[], AbstractConnection], *, reply_timeout: float
    ) -> None:
        """``make_connection``: a new, unconnected redis-py ``Connection`` for each connect."""
        self._make_connection = make_connection
        self._reply_timeout = reply_timeout
        self._connection: AbstractConnection | None = None
        self._connect_lock = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None
        # (the caller's future, the deadline of its reply), in the order the commands left
        self._owed: deque[tuple[asyncio.Future[Any], float]] = deque()
        self._outgoing: list[bytes] = []  # queued in this turn of the loop, not yet written
        self._watchdog: asyncio.TimerHandle | None = None
        self._closed = False

    async def call(self, command: bytes) -> Any:
        """Send a packed command and return its reply; an error reply raises its
        ``ResponseError``."""
        if self._reader is None:
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
            if self._reader is not None:
                return  # another caller connected meanwhile
            connection = self._make_connection()
            try:
                async with asyncio.timeout(self._reply_timeout):
                    await connection.connect()  # type: ignore[no-untyped-call]
            except BaseException:
                await connection.disconnect(nowait=True)
                raise
            if self._closed:  # closed while connecting
                await connection.disconnect(nowait=True)
                raise RedisConnectionError("the Redis ephemeral store is closed")
            self._connection = connection
            self._reader = asyncio.create_task(self._read_replies(connection))

    def _flush(self) -> None:
        if not self._outgoing:
            return  # written by an earlier flush, or failed by a drop
        batch = b"".join(self._outgoing)
        self._outgoing.clear()
        connection = self._connection
        # redis-py writes through its StreamWriter too (Connection.send_packed_command), but
        # only as a coroutine: this write must happen now, in order, without a task
        writer = None if connection is None else connection._writer
        if connection is None or writer is None:
            return  # dropped before the write: the callers already have their error
        try:
            writer.write(batch)
        except Exception as exc:  # the transport is closing: the connection is lost
            self._drop(connection, exc)

    async def _read_replies(self, connection: AbstractConnection) -> None:
        while True:
            try:
                reply = await connection.read_response()
            except ResponseError as exc:  # an error reply, read whole: still in step
                reply = exc
            except BaseException as exc:  # lost, closed, or this reader cancelled by a drop
                self._drop(connection, exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                return
            if not self._owed:
                self._drop(connection, RedisConnectionError("a reply nobody waits for"))
                return
            future = self._owed.popleft()[0]
            if future.done():
                continue  # its caller was cancelled
            if isinstance(reply, ResponseError):
                future.set_exception(reply)
            else:
                future.set_result(reply)

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
            return  # an old connection's reader, ending after its drop
        reader, self._reader, self._connection = self._reader, None, None
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()  # its read fails and redis-py closes the socket
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
        if connection is None:
            return
        reader = self._reader
        self._drop(connection, RedisConnectionError("the Redis ephemeral store is closed"))
        if reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        await connection.disconnect()
