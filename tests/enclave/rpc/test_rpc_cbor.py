"""The deterministic CBOR subset of the enclave RPC: every behaviour pinned, and checked against
the pure-Python codec it was before cbor2 did the bulk of the work (kept in the module as the
reference for every refusal).

The encoder must keep refusing everything outside the subset, with the same message; the
decoder is attack surface on the trusted side and must accept exactly what the reference
accepts (same value), and refuse everything else with the same CodecError.
"""

from __future__ import annotations

import collections
import datetime
import email.parser
import enum
import math
import struct
import tracemalloc
import types
import uuid
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from fractions import Fraction
from typing import Any, Final, NoReturn

import cbor2
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from rpc_testlib import same as same_values

from healthid.enclave.rpc import cbor
from healthid.enclave.rpc.errors import CodecError

PROPERTY = settings(
    deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow], max_examples=400
)


# -- the reference: the module's pure-Python codec, the whole codec before cbor2 did the bulk --
# (every output and refusal of it is pinned below, so the fast path cannot drift with it)
reference_encode = cbor._reference_encode
reference_decode = cbor._reference_decode
_Decoder = cbor._Decoder
_float = cbor._float
_SINGLE, _DOUBLE = cbor._SINGLE, cbor._DOUBLE


# -- comparing outcomes ---------------------------------------------------------------------
def same(a: object, b: object) -> bool:
    """rpc_testlib.same, maps in the same key order too."""
    return same_values(a, b, key_order=True)


def outcome(function: Callable[[Any], object], argument: object) -> tuple[object, ...]:
    """What a call did: ("ok", result) or ("raised", exception type, message)."""
    try:
        return ("ok", function(argument))
    except Exception as exc:
        return ("raised", type(exc), str(exc))


def assert_same_outcome(new: tuple[object, ...], old: tuple[object, ...]) -> None:
    if new[0] == "ok" and old[0] == "ok":
        assert same(new[1], old[1]), (new, old)
    else:
        assert new == old


def assert_encoders_agree(value: object) -> None:
    assert_same_outcome(outcome(cbor.encode, value), outcome(reference_encode, value))


def assert_decoders_agree(data: bytes) -> None:
    assert_same_outcome(outcome(cbor.decode, data), outcome(reference_decode, data))


# -- the encoder, pinned --------------------------------------------------------------------
class Color(enum.StrEnum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


class Text(str):
    pass


class Number(int):
    pass


class Real(float):
    pass


class Blob(bytes):
    pass


class Items(list[object]):
    pass


class Fields(dict[str, object]):
    pass


Pair = collections.namedtuple("Pair", "a b")


class Frozen(Mapping[object, object]):
    """A Mapping that is no dict."""

    def __init__(self, items: dict[object, object]) -> None:
        self._items = items

    def __getitem__(self, key: object) -> object:
        return self._items[key]

    def __iter__(self) -> Iterator[object]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


def nested(depth: int, *, innermost: object, as_map: bool = False) -> object:
    """``depth`` arrays (or single-entry maps) around ``innermost``."""
    value = innermost
    for _ in range(depth):
        value = {"a": value} if as_map else [value]
    return value


ENCODED: Final[list[tuple[object, str]]] = [
    (Color.RED, "63726564"),  # a StrEnum member is its text
    (Level.HIGH, "03"),  # an IntEnum member is its integer
    (Text("ab"), "626162"),
    (Number(24), "1818"),
    (Real(1.5), "f93e00"),
    (Blob(b"x"), "4178"),
    (bytearray(b"ab"), "426162"),  # a byte string, like bytes
    ((1, 2), "820102"),  # tuples are arrays
    (Pair(1, 2), "820102"),
    (Items([1]), "8101"),
    (Fields(b=1, a=2), "a2616102616201"),
    (collections.OrderedDict(b=1, a=2), "a2616102616201"),
    (types.MappingProxyType({"b": 1, "a": 2}), "a2616102616201"),
    (Frozen({"b": 1, "aa": 2}), "a261620162616102"),  # any Mapping, keys sorted
    ({Color.RED: 1}, "a16372656401"),  # a str-subclass key is its text
    ({Text("k"): Color.RED}, "a1616b63726564"),
    (True, "f5"),
    (False, "f4"),
    (0, "00"),
    (1, "01"),
    (None, "f6"),
    ([True, 1, 1.0, False, 0, 0.0], "86f501f93c00f400f90000"),  # bool is not int, 1.0 not 1
    ((1 << 64) - 1, "1bffffffffffffffff"),
    (-(1 << 64), "3bffffffffffffffff"),
    (-0.0, "f98000"),
    (5e-324, "fb0000000000000001"),
    (65504.0, "f97bff"),
    (65505.0, "fa477fe100"),
    (1e300, "fb7e37e43c8800759c"),
    # keys by the bytes of their encoding: shorter UTF-8 first, then bytewise
    ({"\u00e9": 1, "z": 2, "aa": 3}, "a3617a026261610362c3a901"),
    ({"b": 1, "aa": 2, "a": 3, "": 4}, "a4600461610361620162616102"),
    (nested(23, innermost=[]), "81" * 23 + "80"),  # 24 containers: the limit
    (nested(23, innermost={}, as_map=True), "a16161" * 23 + "a0"),
]


@pytest.mark.parametrize(("value", "hex_"), ENCODED, ids=lambda v: repr(v)[:30])
def test_encoder_output_is_pinned(value: object, hex_: str) -> None:
    assert cbor.encode(value).hex() == hex_
    assert reference_encode(value).hex() == hex_


def _cyclic_list() -> list[object]:
    value: list[object] = []
    value.append(value)
    return value


def _cyclic_map() -> dict[str, object]:
    value: dict[str, object] = {}
    value["a"] = value
    return value


REFUSED: Final[list[tuple[object, str]]] = [
    (memoryview(b"ab"), "cannot encode a memoryview"),
    ({1, 2}, "cannot encode a set"),
    (frozenset(), "cannot encode a frozenset"),
    (Decimal("1.5"), "cannot encode a Decimal"),
    (datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC), "cannot encode a datetime"),
    (datetime.date(2024, 1, 1), "cannot encode a date"),
    (uuid.UUID(int=1), "cannot encode a UUID"),
    (1j, "cannot encode a complex"),
    (Fraction(1, 3), "cannot encode a Fraction"),
    (cbor2.CBORTag(1, 2), "cannot encode a CBORTag"),
    (cbor2.undefined, "cannot encode a UndefinedType"),
    (cbor2.CBORSimpleValue(1), "cannot encode a CBORSimpleValue"),
    (object(), "cannot encode a object"),
    (iter([]), "cannot encode a list_iterator"),
    (range(3), "cannot encode a range"),
    (Level, "cannot encode a EnumType"),
    (math.nan, "NaN and infinities are not allowed"),
    (math.inf, "NaN and infinities are not allowed"),
    (-math.inf, "NaN and infinities are not allowed"),
    (Real("nan"), "NaN and infinities are not allowed"),
    ([math.nan], "NaN and infinities are not allowed"),
    (1 << 64, "integer out of range"),
    (-(1 << 64) - 1, "integer out of range"),
    (Number(1 << 64), "integer out of range"),
    ({"a": 1 << 64}, "integer out of range"),
    ({1: "x"}, "map keys must be text"),
    ({b"k": 1}, "map keys must be text"),
    ({None: 1}, "map keys must be text"),
    ({(1,): 1}, "map keys must be text"),
    ({True: 1}, "map keys must be text"),
    ([1, {1: 2}], "map keys must be text"),
    (Frozen({1: 2}), "map keys must be text"),
    ("\ud800", r"text is not valid Unicode \(lone surrogate\)"),
    ({"\udc00": 1}, r"text is not valid Unicode \(lone surrogate\)"),
    (["ok", "\ud800"], r"text is not valid Unicode \(lone surrogate\)"),
    ({"k": "\ud800"}, r"text is not valid Unicode \(lone surrogate\)"),
    (nested(24, innermost=[]), "nested deeper than 24"),
    (nested(24, innermost={}, as_map=True), "nested deeper than 24"),
    (_cyclic_list(), "nested deeper than 24"),
    (_cyclic_map(), "nested deeper than 24"),
]


@pytest.mark.parametrize(("value", "message"), REFUSED, ids=lambda v: repr(v)[:30])
def test_encoder_refuses_everything_outside_the_subset(value: object, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        cbor.encode(value)
    with pytest.raises(CodecError, match=message):
        reference_encode(value)


# -- the decoder, pinned --------------------------------------------------------------------
DECODED: Final[list[tuple[str, object]]] = [
    ("820000", [0, 0]),
    ("fa47c35000", 100000.0),
    ("a16161" * 23 + "a0", nested(23, innermost={}, as_map=True)),
    ("81" * 23 + "80", nested(23, innermost=[])),
    ("a3617a026261610362c3a901", {"z": 2, "aa": 3, "\u00e9": 1}),
]


@pytest.mark.parametrize(("hex_", "value"), DECODED, ids=lambda v: str(v)[:30])
def test_decoder_output_is_pinned(hex_: str, value: object) -> None:
    assert same(cbor.decode(bytes.fromhex(hex_)), value)
    assert same(reference_decode(bytes.fromhex(hex_)), value)


TAGS = "CBOR tags are not allowed"
INDEFINITE = "indefinite lengths and reserved values are not allowed"
SIMPLE = "simple values other than false, true and null are not allowed"
TRUNCATED = "truncated message"
NAN = "NaN and infinities are not allowed"
KEYS = "map keys must be text"
ORDER = r"map keys are duplicated or not in deterministic order"
SHORTEST = "integer or length not in its shortest form"
UTF8 = "text is not valid UTF-8"
TRAILING = "trailing bytes after the message"

REJECTED: Final[list[tuple[str, str]]] = [
    ("c074323031332d30332d32315432303a30343a30305a", TAGS),  # date/time
    ("c11a514b67b0", TAGS),  # epoch date/time
    ("c249010000000000000000", TAGS),  # bignum
    ("c349010000000000000000", TAGS),  # negative bignum
    ("c48221196ab3", TAGS),  # decimal fraction
    ("c5822003", TAGS),  # bigfloat
    ("d81c8100", TAGS),  # shareable
    ("d81c81d81d00", TAGS),  # a shared reference to its own container (a cycle)
    ("d9010083d819006161d81900", TAGS),  # string reference namespace
    ("d90102820102", TAGS),  # set
    ("d8236161", TAGS),  # regular expression
    ("d81e820103", TAGS),  # rational
    ("d8255000000000000000000000000000000000", TAGS),  # UUID
    ("d9d9f700", TAGS),  # self-described CBOR
    ("db000000000000000000", TAGS),  # tag 0 in 8 bytes
    ("df00", TAGS),  # indefinite tag
    ("a16161c100", TAGS),  # a tag as a map value
    ("a1c1616100", TAGS),  # a tag as a map key
    ("9f00ff", INDEFINITE),
    ("bf616100ff", INDEFINITE),
    ("5f4100ff", INDEFINITE),
    ("7f6161ff", INDEFINITE),
    ("1c", INDEFINITE),
    ("3d", INDEFINITE),
    ("5e", INDEFINITE),
    ("7d", INDEFINITE),
    ("9c", INDEFINITE),
    ("be", INDEFINITE),
    ("ff", SIMPLE),  # a lone break
    ("fc", SIMPLE),
    ("e0", SIMPLE),
    ("f3", SIMPLE),
    ("f7", SIMPLE),  # undefined
    ("f818", SIMPLE),
    ("f820", SIMPLE),
    ("f8ff", SIMPLE),
    ("81f7", SIMPLE),
    ("a16161f7", SIMPLE),
    ("5bffffffffffffffff00", TRUNCATED),  # lengths that would need memory the data lacks
    ("7bffffffffffffffff00", TRUNCATED),
    ("9bffffffffffffffff00", TRUNCATED),
    ("bbffffffffffffffff00", TRUNCATED),
    ("5a7fffffff", TRUNCATED),
    ("9affffffff80", TRUNCATED),
    ("8200", TRUNCATED),
    ("a1616181", TRUNCATED),
    ("", TRUNCATED),
    ("63eda080", UTF8),  # a surrogate
    ("62c328", UTF8),
    ("61ff", UTF8),
    ("62c0af", UTF8),  # overlong
    ("f97e00", NAN),
    ("f97e01", NAN),
    ("f97c00", NAN),
    ("f9fc00", NAN),
    ("fa7fc00000", NAN),
    ("fa7f800000", NAN),
    ("fb7ff8000000000000", NAN),
    ("fb7ff0000000000000", NAN),
    ("82f97e0000", NAN),
    ("fa3f800000", "float not in its shortest form"),
    ("fb3ff0000000000000", "float not in its shortest form"),
    ("fb40f86a0000000000", "float not in its shortest form"),
    ("a10102", KEYS),
    ("a1416102", KEYS),
    ("a18000", KEYS),
    ("a1a000", KEYS),
    ("a1f600", KEYS),
    ("a1f400", KEYS),
    ("a1f93c0000", KEYS),
    ("a2616100616100", ORDER),  # duplicate
    ("a2616200616100", ORDER),  # b before a
    ("a262616100616200", ORDER),  # aa before b
    ("a16161a2616200616100", ORDER),  # nested
    ("0000", TRAILING),
    ("f6f6", TRAILING),
    ("1817", SHORTEST),
    ("3817", SHORTEST),
    ("580161", SHORTEST),
    ("780161", SHORTEST),
    ("980100", SHORTEST),
    ("b801616100", SHORTEST),
    ("1900ff", SHORTEST),
    ("1a0000ffff", SHORTEST),
    ("1b00000000ffffffff", SHORTEST),
    ("a16161" * 24 + "a0", "nested deeper than 24"),
    ("81" * 24 + "80", "nested deeper than 24"),
    ("81" * 200 + "80", "nested deeper than 24"),
]


@pytest.mark.parametrize(("hex_", "message"), REJECTED, ids=lambda v: v[:40])
def test_decoder_refuses_everything_outside_the_deterministic_subset(
    hex_: str, message: str
) -> None:
    data = bytes.fromhex(hex_)
    with pytest.raises(CodecError, match=message):
        cbor.decode(data)
    with pytest.raises(CodecError, match=message):
        reference_decode(data)


def test_the_item_limit_is_exact() -> None:
    """MAX_ITEMS items (an array and its MAX_ITEMS - 1 elements) pass, one more does not."""
    elements = cbor.MAX_ITEMS - 1
    at_limit = b"\x9a" + struct.pack(">I", elements) + b"\x00" * elements
    assert cbor.decode(at_limit) == [0] * elements
    over = b"\x9a" + struct.pack(">I", elements + 1) + b"\x00" * (elements + 1)
    with pytest.raises(CodecError, match="more than 1000000 data items"):
        cbor.decode(over)


def test_claimed_lengths_allocate_nothing() -> None:
    """A head may claim 2**64 - 1 bytes or items: refused as truncated, with no allocation."""
    tracemalloc.start()
    try:
        for major in (0x40, 0x60, 0x80, 0xA0):
            for claim in (
                b"\x1b" + b"\xff" * 8,
                b"\x1b\x7f" + b"\xff" * 7,
                b"\x1a\x7f\xff\xff\xff",
            ):
                with pytest.raises(CodecError, match=TRUNCATED):
                    cbor.decode(bytes([major | claim[0]]) + claim[1:] + b"\x00" * 64)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_dense_messages_are_refused_after_max_items_not_after_all() -> None:
    """Four million one-byte items (4 MB, within a frame): refused having built no more than
    the reference builds (MAX_ITEMS items), not four million of them."""
    data = b"\x9a" + struct.pack(">I", 4_000_000) + b"\x00" * 4_000_000
    tracemalloc.start()
    try:
        with pytest.raises(CodecError, match="data items"):
            cbor.decode(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20  # a list of 1M references is 8 MB; of 4M, 32 MB


def test_input_types_other_than_bytes_decode_as_before() -> None:
    data = cbor.encode({"a": b"xy", "b": ["c"]})
    assert_decoders_agree(bytearray(data))  # byte strings come back as bytearray slices
    assert_decoders_agree(memoryview(data))  # type: ignore[arg-type]


def test_long_text_is_checked_as_utf8_too() -> None:
    """cbor2 reads text of more than 64 KiB another way: still strict UTF-8."""
    for bad in (b"\xed\xa0\x80", b"\xc0\xaf", b"\xff"):
        data = b"\x7a" + struct.pack(">I", 70_000 + len(bad)) + b"a" * 70_000 + bad
        with pytest.raises(CodecError, match=UTF8):
            cbor.decode(data)
    good = "\u00e9" * 40_000
    assert cbor.decode(cbor.encode(good)) == good


def test_a_str_subclass_key_of_a_known_key_set_is_its_text() -> None:
    """Key sets are remembered by equality: an equal str subclass key writes as its text."""
    assert cbor.encode({"red": 1, "b": Level.HIGH}) == reference_encode({"red": 1, "b": 3})
    assert cbor.encode({Color.RED: 1, "b": 3}) == reference_encode({"red": 1, "b": 3})
    assert cbor.encode({"b": 3, Color.RED: 1}) == reference_encode({"red": 1, "b": 3})


def test_remembered_key_orders_are_bounded() -> None:
    for i in range(3000):
        cbor.encode({f"k{i}": 1, "a": 2})
    assert len(cbor._KEY_ORDER) <= cbor._KEY_ORDER_ENTRIES
    many = {f"key{i}": i for i in range(cbor._KEY_ORDER_KEYS + 1)}
    assert cbor.encode(many) == reference_encode(many)
    assert tuple(many) not in cbor._KEY_ORDER
    long = {"k" * 600: 1, "l" * 600: 2}
    assert cbor.encode(long) == reference_encode(long)
    assert tuple(long) not in cbor._KEY_ORDER


def test_a_peers_keys_stay_out_of_the_encoders_key_cache() -> None:
    # built first: the reference encoder (the module's own) remembers the keys it writes
    messages = [reference_encode({f"{i}" * 5000: i, "x": None}) for i in range(50)]
    cbor._key.cache_clear()
    for data in messages:
        cbor.decode(data)
    assert cbor._key.cache_info().currsize == 0


# -- properties: the same outcome as the reference ------------------------------------------
BOUNDARY_INTS = [
    0,
    1,
    23,
    24,
    255,
    256,
    65535,
    65536,
    (1 << 32) - 1,
    1 << 32,
    (1 << 64) - 1,
    -1,
    -24,
    -25,
    -256,
    -257,
    -(1 << 64),
]
keys = st.text(max_size=6) | st.sampled_from(["id", "method", "args", "ok", "a", "aa", "b", "é"])
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 64), max_value=(1 << 64) - 1)
    | st.sampled_from(BOUNDARY_INTS)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.floats(width=16, allow_nan=False, allow_infinity=False)
    | st.floats(width=32, allow_nan=False, allow_infinity=False)
    | st.text()
    | st.binary()
)
subset_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(keys, inner, max_size=6),
    max_leaves=30,
)

# Everything else a caller might hand the encoder, for the refusals and the edge types.
exotic_scalars = st.sampled_from(
    [
        math.nan,
        math.inf,
        -math.inf,
        1 << 64,
        -(1 << 64) - 1,
        1 << 200,
        "\ud800",
        "a\udfffb",
        Color.RED,
        Level.HIGH,
        Text("t"),
        Number(5),
        Number(1 << 70),
        Real(2.5),
        Real("inf"),
        Blob(b"b"),
        bytearray(b"ba"),
        memoryview(b"mv"),
        {1, 2},
        frozenset({3}),
        Decimal("0.1"),
        Fraction(1, 3),
        datetime.datetime(2024, 5, 6, tzinfo=datetime.UTC),
        datetime.date(2024, 5, 6),
        uuid.UUID(int=7),
        2j,
        cbor2.CBORTag(2, b"\x01"),
        cbor2.undefined,
        cbor2.CBORSimpleValue(7),
        object(),
        range(2),
        Level,
    ]
)
exotic_keys = keys | st.sampled_from(
    [1, b"k", None, True, 2.5, (1,), Color.RED, Text("a"), "\ud800"]
)


def _containers(inner: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.lists(inner, max_size=3).map(Items)
        | st.dictionaries(keys, inner, max_size=4)
        | st.dictionaries(exotic_keys, inner, max_size=4)
        | st.dictionaries(keys, inner, max_size=4).map(types.MappingProxyType)
        | st.dictionaries(keys, inner, max_size=4).map(Fields)
        | st.dictionaries(exotic_keys, inner, max_size=4).map(Frozen)
        | st.builds(nested, st.integers(20, 26), innermost=inner, as_map=st.booleans())
    )


any_values = st.recursive(scalars | exotic_scalars, _containers, max_leaves=20)


@PROPERTY
@given(subset_values)
def test_encoder_agrees_with_the_reference_inside_the_subset(value: object) -> None:
    assert cbor.encode(value) == reference_encode(value)
    assert same(cbor.decode(cbor.encode(value)), reference_decode(reference_encode(value)))


@PROPERTY
@given(any_values)
@example(_cyclic_list())
@example({"b": [1, {"z": math.nan}], "a": 1})
@example({"a": "\ud800", 1: 2})
def test_encoder_agrees_with_the_reference_on_anything(value: object) -> None:
    assert_encoders_agree(value)


@PROPERTY
@given(st.binary(max_size=80))
def test_decoder_agrees_with_the_reference_on_random_bytes(data: bytes) -> None:
    assert_decoders_agree(data)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid message with bit flips, a truncation, an insertion or a deleted span."""
    data = bytearray(reference_encode(draw(subset_values)))
    kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "overwrite"]))
    if kind == "flip":
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
    elif kind == "truncate":
        del data[draw(st.integers(0, len(data) - 1)) :]
    elif kind == "insert":
        i = draw(st.integers(0, len(data)))
        data[i:i] = draw(st.binary(min_size=1, max_size=9))
    elif kind == "delete":
        i = draw(st.integers(0, len(data) - 1))
        del data[i : i + draw(st.integers(1, 9))]
    else:
        i = draw(st.integers(0, len(data) - 1))
        data[i] = draw(st.integers(0, 255))
    return bytes(data)


@PROPERTY
@given(mutated())
def test_decoder_agrees_with_the_reference_on_mutated_messages(data: bytes) -> None:
    assert_decoders_agree(data)


@st.composite
def bent_encoding(draw: st.DrawFn, value: object) -> bytes:
    """An encoding of ``value`` (of the subset) that now and then bends one of the
    deterministic rules: a wider argument, a wider float, an indefinite length, keys in
    another order or repeated, a tag or a simple value in place of an item."""

    def bend() -> bool:  # rarely; and never in the simplest example (hypothesis shrinks to 0)
        return draw(st.integers(0, 15)) == 15

    def head(major: int, n: int) -> bytes:
        widths = [w for w in (0, 1, 2, 4, 8) if (n < 24 if w == 0 else n < 1 << (8 * w))]
        width = draw(st.sampled_from(widths)) if bend() else widths[0]
        if width == 0:
            return bytes([major << 5 | n])
        return bytes([major << 5 | {1: 24, 2: 25, 4: 26, 8: 27}[width]]) + n.to_bytes(width, "big")

    def item(value: object) -> bytes:
        if bend():
            choice = draw(st.integers(0, 3))
            if choice == 3:  # a tag around the item
                return head(6, draw(st.sampled_from([0, 1, 2, 24, 28, 55799]))) + item(value)
            if choice == 2:  # a simple value or a non-finite float instead
                return draw(st.sampled_from([b"\xf7", b"\xe0", b"\xf8\x20", b"\xf9\x7e\x00"]))
        if isinstance(value, bool) or value is None:
            return reference_encode(value)
        if isinstance(value, int):
            return head(0, value) if value >= 0 else head(1, -1 - value)
        if isinstance(value, float):
            canonical = _float(value)
            wider = [b"\xfa" + _SINGLE.pack(value)] if len(canonical) == 3 else []
            wider += [b"\xfb" + _DOUBLE.pack(value)] if len(canonical) < 9 else []
            return draw(st.sampled_from(wider)) if wider and bend() else canonical
        if isinstance(value, bytes | str):
            raw = value if isinstance(value, bytes) else value.encode()
            major = 2 if isinstance(value, bytes) else 3
            if raw and bend():  # indefinite length, in two chunks
                cut = draw(st.integers(0, len(raw)))
                return (
                    bytes([major << 5 | 31])
                    + head(major, cut)
                    + raw[:cut]
                    + (head(major, len(raw) - cut) + raw[cut:] + b"\xff")
                )
            return head(major, len(raw)) + raw
        if isinstance(value, list):
            parts = [item(v) for v in value]
            if bend():
                return b"\x9f" + b"".join(parts) + b"\xff"
            return head(4, len(parts)) + b"".join(parts)
        assert isinstance(value, dict)
        pairs = [(reference_encode(k), item(v)) for k, v in value.items()]
        pairs.sort()
        pairs.sort(key=lambda p: len(p[0]))
        if pairs and bend():
            pairs = draw(st.permutations(pairs))
        if pairs and bend():
            pairs.append(pairs[0])
        body = b"".join(k + v for k, v in pairs)
        if bend():
            return b"\xbf" + body + b"\xff"
        return head(5, len(pairs)) + body

    return item(value)


@PROPERTY
@given(subset_values.flatmap(bent_encoding))
def test_decoder_agrees_with_the_reference_on_bent_encodings(data: bytes) -> None:
    assert_decoders_agree(data)


def _cbor2_containers(inner: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    any_keys = keys | st.integers(-9, 9) | st.binary(max_size=2)
    return st.lists(inner, max_size=4) | st.dictionaries(any_keys, inner, max_size=4)


cbor2_values = st.recursive(
    scalars
    | st.sampled_from(
        [
            math.nan,
            -math.inf,
            1 << 70,
            -(1 << 70),
            Decimal("1.5"),
            Fraction(2, 3),
            datetime.datetime(2024, 5, 6, tzinfo=datetime.UTC),
            uuid.UUID(int=9),
            cbor2.undefined,
            cbor2.CBORSimpleValue(3),
            frozenset({1}),
            2j,
        ]
    )
    | st.builds(cbor2.CBORTag, st.integers(0, (1 << 64) - 1), st.integers(0, 9)),
    _cbor2_containers,
    max_leaves=12,
)


@PROPERTY
@given(
    cbor2_values,
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.booleans(),
)
def test_decoder_agrees_with_the_reference_on_what_cbor2_writes(
    value: object, canonical: bool, indefinite: bool, sharing: bool, stringref: bool
) -> None:
    """cbor2 reads far more than the subset; whatever it writes, the decoders agree on."""
    try:
        data = cbor2.dumps(
            value,
            canonical=canonical,
            indefinite_containers=indefinite,
            value_sharing=sharing,
            string_referencing=stringref,
        )
    except Exception:  # cbor2 cannot write every value in every mode
        return
    assert_decoders_agree(data)


@PROPERTY
@given(subset_values)
def test_cbor2_canonical_output_is_the_reference_output(value: object) -> None:
    """The fact the fast path stands on (floats and key order included)."""
    assert cbor2.dumps(value, canonical=True) == reference_encode(value)


# -- the fast path: cbor2 does the work, and sees no tag ------------------------------------
TYPICAL: Final[list[object]] = [
    {"id": 7, "method": "status", "args": {}},
    {"id": 1 << 40, "ok": {"ciphertext": b"\x00" * 4096, "records": [{"v": 1, "t": "x"}] * 30}},
    {"id": None, "error": {"code": "bad_request", "message": "m" * 1000}},
    {"claims": {"acr": "gematik-ehealth-loa-high", "amr": ["mfa"], "n": -5, "f": 0.5}},
    {"z": [[b"", ""], [True, False, None]], "aa": (1, 2), "\u00e9": [1.5, -0.0, 1e300]},
    nested(23, innermost=[1, "deep"]),  # 24 containers
    {"rows": list(range(3000)), "sealed": [{"b": b"\x01" * 500, "a": i} for i in range(2500)]},
]


@pytest.mark.parametrize("value", TYPICAL, ids=lambda v: repr(v)[:30])
def test_the_subset_takes_the_fast_path_both_ways(
    value: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = reference_encode(value)
    expected_value = reference_decode(expected)

    def not_here(_: object) -> NoReturn:
        raise AssertionError("took the reference path")

    monkeypatch.setattr(cbor, "_reference_encode", not_here)
    monkeypatch.setattr(cbor, "_reference_decode", not_here)
    assert cbor.encode(value) == expected
    assert same(cbor.decode(expected), expected_value)


@pytest.mark.parametrize("tag", [0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 256, 258, 55799])
def test_tags_are_refused_at_their_head_before_cbor2_decodes_them(tag: int) -> None:
    """cbor2's own tag decoders (cycles, regexes, MIME parsing, big fractions ...) never run:
    its tag table refuses first (and the reference then names the refusal)."""
    data = cbor2.dumps(cbor2.CBORTag(tag, [b"\x01" * 9, "2024-01-01T00:00:00Z"]))
    with pytest.raises(cbor2.CBORDecodeError) as refused:
        cbor2.loads(data, semantic_decoders=cbor._NO_TAGS)
    assert isinstance(refused.value.__cause__, cbor._NotPlainError)
    with pytest.raises(CodecError, match=TAGS):
        cbor.decode(data)


def test_cbor2_runs_none_of_its_tag_decoders_on_a_message(monkeypatch: pytest.MonkeyPatch) -> None:
    """The witness: a MIME tag (36), which cbor2 on its own hands to email's parser."""
    payload = "Subject: witness\n\nbody"
    seen: list[str] = []
    parsestr = email.parser.Parser.parsestr

    def spy(self: email.parser.Parser, text: str, headersonly: bool = False) -> object:
        seen.append(text)
        return parsestr(self, text, headersonly)

    monkeypatch.setattr(email.parser.Parser, "parsestr", spy)
    data = cbor2.dumps({"a": [cbor2.CBORTag(36, payload)]})
    cbor2.loads(data)
    assert payload in seen  # the witness works
    seen.clear()
    with pytest.raises(CodecError, match=TAGS):
        cbor.decode(data)
    assert payload not in seen


def test_cbor2_reads_no_indefinite_lengths_duplicate_keys_or_deep_nesting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[dict[str, object]] = []
    loads = cbor2.loads

    def spy(data: bytes, **options: Any) -> object:
        calls.append(options)
        return loads(data, **options)

    monkeypatch.setattr(cbor2, "loads", spy)
    assert cbor.decode(cbor.encode({"a": [1]})) == {"a": [1]}
    assert calls == [
        {
            "semantic_decoders": cbor._NO_TAGS,
            "allow_indefinite": False,
            "allow_duplicate_keys": False,
            "max_depth": cbor.MAX_DEPTH,
        }
    ]


@settings(PROPERTY, max_examples=200)
@given(st.one_of(subset_values.map(reference_encode), mutated()), st.integers(1, 60))
def test_items_are_counted_before_cbor2_reads_a_message_that_may_hold_too_many(
    data: bytes, limit: int
) -> None:
    """With the item limit lowered, messages longer than it take the counting path: it is
    exact on valid messages, and the decoders still agree."""
    decoder = _Decoder(data)
    try:
        decoder.item(0)
        valid = decoder.pos == len(data)
    except CodecError:
        valid = False
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cbor, "MAX_ITEMS", limit)
        if valid:
            assert cbor._within_item_limit(data) == (decoder.items <= limit)
        assert_decoders_agree(data)
