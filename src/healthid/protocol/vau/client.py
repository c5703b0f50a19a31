"""The VAU client (the wallet's end of the channel) as a pure state machine.

    start(config)                        -> (m1, ClientHandshake)
    receive_m2(config, handshake, m2)    -> (m3, ClientKeyConfirmation)
    receive_m4(config, confirmation, m4) -> ClientSession
    encrypt_request(config, session, plaintext)  -> (session', message)
    decrypt_response(config, session, message)   -> (session', plaintext)

Source: lib-vau ``VauClientStateMachine`` (1.0.16), libasl ``client.rs``; vau-and-tee.md §1.4-
§1.6. The server's signed public keys are checked by the caller's :data:`KeyVerifier`
(A_24624-01 steps 1-5: certificate, OCSP, signature — or, for our own enclave, its attested
identity key) before anything is encapsulated to them, and their ``exp`` must lie ahead.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, replace

from healthid.protocol.vau import hybrid
from healthid.protocol.vau.channel import (
    DEFAULT_MAX_PLAINTEXT_SIZE,
    MAX_COUNTER,
    Direction,
    Environment,
    check_header,
    open_message,
    seal_message,
    split_message,
)
from healthid.protocol.vau.errors import (
    VauCounterError,
    VauExpiredError,
    VauKeyConfirmationError,
    VauSignatureError,
    VauStateError,
    VauTranscriptError,
)
from healthid.protocol.vau.kem import KemMode, SeedKemKey
from healthid.protocol.vau.keys import KeyVerifier, parse_signed_public_keys
from healthid.protocol.vau.messages import (
    Message1,
    Message3,
    Message3Inner,
    parse_m2,
    parse_m4,
)
from healthid.protocol.vau.primitives import (
    Clock,
    EcdhPublicKey,
    RandomBytes,
    aead_open,
    aead_seal,
    derive_handshake_keys,
    derive_session_keys,
    generate_ec_key,
    sha256,
)
from healthid.protocol.vau.state import (
    HANDSHAKE_TTL,
    SESSION_TTL,
    ClientHandshake,
    ClientKeyConfirmation,
    ClientSession,
    check_limits,
)


@dataclass(frozen=True, kw_only=True)
class ClientConfig:
    """The client's side: its environment (PU flag), KEM mode and the verifier it trusts."""

    environment: Environment
    verifier: KeyVerifier
    clock: Clock
    rng: RandomBytes
    mode: KemMode = KemMode.MLKEM768
    handshake_ttl: int = HANDSHAKE_TTL
    session_ttl: int = SESSION_TTL
    max_plaintext_size: int = DEFAULT_MAX_PLAINTEXT_SIZE

    def __post_init__(self) -> None:
        check_limits(self.handshake_ttl, self.session_ttl, self.max_plaintext_size)


def start(config: ClientConfig) -> tuple[bytes, ClientHandshake]:
    """M1: fresh ephemeral ECDH and KEM key pairs (lib-vau ``generateMessage1``)."""
    ecdh_sk = generate_ec_key(config.rng)
    kem_sk = SeedKemKey.generate(config.rng)
    m1 = Message1(
        ecdh_pk=EcdhPublicKey.from_key(ecdh_sk.public_key()), kem_pk=kem_sk.public_key
    ).encode(config.mode)
    handshake = ClientHandshake(
        mode=config.mode,
        ecdh_sk=ecdh_sk,
        kem_sk=kem_sk,
        m1=m1,
        expires_at=config.clock() + config.handshake_ttl,
    )
    return m1, handshake


def receive_m2(
    config: ClientConfig, handshake: ClientHandshake, m2: bytes
) -> tuple[bytes, ClientKeyConfirmation]:
    """M2 → M3 (A_24623; lib-vau ``receiveMessage2``).

    Decapsulates ``ss_e``, opens the signed public VAU keys with ``K1_s2c``, has the
    verifier check them (A_24624-01 step 5) and only then parses them and requires
    ``exp`` ahead (step 6), encapsulates ``ss_s`` to them and sends the inner layer under
    ``K1_c2s`` with the key confirmation ``SHA-256(M1 ‖ M2 ‖ AEAD_ct)`` under K2.
    """
    now = config.clock()
    _check_mode(config, handshake.mode)
    if now >= handshake.expires_at:
        raise VauExpiredError("the handshake has expired")
    message = parse_m2(m2, config.mode)
    ss_e = hybrid.decapsulate(config.mode, handshake.ecdh_sk, handshake.kem_sk, message.ct)
    k1 = derive_handshake_keys(ss_e)
    signed = parse_signed_public_keys(aead_open(k1.s2c, message.aead_ct))
    if not config.verifier(signed):
        raise VauSignatureError("the signature over the server's VAU keys does not verify")
    server_keys = signed.public_keys(config.mode)
    server_keys.check_validity(now)
    ss_s, ct = hybrid.encapsulate(config.mode, server_keys.ecdh_pk, server_keys.kem_pk, config.rng)
    aead_ct = aead_seal(k1.c2s, Message3Inner(ct=ct).encode(config.mode), config.rng)
    k2 = derive_session_keys(ss_e, ss_s)
    key_confirmation = aead_seal(
        k2.c2s_key_confirmation, sha256(handshake.m1, m2, aead_ct), config.rng
    )
    m3 = Message3(aead_ct=aead_ct, key_confirmation=key_confirmation).encode()
    confirmation = ClientKeyConfirmation(
        mode=config.mode,
        key_id=k2.key_id,
        k2_c2s_app_data=k2.c2s_app_data,
        k2_s2c_app_data=k2.s2c_app_data,
        k2_s2c_key_confirmation=k2.s2c_key_confirmation,
        transcript_hash=sha256(handshake.m1, m2, m3),
        server_keys_exp=server_keys.exp,
        expires_at=now + config.handshake_ttl,
    )
    return m3, confirmation


def receive_m4(
    config: ClientConfig, confirmation: ClientKeyConfirmation, m4: bytes
) -> ClientSession:
    """M4: the server proves it holds the signed VAU keys by confirming ``SHA-256(M1 ‖ M2 ‖
    M3)`` under ``K2_s2c_key_confirmation`` (lib-vau ``receiveMessage4``)."""
    now = config.clock()
    _check_mode(config, confirmation.mode)
    if now >= confirmation.expires_at:
        raise VauExpiredError("the handshake has expired")
    message = parse_m4(m4)
    confirmed = aead_open(
        confirmation.k2_s2c_key_confirmation,
        message.key_confirmation,
        error=VauKeyConfirmationError,
    )
    if not hmac.compare_digest(confirmed, confirmation.transcript_hash):
        raise VauTranscriptError("the server's transcript hash differs from ours")
    return ClientSession(
        mode=config.mode,
        key_id=confirmation.key_id,
        k2_c2s_app_data=confirmation.k2_c2s_app_data,
        k2_s2c_app_data=confirmation.k2_s2c_app_data,
        expires_at=now + config.session_ttl,
    )


def _check_mode(config: ClientConfig, mode: KemMode) -> None:
    if mode is not config.mode:
        raise VauStateError("state is for another KEM mode")


def _check_session(config: ClientConfig, session: ClientSession) -> None:
    _check_mode(config, session.mode)
    if config.clock() >= session.expires_at:
        raise VauExpiredError("the VAU session has expired")


def encrypt_request(
    config: ClientConfig, session: ClientSession, plaintext: bytes
) -> tuple[ClientSession, bytes]:
    """Encrypt the next request; the counter starts at 1 and goes up by one per request
    (lib-vau ``VauClientStateMachine.encryptVauMessage``). An unanswered earlier request is
    abandoned: its late response will be refused."""
    _check_session(config, session)
    counter = session.last_request + 1
    if counter > MAX_COUNTER:
        raise VauCounterError("request counter exhausted; start a new handshake")
    message = seal_message(
        session.k2_c2s_app_data,
        environment=config.environment,
        direction=Direction.REQUEST,
        counter=counter,
        key_id=session.key_id,
        plaintext=plaintext,
        rng=config.rng,
    )
    return replace(session, last_request=counter), message


def decrypt_response(
    config: ClientConfig, session: ClientSession, message: bytes
) -> tuple[ClientSession, bytes]:
    """Check and decrypt the response (A_24628): size, version, PU flag, response byte,
    KeyID, then the counter must be exactly that of the outstanding request (lib-vau
    ``checkRequestCounter``) and not answered yet, then AES-GCM."""
    _check_session(config, session)
    split = split_message(message, max_plaintext_size=config.max_plaintext_size)
    check_header(
        split.header,
        environment=config.environment,
        direction=Direction.RESPONSE,
        key_id=session.key_id,
    )
    counter = split.header.counter
    if counter != session.last_request:
        raise VauCounterError("response counter is not the outstanding request's")
    if counter <= session.last_response:
        raise VauCounterError("this request has been answered already")
    plaintext = open_message(session.k2_s2c_app_data, split)
    return replace(session, last_response=counter), plaintext
