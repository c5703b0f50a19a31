"""Frames and envelopes of the enclave RPC.

Wire format (one Unix stream socket, both directions)::

    frame    = length payload          ; length: 4 bytes, unsigned big-endian, 1 .. MAX_FRAME
    payload  = deterministic CBOR (``healthid.enclave.rpc.cbor``) of a request or a response
    request  = {"id": uint, "method": text, "args": {name: value, ...}}
    response = {"id": uint, "ok": result}
             | {"id": uint / null, "error": {"code": text, "message": text}}

A connection carries any number of requests at once; responses come in any order and are
matched by ``id`` (chosen by the client, unique among its open requests on that connection).
An error about a frame whose id could not be read has ``id: null``.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass
from typing import Final

from healthid.enclave.rpc import cbor
from healthid.enclave.rpc.errors import MAX_ERROR_MESSAGE, CodecError, FrameTooLarge

MIB: Final = 1024 * 1024
MAX_FRAME: Final = 16 * MIB  # hard limit of every frame, either direction (bulk: import parts)
DEFAULT_MAX_REQUEST: Final = 1 * MIB  # request limit of every method that is not bulk
MAX_REQUEST_ID: Final = (1 << 63) - 1
MAX_METHOD_NAME: Final = 64
_HEADER: Final = struct.Struct(">I")
HEADER_SIZE: Final = _HEADER.size
_REQUEST_KEYS: Final = frozenset({"id", "method", "args"})


@dataclass(frozen=True, kw_only=True)
class Request:
    id: int
    method: str
    args: dict[str, object]


@dataclass(frozen=True, kw_only=True)
class Response:
    id: int | None
    ok: bool
    result: object = None  # the result when ok
    code: str = ""  # the error when not ok
    message: str = ""


# -- frames ---------------------------------------------------------------------------------
def frame(payload: bytes) -> bytes:
    return _HEADER.pack(len(payload)) + payload


def frame_length(header: bytes | bytearray, *, max_size: int = MAX_FRAME) -> int:
    """The payload length a frame's header (the first HEADER_SIZE bytes) announces;
    FrameTooLarge beyond ``max_size`` (the stream cannot be resynchronised: close it)."""
    (length,) = _HEADER.unpack_from(header)
    if length > max_size:
        raise FrameTooLarge(f"frame of {length} bytes exceeds the limit of {max_size}")
    return int(length)


async def read_frame(reader: asyncio.StreamReader, *, max_size: int = MAX_FRAME) -> bytes:
    """The next frame's payload. IncompleteReadError at end of stream; FrameTooLarge (the
    payload is left unread: the stream cannot be resynchronised, close it)."""
    length = frame_length(await reader.readexactly(HEADER_SIZE), max_size=max_size)
    return await reader.readexactly(length)


def decode_frame(data: bytes, *, max_size: int = MAX_FRAME) -> object:
    """Decode one complete frame held in ``data`` (header included). CodecError otherwise."""
    if len(data) < HEADER_SIZE:
        raise CodecError("truncated frame header")
    (length,) = _HEADER.unpack(data[:HEADER_SIZE])
    if length > max_size:
        raise FrameTooLarge(f"frame of {length} bytes exceeds the limit of {max_size}")
    if len(data) - HEADER_SIZE != length:
        raise CodecError("frame length does not match its payload")
    return cbor.decode(data[HEADER_SIZE:])


# -- requests -------------------------------------------------------------------------------
def encode_request(request_id: int, method: str, args: dict[str, object]) -> bytes:
    """The frame of a request."""
    return frame(cbor.encode({"id": request_id, "method": method, "args": args}))


def request_id_of(message: object) -> int | None:
    """The id of a request-shaped message, if it has a valid one (to address an error)."""
    if isinstance(message, dict):
        value = message.get("id")
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_REQUEST_ID:
            return value
    return None


def parse_request(message: object) -> Request:
    if not isinstance(message, dict) or message.keys() != _REQUEST_KEYS:
        raise CodecError("a request is a map of id, method and args")
    request_id = request_id_of(message)
    if request_id is None:
        raise CodecError(f"request id must be an integer 0 .. {MAX_REQUEST_ID}")
    method = message["method"]
    if not isinstance(method, str) or not 0 < len(method) <= MAX_METHOD_NAME:
        raise CodecError("method must be a method name")
    args = message["args"]
    if not isinstance(args, dict):
        raise CodecError("args must be a map")
    return Request(id=request_id, method=method, args=args)


# -- responses ------------------------------------------------------------------------------
def encode_ok(request_id: int, result: object) -> bytes:
    return frame(cbor.encode({"id": request_id, "ok": result}))


def encode_error(request_id: int | None, code: str, message: str) -> bytes:
    error = {"code": code, "message": message[:MAX_ERROR_MESSAGE]}
    return frame(cbor.encode({"id": request_id, "error": error}))


def parse_response(message: object) -> Response:
    if not isinstance(message, dict) or len(message) != 2 or "id" not in message:
        raise CodecError("a response is a map of id and ok or error")
    request_id = request_id_of(message)
    if request_id is None and message["id"] is not None:
        raise CodecError(f"response id must be null or an integer 0 .. {MAX_REQUEST_ID}")
    if "ok" in message:
        if request_id is None:
            raise CodecError("a result needs a request id")
        return Response(id=request_id, ok=True, result=message["ok"])
    error = message.get("error")
    if not isinstance(error, dict) or error.keys() != {"code", "message"}:
        raise CodecError("error must be a map of code and message")
    code, text = error["code"], error["message"]
    if not isinstance(code, str) or not isinstance(text, str) or len(text) > MAX_ERROR_MESSAGE:
        raise CodecError("error code and message must be (short) text")
    return Response(id=request_id, ok=False, code=code, message=text)
