"""Known-answer tests: gematik's ASL (ML-KEM-768) server vectors, lib-vau-csharp's AES-GCM KAT
and lib-vau's test fixtures (Kyber768). Provenance: vectors/README.md."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from kyber_py.kyber import Kyber768
from kyber_py.ml_kem import ML_KEM_768
from vau_testlib import (
    FIXTURES,
    Clock,
    Peers,
    fixed_rng,
    load_json,
    make_peers,
    run_handshake,
)

from healthid.protocol.vau import (
    ClientConfig,
    ClientSession,
    Environment,
    ExpandedKemKey,
    KemMode,
    SeedKemKey,
    ServerConfig,
    ServerHandshake,
    ServerSession,
    VauMalformedError,
    cbor,
    client,
    es256_signer,
    es256_verifier,
    hybrid,
    kem,
    parse_server_private_keys,
    parse_signed_public_keys,
    server,
    sign_public_keys,
)
from healthid.protocol.vau.keys import ServerPrivateKeys, parse_public_keys
from healthid.protocol.vau.messages import parse_m2, parse_m3, parse_m3_inner, parse_m4
from healthid.protocol.vau.primitives import (
    EcdhPublicKey,
    aead_open,
    derive_handshake_keys,
    derive_session_keys,
    ec_private_from_bytes,
    sha256,
)

ASL = load_json("asl_mlkem768_server_vectors.json")
AESGCM_KAT = load_json("vau_aesgcm_kat.json")


def h(value: str) -> bytes:
    return bytes.fromhex(value)


SERVER = ASL["server_keys"]
FINISHED = ASL["finished_handshake"]
M1, M2, M3 = h(FINISHED["MESSAGE1_HEX"]), h(FINISHED["MESSAGE2_HEX"]), h(FINISHED["MESSAGE3_HEX"])
SS_E = h(FINISHED["SS_E_HEX"])


def asl_private_keys() -> ServerPrivateKeys:
    return ServerPrivateKeys(
        ecdh=ec_private_from_bytes(h(SERVER["SERVER_ECDH_SK_HEX"])),
        kem=ExpandedKemKey(h(SERVER["SERVER_PQC_SK_HEX"])),
    )


def asl_signed_keys() -> bytes:
    """The SignedPublicVauKeys the ASL server sent in M2 (opened with K1_s2c from ss_e)."""
    return aead_open(derive_handshake_keys(SS_E).s2c, parse_m2(M2, KemMode.MLKEM768).aead_ct)


def asl_server_config(**overrides: Any) -> ServerConfig:
    public = parse_signed_public_keys(asl_signed_keys()).public_keys(KemMode.MLKEM768)
    settings: dict[str, Any] = {
        "signed_public_keys": asl_signed_keys(),
        "private_keys": asl_private_keys(),
        "environment": Environment.TEST,
        "clock": Clock(public.iat + 60),
        "rng": secrets.token_bytes,
        "mode": KemMode.MLKEM768,
    }
    settings.update(overrides)
    return ServerConfig(**settings)


def asl_handshake(config: ServerConfig) -> ServerHandshake:
    return ServerHandshake(
        mode=KemMode.MLKEM768,
        ss_e=SS_E,
        transcript=M1 + M2,
        keys_hash=config.keys_hash,
        expires_at=config.clock() + 60,
    )


# --- ASL server vectors (libasl server.rs) -----------------------------------------------


def test_asl_m2_carries_the_server_keys_that_match_its_private_keys() -> None:
    signed = parse_signed_public_keys(asl_signed_keys())
    public = signed.public_keys(KemMode.MLKEM768)
    assert public.ecdh_pk.x + public.ecdh_pk.y == h(SERVER["SERVER_ECDH_PK_HEX"])
    assert public.kem_pk == h(SERVER["SERVER_PQC_PK_HEX"])
    assert signed.cdv == 1
    asl_private_keys().check_matches(public)  # the expanded dk embeds the same ek


def test_asl_finished_handshake_yields_the_expected_key_id_and_app_keys() -> None:
    config = asl_server_config()
    m4, session = server.receive_m3(config, asl_handshake(config), M3)
    assert session.key_id == h(FINISHED["EXPECTED_KEY_ID"])
    assert session.k2_c2s_app_data == h(FINISHED["EXPECTED_C2S_KEY"])
    assert session.k2_s2c_app_data == h(FINISHED["EXPECTED_S2C_KEY"])
    assert m4[:1] in (b"\xa2", b"\xbf") and len(m4) > 32


def test_asl_transcript_hashes_are_m1_m2_m3_ciphertext_and_m1_m2_m3() -> None:
    """The ASL client confirms SHA-256(M1 ‖ M2 ‖ M3.AEAD_ct); our M4 confirms SHA-256(M1‖M2‖M3)."""
    message3 = parse_m3(M3)
    inner = parse_m3_inner(
        aead_open(derive_handshake_keys(SS_E).c2s, message3.aead_ct), KemMode.MLKEM768
    )
    keys = asl_private_keys()
    ss_s = hybrid.decapsulate(KemMode.MLKEM768, keys.ecdh, keys.kem, inner.ct)
    k2 = derive_session_keys(SS_E, ss_s)
    assert k2.key_id == h(FINISHED["EXPECTED_KEY_ID"])
    assert aead_open(k2.c2s_key_confirmation, message3.key_confirmation) == sha256(
        M1, M2, message3.aead_ct
    )
    config = asl_server_config()
    m4, _ = server.receive_m3(config, asl_handshake(config), M3)
    assert aead_open(k2.s2c_key_confirmation, parse_m4(m4).key_confirmation) == sha256(M1, M2, M3)


def test_asl_request_decrypts_to_hello_world() -> None:
    vector = ASL["decrypt_request"]
    config = asl_server_config()
    session = ServerSession(
        mode=KemMode.MLKEM768,
        key_id=h(vector["KEY_ID_HEX"]),
        k2_c2s_app_data=h(vector["C2S_KEY_HEX"]),
        k2_s2c_app_data=bytes(32),
        expires_at=config.clock() + 60,
    )
    session, request = server.decrypt_request(config, session, h(vector["CRYPTO_MESSAGE_HEX"]))
    assert request.counter == 1
    assert request.plaintext == h(vector["EXPECTED_MESSAGE_HEX"]) == b"Hello World"
    assert session.last_request == 1


def test_asl_response_starts_with_the_expected_header() -> None:
    vector = ASL["encrypt_response_header"]
    config = asl_server_config()
    session = ServerSession(
        mode=KemMode.MLKEM768,
        key_id=h(vector["KEY_ID_HEX"]),
        k2_c2s_app_data=bytes(32),
        k2_s2c_app_data=h(vector["S2C_KEY_HEX"]),
        last_request=1,
        expires_at=config.clock() + 60,
    )
    _, message = server.encrypt_response(config, session, 1, h(vector["PLAIN_MESSAGE_HEX"]))
    assert message.startswith(h(vector["EXPECTED_HEADER"]))
    client_config = ClientConfig(
        environment=Environment.TEST,
        verifier=lambda _: False,
        clock=config.clock,
        rng=secrets.token_bytes,
    )
    client_session = ClientSession(
        mode=KemMode.MLKEM768,
        key_id=session.key_id,
        k2_c2s_app_data=bytes(32),
        k2_s2c_app_data=session.k2_s2c_app_data,
        last_request=1,
        expires_at=config.clock() + 60,
    )
    _, plaintext = client.decrypt_response(client_config, client_session, message)
    assert plaintext == b"Hello World"


def test_asl_m1_is_refused_in_kyber768_mode() -> None:
    with pytest.raises(VauMalformedError, match="Kyber768_PK"):
        server.receive_m1(make_peers(KemMode.KYBER768).server, M1)


# --- AES-GCM KAT (lib-vau-csharp AesGcmTest.cs) ---------------------------------------------


def test_aesgcm_kat_is_the_clients_first_request() -> None:
    aad, iv = h(AESGCM_KAT["aad"]), h(AESGCM_KAT["iv"])
    expected = aad + iv + h(AESGCM_KAT["ciphertext_and_tag"])
    config = ClientConfig(
        environment=Environment.TEST,
        verifier=lambda _: False,
        clock=Clock(),
        rng=fixed_rng(iv[:4]),
    )
    session = ClientSession(
        mode=KemMode.MLKEM768,
        key_id=aad[11:],
        k2_c2s_app_data=h(AESGCM_KAT["key"]),
        k2_s2c_app_data=bytes(32),
        expires_at=config.clock() + 60,
    )
    session, message = client.encrypt_request(config, session, h(AESGCM_KAT["plaintext"]))
    assert message == expected
    assert session.last_request == 1


def test_aesgcm_kat_decrypts_on_the_server() -> None:
    aad = h(AESGCM_KAT["aad"])
    message = aad + h(AESGCM_KAT["iv"]) + h(AESGCM_KAT["ciphertext_and_tag"])
    config = make_peers().server
    session = ServerSession(
        mode=KemMode.MLKEM768,
        key_id=aad[11:],
        k2_c2s_app_data=h(AESGCM_KAT["key"]),
        k2_s2c_app_data=bytes(32),
        expires_at=config.clock() + 60,
    )
    _, request = server.decrypt_request(config, session, message)
    assert (request.counter, request.plaintext) == (1, b"Hello World")


# --- lib-vau fixtures (Kyber768, the ePA VAU wire) -----------------------------------------


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def test_lib_vau_server_keys_parse_and_match_their_public_keys() -> None:
    keys = parse_server_private_keys(fixture("vau_server_keys.cbor"))
    raw = cbor.decode_map(fixture("vau_server_keys.cbor"), max_size=8192)
    assert isinstance(raw["ECDH_PK"], dict)
    assert EcdhPublicKey.from_key(keys.ecdh.public_key()) == EcdhPublicKey.from_map(raw["ECDH_PK"])
    assert isinstance(keys.kem, ExpandedKemKey)
    assert keys.kem.public_key == raw["Kyber768_PK"]


def test_lib_vau_old_signed_keys_format_is_refused_but_its_keys_and_signature_check_out() -> None:
    """The fixture predates lib-vau 1.0.13 (``cert`` instead of ``cert_hash``/``cdv``, DER
    signature): our parser refuses it, its inner VauPublicKeys parse in Kyber768 mode and
    its signature verifies under the fixture certificate."""
    blob = fixture("vau_server_signed_pub_keys.cbor")
    with pytest.raises(VauMalformedError, match="cert_hash"):
        parse_signed_public_keys(blob)
    old = cbor.decode_map(blob, max_size=8192)
    signed, signature, cert = old["signed_pub_keys"], old["signature-ES256"], old["cert"]
    assert isinstance(signed, bytes) and isinstance(signature, bytes) and isinstance(cert, bytes)
    public = parse_public_keys(signed, KemMode.KYBER768)
    assert public.exp - public.iat == 7 * 24 * 3600
    parse_server_private_keys(fixture("vau_server_keys.cbor")).check_matches(public)
    certificate = x509.load_der_x509_certificate(fixture("vau_sig_cert.der"))
    assert cert == fixture("vau_sig_cert.der")
    key = certificate.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    key.verify(signature, signed, ec.ECDSA(hashes.SHA256()))


def lib_vau_peers(clock: Clock) -> Peers:
    """A Kyber768 server with lib-vau's published keys, its keys signed by lib-vau's VAU
    signing key in the current format; the client trusts the fixture certificate's key."""
    keys = parse_server_private_keys(fixture("vau_server_keys.cbor"))
    signing_key = serialization.load_der_private_key(fixture("vau-sig-key.der"), password=None)
    assert isinstance(signing_key, ec.EllipticCurvePrivateKey)
    blob = sign_public_keys(
        keys.public_keys(iat=clock() - 60, exp=clock() + 3600, comment="lib-vau fixture keys"),
        KemMode.KYBER768,
        es256_signer(signing_key),
        cert_hash=hashlib.sha256(fixture("vau_sig_cert.der")).digest(),
        cdv=1,
        ocsp_response=fixture("ocsp-response-vau-sig.der"),
    )
    cert_key = x509.load_der_x509_certificate(fixture("vau_sig_cert.der")).public_key()
    assert isinstance(cert_key, ec.EllipticCurvePublicKey)
    server_config = ServerConfig(
        signed_public_keys=blob,
        private_keys=keys,
        environment=Environment.TEST,
        clock=clock,
        rng=secrets.token_bytes,
        mode=KemMode.KYBER768,
    )
    client_config = ClientConfig(
        environment=Environment.TEST,
        verifier=es256_verifier(cert_key),
        clock=clock,
        rng=secrets.token_bytes,
        mode=KemMode.KYBER768,
    )
    return Peers(server=server_config, client=client_config, identity=signing_key, clock=clock)


def test_kyber768_round_trip_with_the_published_lib_vau_keys() -> None:
    peers = lib_vau_peers(Clock())
    flight = run_handshake(peers)
    assert b"Kyber768_PK" in flight.m1 and b"Kyber768_ct" in flight.m2
    assert flight.client_session.key_id == flight.server_session.key_id
    session, message = client.encrypt_request(peers.client, flight.client_session, b"GET /")
    server_session, request = server.decrypt_request(peers.server, flight.server_session, message)
    _, response = server.encrypt_response(peers.server, server_session, request.counter, b"200")
    _, plaintext = client.decrypt_response(peers.client, session, response)
    assert (request.plaintext, plaintext) == (b"GET /", b"200")


def test_kyber768_mode_agrees_with_kyber_py_round3_both_ways() -> None:
    """ML-KEM + SHAKE256(K ‖ SHA3-256(c)) (lib-vau ``KyberEncoding``) is Kyber768 v3.0.2."""
    keys = parse_server_private_keys(fixture("vau_server_keys.cbor"))
    public = keys.kem.public_key
    secret, ct = kem.encapsulate(KemMode.KYBER768, public)  # cryptography ML-KEM + SHAKE
    assert isinstance(keys.kem, ExpandedKemKey)
    assert Kyber768.decaps(keys.kem.expanded, ct) == secret
    theirs, their_ct = Kyber768.encaps(public)
    assert keys.kem.decapsulate(KemMode.KYBER768, their_ct) == theirs
    seed_key = SeedKemKey.generate(secrets.token_bytes)  # constant-time path, same check
    theirs, their_ct = Kyber768.encaps(seed_key.public_key)
    assert seed_key.decapsulate(KemMode.KYBER768, their_ct) == theirs


def test_mlkem768_mode_agrees_with_kyber_py_fips203() -> None:
    seed_key = SeedKemKey.generate(secrets.token_bytes)
    theirs, their_ct = ML_KEM_768.encaps(seed_key.public_key)
    assert seed_key.decapsulate(KemMode.MLKEM768, their_ct) == theirs
    expanded = ExpandedKemKey(h(SERVER["SERVER_PQC_SK_HEX"]))
    secret, ct = kem.encapsulate(KemMode.MLKEM768, expanded.public_key)
    assert expanded.decapsulate(KemMode.MLKEM768, ct) == secret


def test_asl_private_key_file_parses_and_matches_the_signed_keys() -> None:
    """libasl ``AslPrivateKeys``: ``ECDH_SK`` raw, ``ML-KEM-768_SK`` expanded."""
    ecdh, pqc = h(SERVER["SERVER_ECDH_SK_HEX"]), h(SERVER["SERVER_PQC_SK_HEX"])
    blob = cbor.encode({"ECDH_SK": ecdh, "ML-KEM-768_SK": pqc})
    keys = parse_server_private_keys(blob)
    keys.check_matches(parse_signed_public_keys(asl_signed_keys()).public_keys(KemMode.MLKEM768))
    assert parse_server_private_keys(keys.to_bytes()).kem == keys.kem


def test_our_private_key_file_round_trips() -> None:
    keys = ServerPrivateKeys.generate(secrets.token_bytes)
    loaded = parse_server_private_keys(keys.to_bytes())
    assert isinstance(loaded.kem, SeedKemKey) and isinstance(keys.kem, SeedKemKey)
    assert loaded.kem.seed == keys.kem.seed
    public = keys.public_keys(iat=1, exp=2)
    loaded.check_matches(public)


def test_expanded_key_with_a_wrong_embedded_hash_is_refused() -> None:
    expanded = bytearray(h(SERVER["SERVER_PQC_SK_HEX"]))
    expanded[2340] ^= 1
    with pytest.raises(VauMalformedError, match="H\\(ek\\)"):
        ExpandedKemKey(bytes(expanded))
