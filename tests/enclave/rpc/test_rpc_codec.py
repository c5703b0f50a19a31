"""The wire codec: the deterministic CBOR subset, frames and envelopes."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rpc_testlib import same

from healthid.enclave.rpc import cbor
from healthid.enclave.rpc.codec import (
    MAX_FRAME,
    decode_frame,
    encode_error,
    encode_ok,
    encode_request,
    frame,
    parse_request,
    parse_response,
)
from healthid.enclave.rpc.errors import CodecError, FrameTooLarge

VECTORS = json.loads((Path(__file__).parent / "vectors" / "cbor_deterministic.json").read_text())


def vector_value(vector: dict[str, Any]) -> object:
    return bytes.fromhex(vector["bytes"]) if "bytes" in vector else vector["value"]


# -- known answers ------------------------------------------------------------------------------
@pytest.mark.parametrize("vector", VECTORS["accepted"], ids=lambda v: v["hex"][:24])
def test_rfc8949_examples_encode_and_decode_deterministically(vector: dict[str, Any]) -> None:
    value = vector_value(vector)
    assert cbor.encode(value).hex() == vector["hex"]
    assert same(cbor.decode(bytes.fromhex(vector["hex"])), value)


@pytest.mark.parametrize("vector", VECTORS["rejected"], ids=lambda v: v["why"])
def test_decoder_rejects_everything_outside_the_deterministic_subset(
    vector: dict[str, Any],
) -> None:
    with pytest.raises(CodecError):
        cbor.decode(bytes.fromhex(vector["hex"]))


@pytest.mark.parametrize(
    "value",
    [math.nan, math.inf, {1, 2}, object(), 1 << 64, -(1 << 64) - 1, {1: "x"}, "\ud800"],
    ids=["nan", "inf", "set", "object", "too-big", "too-small", "int-key", "surrogate"],
)
def test_encoder_refuses_values_outside_the_subset(value: object) -> None:
    with pytest.raises(CodecError):
        cbor.encode(value)


def test_nesting_is_bounded_both_ways() -> None:
    deep: object = []
    for _ in range(cbor.MAX_DEPTH + 1):
        deep = [deep]
    with pytest.raises(CodecError, match="nested deeper"):
        cbor.encode(deep)
    with pytest.raises(CodecError, match="nested deeper"):
        cbor.decode(b"\x81" * (cbor.MAX_DEPTH + 1) + b"\x80")


def test_item_count_is_bounded() -> None:
    many = b"\x9a" + struct.pack(">I", cbor.MAX_ITEMS) + b"\x00" * cbor.MAX_ITEMS
    with pytest.raises(CodecError, match="data items"):
        cbor.decode(many)


def test_map_keys_are_sorted_bytewise_on_encoding() -> None:
    assert cbor.encode({"method": 1, "id": 2, "args": 3}) == cbor.encode(
        {"args": 3, "id": 2, "method": 1}
    )
    assert list(cbor.decode(cbor.encode({"method": 1, "id": 2, "args": 3}))) == [  # type: ignore[call-overload]
        "id",
        "args",
        "method",
    ]


# -- property tests ---------------------------------------------------------------------------
values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 64), max_value=(1 << 64) - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
    | st.binary(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


@given(values)
def test_every_value_of_the_subset_round_trips(value: object) -> None:
    encoded = cbor.encode(value)
    assert same(cbor.decode(encoded), value)
    assert cbor.encode(cbor.decode(encoded)) == encoded


@settings(max_examples=2000)
@given(st.binary(max_size=64))
def test_random_bytes_raise_only_codec_errors_and_accepted_ones_are_canonical(
    data: bytes,
) -> None:
    try:
        value = cbor.decode(data)
    except CodecError:
        return
    assert cbor.encode(value) == data  # one encoding per message


@settings(max_examples=1000)
@given(values, st.binary(max_size=8), st.integers(min_value=0, max_value=40))
def test_mutated_messages_raise_only_codec_errors(value: object, junk: bytes, at: int) -> None:
    encoded = cbor.encode(value)
    mutated = encoded[:at] + junk + encoded[at + len(junk) :]
    try:
        cbor.decode(mutated)
    except CodecError:
        pass


@settings(max_examples=1000)
@given(st.binary(max_size=80))
def test_random_frames_raise_only_codec_errors(data: bytes) -> None:
    try:
        decode_frame(data)
    except CodecError:
        pass


@given(st.binary(max_size=40))
def test_well_framed_random_payloads_raise_only_codec_errors(payload: bytes) -> None:
    try:
        parse_request(decode_frame(frame(payload)))
    except CodecError:
        pass
    try:
        parse_response(decode_frame(frame(payload)))
    except CodecError:
        pass


# -- frames and envelopes ---------------------------------------------------------------------
def test_frame_is_a_big_endian_length_and_the_cbor_payload() -> None:
    data = encode_request(7, "status", {})
    assert data[:4] == struct.pack(">I", len(data) - 4)
    assert cbor.decode(data[4:]) == {"id": 7, "method": "status", "args": {}}
    assert parse_request(decode_frame(data)).method == "status"


def test_frame_over_the_hard_limit_is_too_large_before_reading_it() -> None:
    header = struct.pack(">I", MAX_FRAME + 1)
    with pytest.raises(FrameTooLarge, match="exceeds the limit"):
        decode_frame(header)


def test_frame_whose_length_disagrees_with_its_payload_is_refused() -> None:
    with pytest.raises(CodecError):
        decode_frame(struct.pack(">I", 5) + b"\xf6")


@pytest.mark.parametrize(
    "message",
    [
        [],
        {"id": 1, "method": "status"},
        {"id": 1, "method": "status", "args": {}, "extra": 1},
        {"id": -1, "method": "status", "args": {}},
        {"id": True, "method": "status", "args": {}},
        {"id": 1 << 63, "method": "status", "args": {}},
        {"id": 1, "method": "", "args": {}},
        {"id": 1, "method": "x" * 65, "args": {}},
        {"id": 1, "method": b"status", "args": {}},
        {"id": 1, "method": "status", "args": []},
    ],
)
def test_malformed_requests_are_codec_errors(message: object) -> None:
    with pytest.raises(CodecError):
        parse_request(message)


def test_responses_carry_a_result_or_an_error() -> None:
    ok = parse_response(decode_frame(encode_ok(3, {"a": b"\x00"})))
    assert (ok.id, ok.ok, ok.result) == (3, True, {"a": b"\x00"})
    err = parse_response(decode_frame(encode_error(None, "bad_request", "m" * 5000)))
    assert (err.id, err.ok, err.code, len(err.message)) == (None, False, "bad_request", 1000)
    with pytest.raises(CodecError):
        parse_response({"id": None, "ok": 1})
    with pytest.raises(CodecError):
        parse_response({"id": 1, "error": {"code": "x"}})
