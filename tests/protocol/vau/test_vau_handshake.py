"""Full client ↔ server handshakes in both KEM modes, then user-data round trips; the states
survive serialisation at every step (a stateless server parks them between messages)."""

from __future__ import annotations

import secrets
from dataclasses import replace

import pytest
from vau_testlib import DAY, make_peers, run_handshake

from healthid.protocol.vau import (
    ClientHandshake,
    ClientKeyConfirmation,
    ClientSession,
    Environment,
    KemMode,
    ServerConfig,
    ServerHandshake,
    ServerSession,
    SignedPublicVauKeys,
    VauCounterError,
    cbor,
    client,
    error_body,
    es256_signer,
    es256_verifier,
    server,
    sign_public_keys,
)
from healthid.protocol.vau.errors import VauTranscriptError
from healthid.protocol.vau.messages import parse_m2

MODES = pytest.mark.parametrize("mode", list(KemMode))


@MODES
def test_handshake_agrees_on_key_id_and_app_keys(mode: KemMode) -> None:
    flight = run_handshake(make_peers(mode))
    c, s = flight.client_session, flight.server_session
    assert c.key_id == s.key_id and len(c.key_id) == 32
    assert c.k2_c2s_app_data == s.k2_c2s_app_data
    assert c.k2_s2c_app_data == s.k2_s2c_app_data
    assert c.k2_c2s_app_data != c.k2_s2c_app_data
    assert mode.public_key_field.encode() in flight.m1
    assert mode.ciphertext_field.encode() in flight.m2


@MODES
def test_requests_and_responses_round_trip(mode: KemMode) -> None:
    peers = make_peers(mode)
    flight = run_handshake(peers)
    c, s = flight.client_session, flight.server_session
    for n in range(1, 6):
        body = f"GET /wallet/{n} HTTP/1.1\r\nHost: vau\r\n\r\n".encode()
        c, request = client.encrypt_request(peers.client, c, body)
        assert request[:3] == b"\x02\x00\x01"
        assert request[3:11] == n.to_bytes(8, "big") and request[11:43] == s.key_id
        s, received = server.decrypt_request(peers.server, s, request)
        assert (received.counter, received.plaintext) == (n, body)
        s, response = server.encrypt_response(peers.server, s, n, b"HTTP/1.1 200 OK\r\n\r\n" * n)
        assert response[:11] == b"\x02\x00\x02" + n.to_bytes(8, "big")
        c, plaintext = client.decrypt_response(peers.client, c, response)
        assert plaintext == b"HTTP/1.1 200 OK\r\n\r\n" * n
    assert (c.last_request, c.last_response, s.last_request, s.last_response) == (5, 5, 5, 5)


@MODES
def test_every_state_survives_serialisation(mode: KemMode) -> None:
    peers = make_peers(mode)
    m1, ch = client.start(peers.client)
    ch = ClientHandshake.from_bytes(ch.to_bytes())
    m2, sh = server.receive_m1(peers.server, m1)
    sh = ServerHandshake.from_bytes(sh.to_bytes())
    m3, ck = client.receive_m2(peers.client, ch, m2)
    ck = ClientKeyConfirmation.from_bytes(ck.to_bytes())
    m4, ss = server.receive_m3(peers.server, sh, m3)
    ss = ServerSession.from_bytes(ss.to_bytes())
    cs = ClientSession.from_bytes(client.receive_m4(peers.client, ck, m4).to_bytes())
    cs, request = client.encrypt_request(peers.client, cs, b"ping")
    ss, received = server.decrypt_request(peers.server, ss, request)
    ss = ServerSession.from_bytes(ss.to_bytes())
    assert ss.last_request == 1
    ss, response = server.encrypt_response(peers.server, ss, received.counter, b"pong")
    _, plaintext = client.decrypt_response(
        peers.client, ClientSession.from_bytes(cs.to_bytes()), response
    )
    assert plaintext == b"pong"


def test_state_repr_hides_secrets() -> None:
    flight = run_handshake(make_peers())
    for state in (flight.server_session, flight.client_session, flight.server_handshake):
        text = repr(state)
        assert flight.server_session.k2_c2s_app_data.hex() not in text
        assert repr(flight.server_session.k2_c2s_app_data) not in text
    assert repr(flight.server_handshake.ss_e) not in repr(flight.server_handshake)


def test_production_peers_mark_their_messages_pu() -> None:
    peers = make_peers(
        server_environment=Environment.PRODUCTION, client_environment=Environment.PRODUCTION
    )
    flight = run_handshake(peers)
    _, request = client.encrypt_request(peers.client, flight.client_session, b"x")
    assert request[1] == 0x01
    _, received = server.decrypt_request(peers.server, flight.server_session, request)
    assert received.plaintext == b"x"


def test_server_tolerates_a_lost_request() -> None:
    """Counters must rise, not rise by one: a request lost on the way does not end the
    session (the client abandons it and sends the next)."""
    peers = make_peers()
    flight = run_handshake(peers)
    c, _lost = client.encrypt_request(peers.client, flight.client_session, b"lost")
    c, request = client.encrypt_request(peers.client, c, b"next")
    s, received = server.decrypt_request(peers.server, flight.server_session, request)
    assert received.counter == 2
    s, response = server.encrypt_response(peers.server, s, 2, b"ok")
    _, plaintext = client.decrypt_response(peers.client, c, response)
    assert plaintext == b"ok"


def test_client_abandons_an_unanswered_request() -> None:
    peers = make_peers()
    flight = run_handshake(peers)
    c, first = client.encrypt_request(peers.client, flight.client_session, b"first")
    s, _ = server.decrypt_request(peers.server, flight.server_session, first)
    s, late = server.encrypt_response(peers.server, s, 1, b"late")
    c, _second = client.encrypt_request(peers.client, c, b"second")
    with pytest.raises(VauCounterError):
        client.decrypt_response(peers.client, c, late)


def test_client_accepts_an_indefinite_length_m4() -> None:
    """Jackson (lib-vau) writes ``0xBF … 0xFF`` maps; M4 is in no transcript, so a
    re-encoding is harmless and must be accepted."""
    peers = make_peers()
    m1, ch = client.start(peers.client)
    m2, sh = server.receive_m1(peers.server, m1)
    m3, ck = client.receive_m2(peers.client, ch, m2)
    m4, _ = server.receive_m3(peers.server, sh, m3)
    assert m4[0] == 0xA2
    session = client.receive_m4(peers.client, ck, b"\xbf" + m4[1:] + b"\xff")
    assert len(session.key_id) == 32


def test_m2_from_an_indefinite_length_encoder_changes_the_transcript() -> None:
    """Transcripts hash the received bytes: if M2 is re-encoded (same content) between the
    server and the client, the server refuses M3."""
    peers = make_peers()
    m1, ch = client.start(peers.client)
    m2, sh = server.receive_m1(peers.server, m1)
    reencoded = b"\xbf" + m2[1:] + b"\xff"
    assert parse_m2(reencoded, KemMode.MLKEM768) == parse_m2(m2, KemMode.MLKEM768)
    m3, _ = client.receive_m2(peers.client, ch, reencoded)
    with pytest.raises(VauTranscriptError):
        server.receive_m3(peers.server, sh, m3)


def test_signed_keys_extensions_reach_the_verifier() -> None:
    """Extra keys in SignedPublicVauKeys (e.g. an attestation) are tolerated and handed to
    the verifier untouched."""
    peers = make_peers()
    keys = peers.server.private_keys
    attestation = {"tee": "simulated", "quote": b"\x00" * 16}
    blob = sign_public_keys(
        keys.public_keys(iat=peers.clock() - 1, exp=peers.clock() + DAY),
        KemMode.MLKEM768,
        es256_signer(peers.identity),
        extensions={"attestation": attestation},
    )
    seen: list[dict[str, object]] = []
    check = es256_verifier(peers.identity.public_key())

    def verifier(signed: SignedPublicVauKeys) -> bool:
        seen.append(dict(signed.extensions))
        return check(signed)

    peers.server = ServerConfig(
        signed_public_keys=blob,
        private_keys=keys,
        environment=Environment.TEST,
        clock=peers.clock,
        rng=secrets.token_bytes,
    )
    peers.client = replace(peers.client, verifier=verifier)
    run_handshake(peers)
    assert seen == [{"attestation": attestation}]


def test_error_body_is_the_asl_cbor_error() -> None:
    body = cbor.decode_map(error_body(VauTranscriptError("detail stays private")), max_size=256)
    assert body == {"MessageType": "Error", "ErrorCode": 5, "ErrorMessage": "Transscript Error"}
