"""The bounded CBOR subset and the parsers: unit tests and hypothesis properties (any input
raises nothing but a :class:`VauError`)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vau_testlib import make_peers, run_handshake

from healthid.protocol.vau import (
    ClientSession,
    KemMode,
    ServerHandshake,
    ServerSession,
    VauError,
    VauMalformedError,
    VauOversizedError,
    cbor,
    client,
    parse_signed_public_keys,
    server,
)
from healthid.protocol.vau.channel import (
    Direction,
    Environment,
    VauHeader,
    check_header,
    split_message,
)
from healthid.protocol.vau.messages import parse_m1, parse_m2, parse_m3, parse_m4

PEERS = make_peers()
FLIGHT = run_handshake(PEERS)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_cbor_decodes_the_accepted_subset() -> None:
    value = {
        "MessageType": "M1",
        "n": [0, 23, 24, 255, 256, 65535, 65536, 2**32, 2**64 - 1, -1, -(2**64)],
        "b": b"\x00\xff",
        "t": "Grüße",
        "m": {"crv": "P-256", "ok": True, "no": False, "none": None},
    }
    assert cbor.decode(cbor.encode(value), max_size=1024) == value


def test_cbor_accepts_indefinite_lengths() -> None:
    # {_ "a": [_ 1, 2], "b": (_ h'01', h'02'), "c": (_ "x", "y")}
    data = bytes.fromhex("bf6161 9f0102ff 6162 5f41014102ff 6163 7f61786179ff ff".replace(" ", ""))
    assert cbor.decode(data, max_size=64) == {"a": [1, 2], "b": b"\x01\x02", "c": "xy"}


@pytest.mark.parametrize(
    "data",
    [
        bytes.fromhex("5f4101 6178 ff"),  # text chunk inside a byte string
        bytes.fromhex("5f5f4101ffff"),  # nested indefinite chunk
        bytes.fromhex("bf616101"),  # indefinite map without break
        bytes.fromhex("a1616101ff"),  # break after a definite map
        bytes.fromhex("f97c00"),  # half-precision float
        bytes.fromhex("f8ff"),  # simple value 255
        bytes.fromhex("c249010000000000000000"),  # bignum tag
        bytes.fromhex("d81c81d81d00"),  # shared-reference tags (a cycle in cbor2)
        bytes.fromhex("98ff") + b"\x00" * 255,  # 255 array entries > MAX_ITEMS
    ],
)
def test_cbor_refuses_outside_the_subset(data: bytes) -> None:
    with pytest.raises(VauMalformedError):
        cbor.decode(data, max_size=4096)


def test_cbor_checks_the_size_before_decoding() -> None:
    with pytest.raises(VauOversizedError):
        cbor.decode(b"\x00" * 11, max_size=10)


def test_indefinite_map_with_too_many_entries_is_refused() -> None:
    entries = b"".join(cbor.encode(f"k{i}") + b"\x00" for i in range(cbor.MAX_ITEMS + 1))
    with pytest.raises(VauMalformedError):
        cbor.decode(b"\xbf" + entries + b"\xff", max_size=4096)


cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.binary(max_size=64)
    | st.text(max_size=32),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=20,
)


@SETTINGS
@given(value=cbor_values)
def test_cbor_round_trips(value: cbor.CborValue) -> None:
    try:
        decoded = cbor.decode(cbor.encode(value), max_size=1 << 20)
    except VauMalformedError:
        return  # nesting deeper than MAX_DEPTH
    assert decoded == value


@SETTINGS
@given(data=st.binary(max_size=256))
def test_cbor_decoder_raises_only_vau_errors(data: bytes) -> None:
    try:
        cbor.decode(data, max_size=1024)
    except VauError:
        pass


@SETTINGS
@given(data=st.binary(min_size=0, max_size=160))
def test_header_parser_raises_only_vau_errors(data: bytes) -> None:
    try:
        split = split_message(data, max_plaintext_size=64)
    except VauError:
        return
    assert isinstance(split.header, VauHeader)
    assert split.aad + split.iv + split.ciphertext == data
    try:
        check_header(
            split.header,
            environment=Environment.TEST,
            direction=Direction.REQUEST,
            key_id=bytes(32),
        )
    except VauError:
        pass


@SETTINGS
@given(data=st.binary(max_size=200))
def test_server_request_path_raises_only_vau_errors(data: bytes) -> None:
    with pytest.raises(VauError):
        server.decrypt_request(PEERS.server, FLIGHT.server_session, data)


@SETTINGS
@given(data=st.binary(max_size=200))
def test_client_response_path_raises_only_vau_errors(data: bytes) -> None:
    session = ClientSession(
        mode=KemMode.MLKEM768,
        key_id=FLIGHT.client_session.key_id,
        k2_c2s_app_data=FLIGHT.client_session.k2_c2s_app_data,
        k2_s2c_app_data=FLIGHT.client_session.k2_s2c_app_data,
        last_request=1,
        expires_at=FLIGHT.client_session.expires_at,
    )
    with pytest.raises(VauError):
        client.decrypt_response(PEERS.client, session, data)


@SETTINGS
@given(data=st.binary(max_size=300))
def test_message_parsers_raise_only_vau_errors(data: bytes) -> None:
    for parse in (
        lambda d: parse_m1(d, KemMode.MLKEM768),
        lambda d: parse_m2(d, KemMode.KYBER768),
        parse_m3,
        parse_m4,
        parse_signed_public_keys,
        ServerSession.from_bytes,
        ServerHandshake.from_bytes,
    ):
        try:
            parse(data)
        except VauError:
            pass


@SETTINGS
@given(index=st.integers(min_value=0), mask=st.integers(min_value=1, max_value=255))
def test_bit_flips_in_m1_raise_only_vau_errors(index: int, mask: int) -> None:
    data = bytearray(FLIGHT.m1)
    data[index % len(data)] ^= mask
    try:
        server.receive_m1(PEERS.server, bytes(data))
    except VauError:
        pass


@SETTINGS
@given(index=st.integers(min_value=0), mask=st.integers(min_value=1, max_value=255))
def test_bit_flips_in_a_request_are_refused(index: int, mask: int) -> None:
    _, request = client.encrypt_request(PEERS.client, FLIGHT.client_session, b"GET / HTTP/1.1")
    data = bytearray(request)
    data[index % len(data)] ^= mask
    with pytest.raises(VauError):
        server.decrypt_request(PEERS.server, FLIGHT.server_session, bytes(data))


@SETTINGS
@given(index=st.integers(min_value=0), mask=st.integers(min_value=1, max_value=255))
def test_bit_flips_in_m3_are_refused(index: int, mask: int) -> None:
    data = bytearray(FLIGHT.m3)
    data[index % len(data)] ^= mask
    with pytest.raises(VauError):
        server.receive_m3(PEERS.server, FLIGHT.server_handshake, bytes(data))
