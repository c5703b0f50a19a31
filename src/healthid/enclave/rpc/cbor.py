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

How: cbor2 (a Rust extension) reads and writes the bytes, and one Python walk over the value
(:func:`_plain`) decides what it may write and whether what it read is in the subset. Whatever
that fast path does not vouch for goes to the *reference* codec, the pure-Python codec of this
module from before (kept below, unchanged): it has the last word on every refusal (the same
CodecError, same message) and on every unusual type (subclasses such as enums, Mappings that
are no dict, bytearray, ...). The fast path only ever answers where the reference gives the
same answer; it is just faster (the tests hold the two to that, and pin the reference's outputs).

- ``encode``: the walk accepts exact dict (text keys), list, tuple, str, bytes, int in range,
  finite float, bool and None, at most MAX_DEPTH containers deep, and puts map keys into the
  canonical order (the order of a key set is worked out once and remembered); cbor2 writes
  the result as it is, shortest arguments and definite lengths, and in its canonical mode only
  when there is a float (shortest float width; its map order is ours for text keys). A lone
  surrogate makes cbor2 refuse, and the reference names it.
- ``decode``: cbor2 reads with tags refused at their head (before any of its tag decoders
  runs or the tagged item is read), no indefinite lengths, no duplicate keys and bounded
  depth. The value is accepted only if the walk finds it plain, with every map's keys text
  and already in canonical order, and cbor2 writes exactly the input back: that catches
  non-shortest arguments and floats, NaN, simple values and trailing bytes. cbor2 builds one
  object per item it reads, so a message that might hold more than MAX_ITEMS items (only one
  longer than MAX_ITEMS bytes can) has its heads counted first, building nothing.
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Callable, Mapping
from typing import Any, Final, NoReturn, cast

import cbor2

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


# -- the fast path --------------------------------------------------------------------------
def encode(value: object) -> bytes:
    """The deterministic encoding of ``value``; CodecError for anything outside the subset."""
    floats: list[float] = []
    try:
        plain = _plain(value, 0, floats)
        encoded: bytes = cbor2.dumps(plain, canonical=bool(floats))
    except Exception:  # _NotPlainError, or cbor2 refused (a lone surrogate): the reference decides
        return _reference_encode(value)
    return encoded


def decode(data: bytes) -> object:
    """The one value encoded by ``data`` (deterministic form only); CodecError otherwise."""
    # Input other than bytes goes to the reference as it is (bytearray: bytearray slices).
    if type(data) is bytes and (len(data) <= MAX_ITEMS or _within_item_limit(data)):
        try:
            value = cbor2.loads(
                data,
                semantic_decoders=_NO_TAGS,
                allow_indefinite=False,
                allow_duplicate_keys=False,
                max_depth=MAX_DEPTH,  # cbor2 counts non-empty containers only: _plain is exact
            )
            floats: list[float] = []
            if _plain(value, 0, floats) is value and (
                cbor2.dumps(value, canonical=bool(floats)) == data
            ):
                return value
        except Exception:  # refused somewhere on the way: the reference names the reason
            return _reference_decode(data)
    return _reference_decode(data)


class _NotPlainError(Exception):
    """The fast path does not vouch for this value: the reference codec decides."""


_LEAVES: Final = frozenset({str, bytes, bool, type(None)})  # taken as they are
_INT_LOW: Final = -_UINT_LIMIT  # integers must be _INT_LOW <= n < _UINT_LIMIT


# ``Any``: the walk dispatches on exact types itself (``type(x) is T``, cheaper than isinstance).
def _plain(value: Any, depth: int, floats: list[float]) -> object:
    """``value`` in plain types only: dict with text keys in canonical order, list, str, bytes,
    int in range, finite float, bool, None, at most MAX_DEPTH containers deep. Every part that
    already is plain is shared, and ``value`` itself comes back when all of it is (how decode
    knows its maps were in order). Notes in ``floats`` that there is a float; _NotPlainError for
    anything else (the reference codec's matter). Text is not checked for lone surrogates:
    cbor2 refuses them when writing, and never reads one."""
    kind = type(value)
    if kind in _LEAVES:
        return value
    if kind is int:
        if _INT_LOW <= value < _UINT_LIMIT:
            return value
    elif kind is dict:
        return _plain_map(value, depth, floats)
    elif kind is list or kind is tuple:
        return _plain_array(value, depth, floats)
    elif kind is float:
        if math.isfinite(value):
            if not floats:
                floats.append(value)
            return value
    elif kind is bytearray:
        return bytes(value)  # a new object: never part of what decode accepts
    raise _NotPlainError


def _plain_array(value: list[Any] | tuple[Any, ...], depth: int, floats: list[float]) -> object:
    if depth >= MAX_DEPTH:
        raise _NotPlainError
    depth += 1
    copy = None if type(value) is list else list(value)  # a tuple becomes a list
    for i, item in enumerate(value):
        kind = type(item)  # the common leaves here, without a call each
        if kind in _LEAVES or (kind is int and _INT_LOW <= item < _UINT_LIMIT):
            continue
        plain = _plain(item, depth, floats)
        if plain is not item:
            if copy is None:
                copy = list(value)
            copy[i] = plain
    return value if copy is None else copy


def _plain_map(value: dict[Any, Any], depth: int, floats: list[float]) -> object:
    if depth >= MAX_DEPTH:
        raise _NotPlainError
    depth += 1
    keys = tuple(value)
    try:
        order = _KEY_ORDER[keys]
    except KeyError:
        order = _key_order(keys)
    if order is None:  # the keys are in canonical order: copy only if a value changes
        copy = None
        for key, item in value.items():
            kind = type(item)
            if kind in _LEAVES or (kind is int and _INT_LOW <= item < _UINT_LIMIT):
                continue
            plain = _plain(item, depth, floats)
            if plain is not item:
                if copy is None:
                    copy = dict(value)
                copy[key] = plain
        return value if copy is None else copy
    # a new dict, the keys inserted in canonical order (the order cbor2 writes them in)
    ordered: dict[str, object] = {}
    for key in order:
        item = value[key]
        kind = type(item)
        if not (kind in _LEAVES or (kind is int and _INT_LOW <= item < _UINT_LIMIT)):
            item = _plain(item, depth, floats)
        ordered[key] = item
    return ordered


# The canonical order of each key set met: None if the keys come in that order already, else
# the keys sorted. Keys are field and claim names, a small fixed set, so this is computed once
# per set; but the decoder meets whatever keys a peer sends, so what is remembered is bounded
# (entries, keys and characters per entry; the rest is sorted every time). A key set is looked
# up by equality: a str subclass key equal to a known key is taken as that text (which is how
# the reference writes it too).
_KEY_ORDER: dict[tuple[object, ...], tuple[str, ...] | None] = {}
_KEY_ORDER_ENTRIES: Final = 1024
_KEY_ORDER_KEYS: Final = 64
_KEY_ORDER_CHARS: Final = 1024


def _key_order(keys: tuple[object, ...]) -> tuple[str, ...] | None:
    """The canonical order of a map's keys (see _KEY_ORDER); _NotPlainError if a key is not text
    (an exact str) or not valid Unicode."""
    for key in keys:
        if type(key) is not str:
            raise _NotPlainError
    texts = cast(tuple[str, ...], keys)
    try:
        # RFC 8949 §4.2.1: bytewise order of the encoded keys (distinct text, distinct bytes),
        # encoded as the reference does but not through its cache (a peer's keys stay out)
        ordered = tuple(sorted(texts, key=_key.__wrapped__))
    except CodecError:  # a lone surrogate
        raise _NotPlainError from None
    order = None if ordered == texts else ordered
    if len(texts) <= _KEY_ORDER_KEYS and sum(map(len, texts)) <= _KEY_ORDER_CHARS:
        if len(_KEY_ORDER) >= _KEY_ORDER_ENTRIES:
            _KEY_ORDER.clear()
        _KEY_ORDER[texts] = order
    return order


class _NoTags(dict[int, Callable[[Any, bool], Any]]):
    """cbor2's table of tag decoders, looked up for every tag before its built-in ones
    (dates, bignums, regular expressions, shared references, sets ...): refusing in the
    lookup stops the decoder at the tag's head, before the tagged item is read. A dict
    (always empty) because cbor2 takes one faster than another Mapping."""

    def __getitem__(self, tag: int) -> NoReturn:
        raise _NotPlainError(f"tag {tag}")


_NO_TAGS: Final = _NoTags()


def _item_span(initial: int) -> int:
    """Bytes taken by an item that starts with ``initial`` where that byte alone tells: the
    head of an integer, float, simple value, tag, array or map (its contents are items of
    their own), or a whole string shorter than 24 bytes. 0: a longer string, whose length
    follows. Reserved and indefinite forms: more than any message, so the count stops."""
    major, info = initial >> 5, initial & 0x1F
    if info >= 28:
        return 1 << 62
    if major in (_MAJOR_BYTES, _MAJOR_TEXT):
        return 1 + info if info < 24 else 0
    return 1 if info < 24 else 1 + _ARG_WIDTH[info][0]


_ITEM_SPAN: Final = tuple(_item_span(initial) for initial in range(256))


def _within_item_limit(data: bytes) -> bool:
    """Whether cbor2, reading ``data``, can build no more than MAX_ITEMS items. Every item
    takes a byte at least, so data of MAX_ITEMS bytes or fewer cannot. Longer data is read
    head by head, building nothing, until the items met plus the bytes left are no more than
    MAX_ITEMS (True), or more than MAX_ITEMS items have been met (False). cbor2 reads the same
    heads in the same order (and none after one it refuses), so it cannot build more."""
    slack = len(data) - MAX_ITEMS
    span, pos = _ITEM_SPAN, 0
    for count in range(MAX_ITEMS + 1):
        if pos - count >= slack:  # count + (len(data) - pos) <= MAX_ITEMS
            return True
        step = span[data[pos]]
        if not step:  # a string of 24 bytes or more: 1, 2, 4 or 8 bytes of length follow
            width = 1 << ((data[pos] & 0x1F) - 24)
            step = 1 + width + int.from_bytes(data[pos + 1 : pos + 1 + width], "big")
        pos += step
    return False


# -- the reference: the pure-Python codec, unchanged ----------------------------------------
def _reference_encode(value: object) -> bytes:
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


def _reference_decode(data: bytes) -> object:
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
