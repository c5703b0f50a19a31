"""The CBOR subset spoken between host and enclave (RFC 8949), deterministic both ways.

Only what the enclave RPC needs, so the trusted side parses as little as possible: integers
(-2**64 .. 2**64-1), byte strings, UTF-8 text, arrays, maps with text keys, false, true,
null and finite floats. No tags (RFC 8949 §3.4: dates, bignums, regexes ... are attack
surface the enclave does not need), no indefinite lengths, no undefined or other simple values.

Encoding follows the core deterministic encoding requirements (RFC 8949 §4.2.1): shortest
arguments, definite lengths, map keys sorted by the bytes of their encoding, floats in the
shortest of the three widths that keeps the value. The decoder accepts exactly that form and
nothing else, so ``encode(decode(b)) == b`` for every ``b`` it accepts (no two encodings of one
message). Depth and item count are bounded; every failure is a :class:`CodecError`.
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Mapping
from typing import Final

from healthid.enclave.rpc.errors import CodecError

MAX_DEPTH: Final = 24  # nesting of arrays and maps (a request needs 6; JSON claims a few more)
MAX_ITEMS: Final = 1_000_000  # data items per message (a sealed import chunk has ~50 000)

_HALF: Final = struct.Struct(">e")
_SINGLE: Final = struct.Struct(">f")
_DOUBLE: Final = struct.Struct(">d")
_FALSE, _TRUE, _NULL = 0xF4, 0xF5, 0xF6
_MAJOR_UINT, _MAJOR_NINT, _MAJOR_BYTES, _MAJOR_TEXT = 0, 1, 2, 3
_MAJOR_ARRAY, _MAJOR_MAP, _MAJOR_TAG, _MAJOR_SIMPLE = 4, 5, 6, 7
_UINT_LIMIT: Final = 1 << 64
# Smallest argument that needs each additional-information form (24: 1 byte ... 27: 8 bytes).
_ARG_WIDTH: Final = {24: (1, 24), 25: (2, 1 << 8), 26: (4, 1 << 16), 27: (8, 1 << 32)}


# -- encoding -------------------------------------------------------------------------------
def encode(value: object) -> bytes:
    """The deterministic encoding of ``value``; CodecError for anything outside the subset."""
    out = bytearray()
    _encode(value, out, 0)
    return bytes(out)


def _head(major: int, n: int, out: bytearray) -> None:
    mt = major << 5
    if n < 24:
        out.append(mt | n)
    elif n < 1 << 8:
        out += bytes((mt | 24, n))
    elif n < 1 << 16:
        out.append(mt | 25)
        out += n.to_bytes(2, "big")
    elif n < 1 << 32:
        out.append(mt | 26)
        out += n.to_bytes(4, "big")
    elif n < _UINT_LIMIT:
        out.append(mt | 27)
        out += n.to_bytes(8, "big")
    else:
        raise CodecError("integer out of range")


def _float(value: float) -> bytes:
    if not math.isfinite(value):
        raise CodecError("NaN and infinities are not allowed")
    for marker, fmt in ((0xF9, _HALF), (0xFA, _SINGLE)):
        try:
            packed = fmt.pack(value)
        except OverflowError:
            continue
        if fmt.unpack(packed)[0] == value:
            return bytes((marker,)) + packed
    return b"\xfb" + _DOUBLE.pack(value)


def _encode(value: object, out: bytearray, depth: int) -> None:
    if isinstance(value, str):
        raw = _text(value)
        _head(_MAJOR_TEXT, len(raw), out)
        out += raw
    elif isinstance(value, bytes | bytearray):
        _head(_MAJOR_BYTES, len(value), out)
        out += value
    elif value is None:
        out.append(_NULL)
    elif value is True:
        out.append(_TRUE)
    elif value is False:
        out.append(_FALSE)
    elif isinstance(value, int):
        if value >= 0:
            _head(_MAJOR_UINT, value, out)
        else:
            _head(_MAJOR_NINT, -1 - value, out)
    elif isinstance(value, Mapping):
        _deeper(depth)
        entries: list[tuple[bytes, object]] = []
        for key, item in value.items():
            if not isinstance(key, str):
                raise CodecError("map keys must be text")
            entries.append((_key(key), item))
        entries.sort(key=_first)  # RFC 8949 §4.2.1: bytewise order of the encoded keys
        _head(_MAJOR_MAP, len(entries), out)
        for key_bytes, item in entries:
            out += key_bytes
            _encode(item, out, depth + 1)
    elif isinstance(value, list | tuple):
        _deeper(depth)
        _head(_MAJOR_ARRAY, len(value), out)
        for item in value:
            _encode(item, out, depth + 1)
    elif isinstance(value, float):
        out += _float(value)
    else:
        raise CodecError(f"cannot encode a {type(value).__name__}")


def _text(value: str) -> bytes:
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        raise CodecError("text is not valid Unicode (lone surrogate)") from None


@functools.lru_cache(maxsize=1024)
def _key(key: str) -> bytes:
    """A map key's encoding (keys are field and claim names: a small, fixed set)."""
    out = bytearray()
    raw = _text(key)
    _head(_MAJOR_TEXT, len(raw), out)
    return bytes(out + raw)


def _first(entry: tuple[bytes, object]) -> bytes:
    return entry[0]


def _deeper(depth: int) -> None:
    if depth >= MAX_DEPTH:
        raise CodecError(f"nested deeper than {MAX_DEPTH}")


# -- decoding -------------------------------------------------------------------------------
def decode(data: bytes) -> object:
    """The one value encoded by ``data`` (deterministic form only); CodecError otherwise."""
    decoder = _Decoder(data)
    value = decoder.item(0)
    if decoder.pos != len(data):
        raise CodecError("trailing bytes after the message")
    return value


class _Decoder:
    __slots__ = ("data", "end", "items", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.end = len(data)
        self.pos = 0
        self.items = 0

    def item(self, depth: int) -> object:
        data, pos, end = self.data, self.pos, self.end
        if pos >= end:
            raise CodecError("truncated message")
        self.items += 1
        if self.items > MAX_ITEMS:
            raise CodecError(f"more than {MAX_ITEMS} data items")
        initial = data[pos]
        pos += 1
        major, info = initial >> 5, initial & 0x1F
        if major == _MAJOR_SIMPLE:
            self.pos = pos
            return self._simple(info)
        if major == _MAJOR_TAG:
            raise CodecError("CBOR tags are not allowed")
        if info < 24:
            n = info
        else:  # the argument follows: 1, 2, 4 or 8 bytes, in its shortest form
            width = _ARG_WIDTH.get(info)
            if width is None:
                raise CodecError("indefinite lengths and reserved values are not allowed")
            size, smallest = width
            if pos + size > end:
                raise CodecError("truncated message")
            n = int.from_bytes(data[pos : pos + size], "big")
            pos += size
            if n < smallest:
                raise CodecError("integer or length not in its shortest form")
        if major <= _MAJOR_NINT:
            self.pos = pos
            return n if major == _MAJOR_UINT else -1 - n
        if major <= _MAJOR_TEXT:
            stop = pos + n
            if stop > end:
                raise CodecError("truncated message")
            self.pos = stop
            if major == _MAJOR_BYTES:
                return data[pos:stop]
            try:
                return data[pos:stop].decode("utf-8")
            except UnicodeDecodeError:
                raise CodecError("text is not valid UTF-8") from None
        _deeper(depth)
        if n > end - pos:  # every item takes at least one byte
            raise CodecError("truncated message")
        self.pos = pos
        if major == _MAJOR_ARRAY:
            return [self.item(depth + 1) for _ in range(n)]
        return self._map(n, depth)

    def _map(self, n: int, depth: int) -> dict[str, object]:
        result: dict[str, object] = {}
        previous = b""
        data = self.data
        for _ in range(n):
            start = self.pos
            key = self.item(depth + 1)
            if not isinstance(key, str):
                raise CodecError("map keys must be text")
            key_bytes = data[start : self.pos]
            if key_bytes <= previous:
                raise CodecError("map keys are duplicated or not in deterministic order")
            previous = key_bytes
            result[key] = self.item(depth + 1)
        return result

    def _take(self, n: int) -> bytes:
        start = self.pos
        stop = start + n
        if stop > self.end:
            raise CodecError("truncated message")
        self.pos = stop
        return self.data[start:stop]

    def _simple(self, info: int) -> object:
        if info == 20:
            return False
        if info == 21:
            return True
        if info == 22:
            return None
        formats = {25: _HALF, 26: _SINGLE, 27: _DOUBLE}
        fmt = formats.get(info)
        if fmt is None:
            raise CodecError("simple values other than false, true and null are not allowed")
        start = self.pos - 1
        value: float = fmt.unpack(self._take(fmt.size))[0]
        if not math.isfinite(value):
            raise CodecError("NaN and infinities are not allowed")
        if _float(value) != self.data[start : self.pos]:
            raise CodecError("float not in its shortest form")
        return value
