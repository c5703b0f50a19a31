"""One refusal per check: each test is named after what it forbids."""

from __future__ import annotations

import secrets
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from vau_testlib import DAY, NOW, Clock, Flight, Peers, flip, make_peers, run_handshake

from healthid.protocol.vau import (
    ClientSession,
    Environment,
    KemMode,
    ServerConfig,
    ServerHandshake,
    ServerPrivateKeys,
    ServerSession,
    VauCounterError,
    VauDecryptionError,
    VauDirectionError,
    VauEnvironmentError,
    VauError,
    VauExpiredError,
    VauKeyConfirmationError,
    VauKeyIdError,
    VauLengthError,
    VauMalformedError,
    VauMessageTypeError,
    VauOversizedError,
    VauServerKeysError,
    VauSignatureError,
    VauStateError,
    VauTranscriptError,
    VauUnsupportedError,
    VauVersionError,
    cbor,
    client,
    es256_signer,
    es256_verifier,
    hybrid,
    server,
    sign_public_keys,
)
from healthid.protocol.vau.keys import SignedPublicVauKeys, parse_signed_public_keys
from healthid.protocol.vau.messages import (
    MAX_M1_SIZE,
    MAX_M3_SIZE,
    MAX_M4_SIZE,
    Message3,
    Message3Inner,
    Message4,
    parse_m2,
    parse_m3,
    parse_m4,
)
from healthid.protocol.vau.primitives import (
    aead_open,
    aead_seal,
    derive_handshake_keys,
    derive_session_keys,
    sha256,
)


@pytest.fixture
def peers() -> Peers:
    return make_peers()


@pytest.fixture
def flight(peers: Peers) -> Flight:
    return run_handshake(peers)


def first_request(peers: Peers, flight: Flight, body: bytes = b"GET / HTTP/1.1") -> bytes:
    _, message = client.encrypt_request(peers.client, flight.client_session, body)
    return message


def answered(peers: Peers, flight: Flight) -> tuple[ClientSession, ServerSession, bytes]:
    """The client's session after request 1, the server's after answering it, the response."""
    c, request = client.encrypt_request(peers.client, flight.client_session, b"req")
    s, received = server.decrypt_request(peers.server, flight.server_session, request)
    s, response = server.encrypt_response(peers.server, s, received.counter, b"resp")
    return c, s, response


# --- user-data messages: header checks (A_24628) -------------------------------------------


def test_server_refuses_wrong_version(peers: Peers, flight: Flight) -> None:
    for version in (0x00, 0x01, 0x03, 0xFF):
        message = bytes([version]) + first_request(peers, flight)[1:]
        with pytest.raises(VauVersionError):
            server.decrypt_request(peers.server, flight.server_session, message)


def test_client_refuses_wrong_version(peers: Peers, flight: Flight) -> None:
    c, _, response = answered(peers, flight)
    with pytest.raises(VauVersionError):
        client.decrypt_response(peers.client, c, b"\x01" + response[1:])


def test_server_refuses_wrong_pu_flag(peers: Peers, flight: Flight) -> None:
    message = first_request(peers, flight)
    with pytest.raises(VauEnvironmentError):
        server.decrypt_request(peers.server, flight.server_session, flip(message, 1))


def test_test_client_cannot_talk_to_a_production_server() -> None:
    peers = make_peers(server_environment=Environment.PRODUCTION)
    flight = run_handshake(peers)  # the handshake carries no PU flag
    with pytest.raises(VauEnvironmentError):
        server.decrypt_request(peers.server, flight.server_session, first_request(peers, flight))


def test_client_refuses_wrong_pu_flag(peers: Peers, flight: Flight) -> None:
    c, _, response = answered(peers, flight)
    with pytest.raises(VauEnvironmentError):
        client.decrypt_response(peers.client, c, flip(response, 1))


def test_server_refuses_a_response_byte(peers: Peers, flight: Flight) -> None:
    message = first_request(peers, flight)
    for byte in (0x00, 0x02, 0x03):
        with pytest.raises(VauDirectionError):
            tampered = message[:2] + bytes([byte]) + message[3:]
            server.decrypt_request(peers.server, flight.server_session, tampered)


def test_server_refuses_its_own_response_reflected(peers: Peers, flight: Flight) -> None:
    _, s, response = answered(peers, flight)
    with pytest.raises(VauDirectionError):
        server.decrypt_request(peers.server, s, response)


def test_client_refuses_its_own_request_reflected(peers: Peers, flight: Flight) -> None:
    c, request = client.encrypt_request(peers.client, flight.client_session, b"x")
    with pytest.raises(VauDirectionError):
        client.decrypt_response(peers.client, c, request)


def test_server_refuses_wrong_key_id(peers: Peers, flight: Flight) -> None:
    message = first_request(peers, flight)
    for index in (11, 42):
        with pytest.raises(VauKeyIdError):
            server.decrypt_request(peers.server, flight.server_session, flip(message, index))


def test_server_refuses_a_request_of_another_session(peers: Peers, flight: Flight) -> None:
    other = run_handshake(peers)
    with pytest.raises(VauKeyIdError):
        server.decrypt_request(peers.server, flight.server_session, first_request(peers, other))


def test_client_refuses_wrong_key_id(peers: Peers, flight: Flight) -> None:
    c, _, response = answered(peers, flight)
    with pytest.raises(VauKeyIdError):
        client.decrypt_response(peers.client, c, flip(response, 20))


def test_server_refuses_a_short_message(peers: Peers, flight: Flight) -> None:
    message = first_request(peers, flight, b"x")
    assert len(message) == 72
    with pytest.raises(VauLengthError):
        server.decrypt_request(peers.server, flight.server_session, message[:71])
    with pytest.raises(VauLengthError):
        server.decrypt_request(peers.server, flight.server_session, b"")


def test_server_refuses_an_oversized_message_before_reading_it() -> None:
    peers = make_peers(max_plaintext_size=64)
    flight = run_handshake(peers)
    with pytest.raises(VauOversizedError):
        server.decrypt_request(peers.server, flight.server_session, b"\x00" * (64 + 72))
    ok = first_request(peers, flight, b"x" * 64)
    server.decrypt_request(peers.server, flight.server_session, ok)


def test_client_refuses_an_oversized_response() -> None:
    peers = make_peers(max_plaintext_size=64)
    flight = run_handshake(peers)
    c, _ = client.encrypt_request(peers.client, flight.client_session, b"x")
    with pytest.raises(VauOversizedError):
        client.decrypt_response(peers.client, c, b"\x02" * 1000)


# --- user-data messages: counters ------------------------------------------------------------


def test_server_refuses_replayed_request(peers: Peers, flight: Flight) -> None:
    message = first_request(peers, flight)
    s, _ = server.decrypt_request(peers.server, flight.server_session, message)
    with pytest.raises(VauCounterError):
        server.decrypt_request(peers.server, s, message)


def test_server_refuses_reordered_requests(peers: Peers, flight: Flight) -> None:
    c, first = client.encrypt_request(peers.client, flight.client_session, b"1")
    _, second = client.encrypt_request(peers.client, c, b"2")
    s, received = server.decrypt_request(peers.server, flight.server_session, second)
    assert received.counter == 2
    with pytest.raises(VauCounterError):
        server.decrypt_request(peers.server, s, first)


def test_server_refuses_counter_zero(peers: Peers, flight: Flight) -> None:
    session = flight.server_session
    message = first_request(peers, flight)
    zero = message[:3] + bytes(8) + message[11:]
    with pytest.raises(VauCounterError):
        server.decrypt_request(peers.server, session, zero)


def test_forged_request_does_not_advance_the_counter(peers: Peers, flight: Flight) -> None:
    """A message whose tag fails must not burn its (higher) counter."""
    message = first_request(peers, flight)
    forged = message[:3] + (2**40).to_bytes(8, "big") + message[11:]
    with pytest.raises(VauDecryptionError):
        server.decrypt_request(peers.server, flight.server_session, forged)
    _, received = server.decrypt_request(peers.server, flight.server_session, message)
    assert received.counter == 1


def test_client_refuses_replayed_response(peers: Peers, flight: Flight) -> None:
    c, _, response = answered(peers, flight)
    c, _ = client.decrypt_response(peers.client, c, response)
    with pytest.raises(VauCounterError):
        client.decrypt_response(peers.client, c, response)


def test_client_refuses_response_to_another_request(peers: Peers, flight: Flight) -> None:
    c, _, response = answered(peers, flight)
    c, _ = client.decrypt_response(peers.client, c, response)
    c, _ = client.encrypt_request(peers.client, c, b"two")
    with pytest.raises(VauCounterError):
        client.decrypt_response(peers.client, c, response)  # answers request 1


def test_server_refuses_to_answer_a_request_twice_or_one_not_received(
    peers: Peers, flight: Flight
) -> None:
    with pytest.raises(VauCounterError):
        server.encrypt_response(peers.server, flight.server_session, 1, b"unasked")
    _, s, _ = answered(peers, flight)
    with pytest.raises(VauCounterError):
        server.encrypt_response(peers.server, s, 1, b"again")


def test_client_refuses_to_overflow_the_counter(peers: Peers, flight: Flight) -> None:
    session = replace(flight.client_session, last_request=2**64 - 1, last_response=2**64 - 1)
    with pytest.raises(VauCounterError):
        client.encrypt_request(peers.client, session, b"x")


# --- user-data messages: AES-GCM --------------------------------------------------------------


@pytest.mark.parametrize("index", [3, 10, 43, 50, 54, 55, -17, -1], ids=lambda i: f"byte{i}")
def test_server_refuses_tampered_ciphertext_tag_iv_or_aad(
    peers: Peers, flight: Flight, index: int
) -> None:
    message = first_request(peers, flight)
    with pytest.raises(VauDecryptionError):
        server.decrypt_request(peers.server, flight.server_session, flip(message, index, 0x80))


def test_client_refuses_tampered_response_tag(peers: Peers, flight: Flight) -> None:
    c, _, response = answered(peers, flight)
    with pytest.raises(VauDecryptionError):
        client.decrypt_response(peers.client, c, flip(response, -1))


def test_request_keys_do_not_decrypt_responses(peers: Peers, flight: Flight) -> None:
    """A request re-labelled as a response fails: the directions have separate keys."""
    c, request = client.encrypt_request(peers.client, flight.client_session, b"x")
    relabelled = request[:2] + b"\x02" + request[3:]
    with pytest.raises(VauDecryptionError):
        client.decrypt_response(peers.client, c, relabelled)


# --- expiry -----------------------------------------------------------------------------------


def test_server_refuses_an_expired_session(peers: Peers, flight: Flight) -> None:
    message = first_request(peers, flight)
    peers.clock.now = flight.server_session.expires_at
    with pytest.raises(VauExpiredError):
        server.decrypt_request(peers.server, flight.server_session, message)


def test_client_refuses_an_expired_session(peers: Peers, flight: Flight) -> None:
    peers.clock.now = flight.client_session.expires_at + 1
    with pytest.raises(VauExpiredError):
        client.encrypt_request(peers.client, flight.client_session, b"x")


def test_server_refuses_m3_after_the_handshake_expired(peers: Peers) -> None:
    m1, ch = client.start(peers.client)
    m2, sh = server.receive_m1(peers.server, m1)
    m3, _ = client.receive_m2(peers.client, ch, m2)
    peers.clock.now += peers.server.handshake_ttl
    with pytest.raises(VauExpiredError):
        server.receive_m3(peers.server, sh, m3)


# --- handshake: malformed, oversized, wrong message -------------------------------------------


def valid_m1(mode: KemMode = KemMode.MLKEM768) -> dict[str, cbor.CborValue]:
    m1, _ = client.start(make_peers(mode).client)
    return cbor.decode_map(m1, max_size=MAX_M1_SIZE)


def _with(field: str, value: cbor.CborValue) -> bytes:
    m = valid_m1()
    m[field] = value
    return cbor.encode(m)


def _ecdh(**changes: cbor.CborValue) -> bytes:
    m = valid_m1()
    point = m["ECDH_PK"]
    assert isinstance(point, dict)
    return _with("ECDH_PK", {**point, **changes})


def _without(field: str) -> bytes:
    m = valid_m1()
    del m[field]
    return cbor.encode(m)


MALFORMED_M1 = {
    "empty": b"",
    "break": b"\xff",
    "array": b"\x82\x01\x02",
    "text": b"\x62M1",
    "tag": b"\xc1\x1a\x00\x00\x00\x00",
    "float": b"\xa1\x61a\xfb\x3f\xf0\x00\x00\x00\x00\x00\x00",
    "undefined": b"\xa1\x61a\xf7",
    "truncated": cbor.encode(valid_m1())[:-1],
    "trailing byte": cbor.encode(valid_m1()) + b"\x00",
    "duplicate key": b"\xa2\x61a\x01\x61a\x02",
    "integer key": b"\xa1\x01\x02",
    "bad utf-8": b"\xa1\x61\xff\x01",
    "deep nesting": b"\xa1\x61a" * 10 + b"\x01",
    "huge length": b"\x5b\xff\xff\xff\xff\xff\xff\xff\xff",
    "reserved info": b"\x1c",
    "MessageType missing": _without("MessageType"),
    "MessageType not text": _with("MessageType", b"M1"),
    "ECDH_PK missing": _without("ECDH_PK"),
    "ECDH_PK not a map": _with("ECDH_PK", b"\x04" + bytes(64)),
    "crv P-384": _ecdh(crv="P-384"),
    "x 31 bytes": _ecdh(x=bytes(31)),
    "y 33 bytes": _ecdh(y=bytes(33)),
    "x as text": _ecdh(x="00" * 32),
    "point not on curve": _ecdh(y=bytes(31) + b"\x01"),
    "KEM key missing": _without("ML-KEM-768_PK"),
    "KEM key 1183 bytes": _with("ML-KEM-768_PK", bytes(1183)),
    "KEM key fails the modulus check": _with("ML-KEM-768_PK", b"\xff" * 1184),
    "KEM key under the Kyber768 name": cbor.encode(
        {k.replace("ML-KEM-768", "Kyber768"): v for k, v in valid_m1().items()}
    ),
}


@pytest.mark.parametrize("m1", MALFORMED_M1.values(), ids=MALFORMED_M1.keys())
def test_server_refuses_malformed_m1(peers: Peers, m1: bytes) -> None:
    with pytest.raises(VauMalformedError):
        server.receive_m1(peers.server, m1)


def test_server_tolerates_unknown_keys_in_m1(peers: Peers) -> None:
    """lib-vau sets FAIL_ON_UNKNOWN_PROPERTIES=false; so do we (but the size bound holds)."""
    m2, _ = server.receive_m1(peers.server, _with("Extra", "ignored"))
    assert m2


def test_server_refuses_m3_where_m1_is_expected(peers: Peers, flight: Flight) -> None:
    with pytest.raises(VauMessageTypeError):
        server.receive_m1(peers.server, flight.m3)
    with pytest.raises(VauMessageTypeError):
        server.receive_m1(peers.server, _with("MessageType", "M2"))


def test_server_refuses_m1_where_m3_is_expected(peers: Peers, flight: Flight) -> None:
    with pytest.raises(VauMessageTypeError):
        server.receive_m3(peers.server, flight.server_handshake, flight.m1)


def test_server_refuses_oversized_m1_before_decoding(peers: Peers) -> None:
    # garbage that would be malformed if it were decoded: the size check comes first
    with pytest.raises(VauOversizedError):
        server.receive_m1(peers.server, b"\xff" * (MAX_M1_SIZE + 1))


def test_server_refuses_oversized_m3(peers: Peers, flight: Flight) -> None:
    with pytest.raises(VauOversizedError):
        server.receive_m3(peers.server, flight.server_handshake, b"\xff" * (MAX_M3_SIZE + 1))


def test_client_refuses_oversized_m2(peers: Peers, flight: Flight) -> None:
    with pytest.raises(VauOversizedError):
        client.receive_m2(peers.client, flight.client_handshake, b"\xff" * 200_000)


def test_client_refuses_oversized_m4(peers: Peers, flight: Flight) -> None:
    with pytest.raises(VauOversizedError):
        client.receive_m4(peers.client, flight.client_confirmation, b"\xff" * (MAX_M4_SIZE + 1))


def test_client_refuses_malformed_m2(peers: Peers, flight: Flight) -> None:
    for bad in (b"", b"\xa0", flight.m2[:-5], flight.m1):
        with pytest.raises((VauMalformedError, VauMessageTypeError)):
            client.receive_m2(peers.client, flight.client_handshake, bad)


def test_client_refuses_m2_of_the_other_kem_mode(flight: Flight) -> None:
    kyber = make_peers(KemMode.KYBER768)
    m1, ch = client.start(kyber.client)
    m2, _ = server.receive_m1(kyber.server, m1)
    mlkem_state = replace(ch, mode=KemMode.MLKEM768)
    with pytest.raises(VauStateError):
        client.receive_m2(kyber.client, mlkem_state, m2)
    mlkem = make_peers(KemMode.MLKEM768)
    with pytest.raises(VauMalformedError, match="ML-KEM-768_ct"):
        client.receive_m2(mlkem.client, replace(ch, mode=KemMode.MLKEM768), m2)


# --- handshake: AEAD, transcript, key confirmation ------------------------------------------


def test_client_refuses_tampered_m2_aead_ct(peers: Peers, flight: Flight) -> None:
    m2 = parse_m2(flight.m2, KemMode.MLKEM768)
    tampered = replace(m2, aead_ct=flip(m2.aead_ct, -3)).encode(KemMode.MLKEM768)
    with pytest.raises(VauDecryptionError):
        client.receive_m2(peers.client, flight.client_handshake, tampered)


def test_client_refuses_tampered_m2_kem_ciphertext(peers: Peers, flight: Flight) -> None:
    """ML-KEM's implicit rejection gives another ss_e, so K1 cannot open AEAD_ct."""
    m2 = parse_m2(flight.m2, KemMode.MLKEM768)
    ct = replace(m2.ct, kem_ct=flip(m2.ct.kem_ct, 100))
    with pytest.raises(VauDecryptionError):
        client.receive_m2(
            peers.client, flight.client_handshake, replace(m2, ct=ct).encode(KemMode.MLKEM768)
        )


def test_server_refuses_tampered_m3_aead_ct(peers: Peers, flight: Flight) -> None:
    m3 = parse_m3(flight.m3)
    tampered = replace(m3, aead_ct=flip(m3.aead_ct, 30)).encode()
    with pytest.raises(VauDecryptionError):
        server.receive_m3(peers.server, flight.server_handshake, tampered)


def test_server_refuses_tampered_key_confirmation(peers: Peers, flight: Flight) -> None:
    m3 = parse_m3(flight.m3)
    for index in (0, 20, -1):
        tampered = replace(m3, key_confirmation=flip(m3.key_confirmation, index)).encode()
        with pytest.raises(VauKeyConfirmationError):
            server.receive_m3(peers.server, flight.server_handshake, tampered)


def test_client_refuses_tampered_m4_key_confirmation(peers: Peers, flight: Flight) -> None:
    m4 = parse_m4(flight.m4)
    tampered = Message4(key_confirmation=flip(m4.key_confirmation, 40)).encode()
    with pytest.raises(VauKeyConfirmationError):
        client.receive_m4(peers.client, flight.client_confirmation, tampered)


def test_server_refuses_a_tampered_transcript(peers: Peers, flight: Flight) -> None:
    """The server checks SHA-256(M1 ‖ M2 ‖ AEAD_ct) of its own transcript: an M1 the client
    did not send (here: one changed byte of the stored transcript) fails the check."""
    handshake = replace(
        flight.server_handshake, transcript=flip(flight.server_handshake.transcript, 40)
    )
    with pytest.raises(VauTranscriptError):
        server.receive_m3(peers.server, handshake, flight.m3)


def test_client_refuses_m4_over_another_transcript(peers: Peers) -> None:
    """M3 re-encoded on its way (same content, other bytes): the server's M4 confirms
    SHA-256(M1 ‖ M2 ‖ M3 as received), which the client refuses."""
    m1, ch = client.start(peers.client)
    m2, sh = server.receive_m1(peers.server, m1)
    m3, ck = client.receive_m2(peers.client, ch, m2)
    m4, _ = server.receive_m3(peers.server, sh, b"\xbf" + m3[1:] + b"\xff")
    with pytest.raises(VauTranscriptError):
        client.receive_m4(peers.client, ck, m4)


def test_client_refuses_m4_of_another_handshake(peers: Peers, flight: Flight) -> None:
    other = run_handshake(peers)
    with pytest.raises(VauKeyConfirmationError):
        client.receive_m4(peers.client, flight.client_confirmation, other.m4)


def crafted_m3(peers: Peers, handshake: object, m2: bytes, inner: Message3Inner | None) -> bytes:
    """M3 built by hand as the client would, with our own inner layer."""
    from healthid.protocol.vau.state import ClientHandshake

    assert isinstance(handshake, ClientHandshake)
    mode = peers.client.mode
    message = parse_m2(m2, mode)
    ss_e = hybrid.decapsulate(mode, handshake.ecdh_sk, handshake.kem_sk, message.ct)
    k1 = derive_handshake_keys(ss_e)
    keys = parse_signed_public_keys(aead_open(k1.s2c, message.aead_ct)).public_keys(mode)
    ss_s, ct = hybrid.encapsulate(mode, keys.ecdh_pk, keys.kem_pk, secrets.token_bytes)
    layer = replace(inner, ct=ct) if inner else Message3Inner(ct=ct)
    aead_ct = aead_seal(k1.c2s, layer.encode(mode), secrets.token_bytes)
    k2 = derive_session_keys(ss_e, ss_s)
    confirmation = aead_seal(
        k2.c2s_key_confirmation, sha256(handshake.m1, m2, aead_ct), secrets.token_bytes
    )
    return Message3(aead_ct=aead_ct, key_confirmation=confirmation).encode()


def test_server_accepts_a_hand_built_m3(peers: Peers) -> None:
    m1, ch = client.start(peers.client)
    m2, sh = server.receive_m1(peers.server, m1)
    server.receive_m3(peers.server, sh, crafted_m3(peers, ch, m2, None))


@pytest.mark.parametrize("flags", [(True, False), (False, True)], ids=["ERP", "ESO"])
def test_server_refuses_erp_and_eso(peers: Peers, flags: tuple[bool, bool]) -> None:
    m1, ch = client.start(peers.client)
    m2, sh = server.receive_m1(peers.server, m1)
    placeholder = parse_m2(m2, peers.client.mode).ct
    inner = Message3Inner(ct=placeholder, erp=flags[0], eso=flags[1])
    with pytest.raises(VauUnsupportedError):
        server.receive_m3(peers.server, sh, crafted_m3(peers, ch, m2, inner))


def test_server_refuses_a_handshake_state_of_rotated_keys(peers: Peers, flight: Flight) -> None:
    rotated = make_peers(clock=peers.clock).server
    with pytest.raises(VauStateError):
        server.receive_m3(rotated, flight.server_handshake, flight.m3)


def test_server_refuses_a_handshake_state_of_the_other_mode(peers: Peers, flight: Flight) -> None:
    handshake = replace(flight.server_handshake, mode=KemMode.KYBER768)
    with pytest.raises(VauStateError):
        server.receive_m3(peers.server, handshake, flight.m3)


# --- server keys: signature, validity, configuration ------------------------------------------


def test_client_refuses_wrong_signature_on_the_server_keys(peers: Peers) -> None:
    stranger = ec.generate_private_key(ec.SECP256R1())
    peers.client = replace(peers.client, verifier=es256_verifier(stranger.public_key()))
    m1, ch = client.start(peers.client)
    m2, _ = server.receive_m1(peers.server, m1)
    with pytest.raises(VauSignatureError):
        client.receive_m2(peers.client, ch, m2)


def test_client_refuses_server_keys_changed_after_signing(peers: Peers) -> None:
    signed = parse_signed_public_keys(peers.server.signed_public_keys)
    public = signed.public_keys(KemMode.MLKEM768)
    altered = replace(
        signed, signed_pub_keys=replace(public, comment="other").encode(KemMode.MLKEM768)
    )
    peers.server = replace_server(peers, altered.encode())
    m1, ch = client.start(peers.client)
    m2, _ = server.receive_m1(peers.server, m1)
    with pytest.raises(VauSignatureError):
        client.receive_m2(peers.client, ch, m2)


def test_es256_verifier_refuses_der_and_empty_signatures(peers: Peers) -> None:
    signed = parse_signed_public_keys(peers.server.signed_public_keys)
    verify = es256_verifier(peers.identity.public_key())
    assert verify(signed)
    assert not verify(replace(signed, signature=b""))
    assert not verify(replace(signed, signature=b"\x30" + signed.signature))
    assert not verify(replace(signed, signature=flip(signed.signature, 5)))


def replace_server(peers: Peers, blob: bytes) -> ServerConfig:
    return ServerConfig(
        signed_public_keys=blob,
        private_keys=peers.server.private_keys,
        environment=peers.server.environment,
        clock=peers.clock,
        rng=secrets.token_bytes,
        mode=peers.server.mode,
    )


def signed_blob(peers: Peers, *, iat: int, exp: int, mode: KemMode = KemMode.MLKEM768) -> bytes:
    keys = peers.server.private_keys.public_keys(iat=iat, exp=exp)
    return sign_public_keys(keys, mode, es256_signer(peers.identity))


def test_client_refuses_expired_server_keys(peers: Peers) -> None:
    m1, ch = client.start(peers.client)
    m2, _ = server.receive_m1(peers.server, m1)
    late = replace(peers.client, clock=Clock(NOW + 7 * DAY))
    early_handshake = replace(ch, expires_at=NOW + 8 * DAY)
    with pytest.raises(VauServerKeysError, match="expired"):
        client.receive_m2(late, early_handshake, m2)


def test_client_refuses_server_keys_from_the_future(peers: Peers) -> None:
    peers.server = replace_server(peers, signed_blob(peers, iat=NOW + 3600, exp=NOW + DAY))
    m1, ch = client.start(peers.client)
    m2, _ = server.receive_m1(replace(peers.server, clock=Clock(NOW + 3600)), m1)
    with pytest.raises(VauServerKeysError, match="future"):
        client.receive_m2(peers.client, ch, m2)


def test_server_refuses_to_handshake_with_expired_keys(peers: Peers) -> None:
    m1, _ = client.start(peers.client)
    peers.clock.now = NOW + 7 * DAY
    with pytest.raises(VauServerKeysError, match="expired"):
        server.receive_m1(peers.server, m1)


def test_server_config_refuses_keys_valid_for_more_than_30_days(peers: Peers) -> None:
    with pytest.raises(VauServerKeysError, match="30 days"):
        replace_server(peers, signed_blob(peers, iat=NOW, exp=NOW + 30 * DAY + 1))
    replace_server(peers, signed_blob(peers, iat=NOW, exp=NOW + 30 * DAY))


def test_server_config_refuses_keys_that_are_not_its_own(peers: Peers) -> None:
    other = ServerPrivateKeys.generate(secrets.token_bytes)
    with pytest.raises(VauServerKeysError, match="ECDH"):
        ServerConfig(
            signed_public_keys=peers.server.signed_public_keys,
            private_keys=other,
            environment=Environment.TEST,
            clock=peers.clock,
            rng=secrets.token_bytes,
        )
    mixed = ServerPrivateKeys(ecdh=peers.server.private_keys.ecdh, kem=other.kem)
    with pytest.raises(VauServerKeysError, match="KEM"):
        ServerConfig(
            signed_public_keys=peers.server.signed_public_keys,
            private_keys=mixed,
            environment=Environment.TEST,
            clock=peers.clock,
            rng=secrets.token_bytes,
        )


def test_server_config_refuses_keys_signed_for_the_other_mode(peers: Peers) -> None:
    blob = signed_blob(peers, iat=NOW, exp=NOW + DAY, mode=KemMode.KYBER768)
    with pytest.raises(VauServerKeysError):
        replace_server(peers, blob)


def test_server_config_refuses_a_malformed_blob(peers: Peers) -> None:
    for blob in (
        b"",
        b"\xa0",
        SignedPublicVauKeys(signed_pub_keys=b"\xa0", signature=b"").encode(),
    ):
        with pytest.raises(VauServerKeysError):
            replace_server(peers, blob)


def test_configs_refuse_nonsense_limits(peers: Peers) -> None:
    for bad in ({"handshake_ttl": 0}, {"session_ttl": 10}, {"max_plaintext_size": 0}):
        with pytest.raises(ValueError):
            replace(peers.server, **bad)
        with pytest.raises(ValueError):
            replace(peers.client, **bad)


# --- state blobs --------------------------------------------------------------------------------


def test_state_blobs_refuse_corruption_and_the_wrong_kind(flight: Flight) -> None:
    blob = flight.server_session.to_bytes()
    for bad in (b"", b"\x00", blob[:-1], blob + b"\x00", flight.server_handshake.to_bytes()):
        with pytest.raises(VauStateError):
            ServerSession.from_bytes(bad)
    with pytest.raises(VauStateError):
        ServerHandshake.from_bytes(blob)
    m = cbor.decode_map(blob, max_size=4096)
    for key, value in (("v", 2), ("mode", "kyber1024"), ("key_id", bytes(31)), ("req", -1)):
        with pytest.raises(VauStateError):
            ServerSession.from_bytes(cbor.encode({**m, key: value}))


def test_every_refusal_is_a_vau_error() -> None:
    for error in VauError.__subclasses__():
        assert issubclass(error, ValueError)
        assert error.error_code in range(1, 14)
        assert error.status_code in (400, 403, 500)
