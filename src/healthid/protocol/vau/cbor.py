"""The bounded CBOR subset (RFC 8949) that the VAU handshake and our state blobs use.

The VAU messages are small maps with text keys whose values are byte strings, text, integers,
booleans and nested maps (gemSpec_Krypt ch. 7, as coded in gematik lib-vau ``data/*`` and
libasl ``model.rs``). This decoder accepts exactly that and nothing else, so no peer can make
us build an object graph we did not ask for:

- the input size is checked before the first byte is read (the caller's bound);
- no tags (so no bignums, dates, shared references or cycles), no floats, no ``undefined``
  or other simple values than ``false``/``true``/``null``;
- map keys are text and unique; at most :data:`MAX_ITEMS` entries per container and
  :data:`MAX_DEPTH` levels of nesting; integers fit in 64 bits; text is strict UTF-8;
- indefinite-length maps, arrays and strings are accepted, because Jackson (lib-vau)
  writes ``0xBF … 0xFF`` maps (the ASL M4 vector is one); trailing bytes are refused.

Every failure is a :class:`~healthid.protocol.vau.errors.VauMalformedError`. The encoder
writes definite lengths, shortest integer heads and the dict's insertion order, which is the
order gematik's implementations write the fields in.
"""

from __future__ import annotations

from typing import TypeAlias

from healthid.protocol.vau.errors import VauMalformedError, VauOversizedError

CborValue: TypeAlias = "int | bool | bytes | str | list[CborValue] | dict[str, CborValue] | None"

MAX_DEPTH = 6  # M2 ⊃ ECDH_ct ⊃ x is depth 3; state blobs nest no deeper than 4
MAX_ITEMS = 64  # entries of one map or array
MAX_UINT = 2**64 - 1

_BREAK = 0xFF
_FALSE, _TRUE, _NULL = 0xF4, 0xF5, 0xF6


def decode(data: bytes, *, max_size: int) -> CborValue:
    """Decode one CBOR item of the accepted subset that fills ``data`` exactly.

    ``max_size`` is enforced before decoding (the bound of the message at hand).
    """
    if len(data) > max_size:
        raise VauOversizedError(f"CBOR input of {len(data)} bytes exceeds {max_size}")
    if not data:
        raise VauMalformedError("empty CBOR input")
    decoder = _Decoder(bytes(data))
    value = decoder.item(0)
    if decoder.pos != len(decoder.data):
        raise VauMalformedError("trailing bytes after the CBOR item")
    return value


def decode_map(data: bytes, *, max_size: int) -> dict[str, CborValue]:
    """Decode ``data`` and require a map at the top level."""
    value = decode(data, max_size=max_size)
    if not isinstance(value, dict):
        raise VauMalformedError("the CBOR item is not a map")
    return value


class _Decoder:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise VauMalformedError("CBOR input ends early")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def _byte(self) -> int:
        if self.pos >= len(self.data):
            raise VauMalformedError("CBOR input ends early")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def _argument(self, info: int) -> int:
        if info < 24:
            return info
        if info == 24:
            return self._byte()
        if info in (25, 26, 27):
            return int.from_bytes(self._take(1 << (info - 24)), "big")
        raise VauMalformedError("reserved or indefinite CBOR length where none is allowed")

    def item(self, depth: int) -> CborValue:
        if depth > MAX_DEPTH:
            raise VauMalformedError("CBOR nesting too deep")
        initial = self._byte()
        major, info = initial >> 5, initial & 0x1F
        if major == 0:
            return self._argument(info)
        if major == 1:
            return -1 - self._argument(info)
        if major in (2, 3):
            return self._string(major, info)
        if major == 4:
            return self._array(info, depth)
        if major == 5:
            return self._map(info, depth)
        if major == 6:
            raise VauMalformedError("CBOR tags are not accepted")
        return self._simple(initial)

    def _string(self, major: int, info: int) -> bytes | str:
        if info == 31:
            raw = self._chunks(major)
        else:
            raw = self._take(self._argument(info))
        if major == 2:
            return raw
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise VauMalformedError("CBOR text is not UTF-8") from None

    def _chunks(self, major: int) -> bytes:
        parts: list[bytes] = []
        while True:
            initial = self._byte()
            if initial == _BREAK:
                return b"".join(parts)
            if initial >> 5 != major or initial & 0x1F == 31:
                raise VauMalformedError("bad chunk in an indefinite-length CBOR string")
            if len(parts) >= MAX_ITEMS:
                raise VauMalformedError("too many chunks in a CBOR string")
            parts.append(self._take(self._argument(initial & 0x1F)))

    def _count(self, info: int) -> int | None:
        if info == 31:
            return None
        count = self._argument(info)
        if count > MAX_ITEMS:
            raise VauMalformedError("too many entries in a CBOR container")
        return count

    def _at_break(self, count: int | None, done: int) -> bool:
        if count is not None:
            return done == count
        if self.pos < len(self.data) and self.data[self.pos] == _BREAK:
            self.pos += 1
            return True
        if done >= MAX_ITEMS:
            raise VauMalformedError("too many entries in a CBOR container")
        return False

    def _array(self, info: int, depth: int) -> list[CborValue]:
        count = self._count(info)
        out: list[CborValue] = []
        while not self._at_break(count, len(out)):
            out.append(self.item(depth + 1))
        return out

    def _map(self, info: int, depth: int) -> dict[str, CborValue]:
        count = self._count(info)
        out: dict[str, CborValue] = {}
        while not self._at_break(count, len(out)):
            key = self.item(depth + 1)
            if not isinstance(key, str):
                raise VauMalformedError("CBOR map key is not text")
            if key in out:
                raise VauMalformedError("duplicate CBOR map key")
            out[key] = self.item(depth + 1)
        return out

    @staticmethod
    def _simple(initial: int) -> CborValue:
        if initial == _FALSE:
            return False
        if initial == _TRUE:
            return True
        if initial == _NULL:
            return None
        raise VauMalformedError("CBOR float, break or simple value not accepted")


def encode(value: CborValue) -> bytes:
    """Encode ``value`` with definite lengths and shortest heads."""
    out = bytearray()
    _encode_into(out, value)
    return bytes(out)


def _head(out: bytearray, major: int, argument: int) -> None:
    if argument < 0 or argument > MAX_UINT:
        raise ValueError("CBOR argument out of range")
    if argument < 24:
        out.append(major << 5 | argument)
    elif argument < 0x100:
        out.append(major << 5 | 24)
        out.append(argument)
    elif argument < 0x10000:
        out.append(major << 5 | 25)
        out += argument.to_bytes(2, "big")
    elif argument < 0x100000000:
        out.append(major << 5 | 26)
        out += argument.to_bytes(4, "big")
    else:
        out.append(major << 5 | 27)
        out += argument.to_bytes(8, "big")


def _encode_into(out: bytearray, value: CborValue) -> None:
    if value is None:
        out.append(_NULL)
    elif value is True:
        out.append(_TRUE)
    elif value is False:
        out.append(_FALSE)
    elif isinstance(value, int):
        if value >= 0:
            _head(out, 0, value)
        else:
            _head(out, 1, -1 - value)
    elif isinstance(value, bytes):
        _head(out, 2, len(value))
        out += value
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        _head(out, 3, len(raw))
        out += raw
    elif isinstance(value, list):
        _head(out, 4, len(value))
        for element in value:
            _encode_into(out, element)
    else:
        _head(out, 5, len(value))
        for key, element in value.items():
            _encode_into(out, key)
            _encode_into(out, element)
