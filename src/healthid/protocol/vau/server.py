"""The VAU server (the enclave's end of the channel) as a pure state machine.

    receive_m1(config, m1)             -> (m2, ServerHandshake)
    receive_m3(config, handshake, m3)  -> (m4, ServerSession)
    decrypt_request(config, session, message)            -> (session', VauRequest)
    encrypt_response(config, session, counter, plaintext) -> (session', message)

Source: lib-vau ``VauServerStateMachine`` (1.0.16), libasl ``server.rs`` (``initiate_handshake``,
``finish_handshake``, ``decrypt_request``, ``encrypt_response``); vau-and-tee.md §1.4-§1.5.
Every function takes the state in and returns the next one; nothing is kept in between, so
the caller stores the (sealed) state and consumes a handshake state exactly once.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field, replace

from healthid.protocol.vau import hybrid
from healthid.protocol.vau.channel import (
    DEFAULT_MAX_PLAINTEXT_SIZE,
    Direction,
    Environment,
    check_header,
    open_message,
    seal_message,
    split_message,
)
from healthid.protocol.vau.errors import (
    VauCounterError,
    VauError,
    VauExpiredError,
    VauKeyConfirmationError,
    VauServerKeysError,
    VauStateError,
    VauTranscriptError,
    VauUnsupportedError,
)
from healthid.protocol.vau.kem import KemMode
from healthid.protocol.vau.keys import (
    MAX_KEY_VALIDITY,
    ServerPrivateKeys,
    VauPublicKeys,
    parse_signed_public_keys,
)
from healthid.protocol.vau.messages import (
    Message2,
    Message4,
    parse_m1,
    parse_m3,
    parse_m3_inner,
)
from healthid.protocol.vau.primitives import (
    Clock,
    RandomBytes,
    aead_open,
    aead_seal,
    derive_handshake_keys,
    derive_session_keys,
    sha256,
)
from healthid.protocol.vau.state import (
    HANDSHAKE_TTL,
    SESSION_TTL,
    ServerHandshake,
    ServerSession,
    check_limits,
)


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """One VAU server identity, validated once at start-up (CONVENTIONS 7).

    ``signed_public_keys`` is the finished ``SignedPublicVauKeys`` blob (signed elsewhere, see
    :func:`~healthid.protocol.vau.keys.sign_public_keys`); it goes into M2 byte for byte.
    Construction refuses a blob whose keys are not ``private_keys``' public halves, are
    written for the other KEM mode, or are valid for more than 30 days (lib-vau).
    """

    signed_public_keys: bytes = field(repr=False)
    private_keys: ServerPrivateKeys = field(repr=False)
    environment: Environment
    clock: Clock
    rng: RandomBytes
    mode: KemMode = KemMode.MLKEM768
    handshake_ttl: int = HANDSHAKE_TTL
    session_ttl: int = SESSION_TTL
    max_plaintext_size: int = DEFAULT_MAX_PLAINTEXT_SIZE
    public_keys: VauPublicKeys = field(init=False)
    keys_hash: bytes = field(init=False)

    def __post_init__(self) -> None:
        check_limits(self.handshake_ttl, self.session_ttl, self.max_plaintext_size)
        try:
            public = parse_signed_public_keys(self.signed_public_keys).public_keys(self.mode)
        except VauError as exc:
            raise VauServerKeysError(f"signed public VAU keys unusable: {exc}") from None
        if public.exp - public.iat > MAX_KEY_VALIDITY:
            raise VauServerKeysError("VAU keys: exp - iat exceeds 30 days")
        self.private_keys.check_matches(public)
        object.__setattr__(self, "public_keys", public)
        object.__setattr__(self, "keys_hash", hashlib.sha256(self.signed_public_keys).digest())


@dataclass(frozen=True, kw_only=True, slots=True)
class VauRequest:
    """A decrypted request: its counter (to answer with) and the inner HTTP message."""

    counter: int
    plaintext: bytes = field(repr=False)


def receive_m1(config: ServerConfig, m1: bytes) -> tuple[bytes, ServerHandshake]:
    """M1 → M2 (A_24608; lib-vau ``receiveMessage1``): check M1's keys (P-256 point on the
    curve, valid KEM key), encapsulate to them, derive K1 and send the signed public VAU keys
    under ``K1_s2c``.

    Refused while the server's own keys are outside their validity (lib-vau
    ``checkCertificateExpired`` on every message).
    """
    now = config.clock()
    config.public_keys.check_validity(now)
    message = parse_m1(m1, config.mode)
    ss_e, ct = hybrid.encapsulate(config.mode, message.ecdh_pk, message.kem_pk, config.rng)
    k1 = derive_handshake_keys(ss_e)
    aead_ct = aead_seal(k1.s2c, config.signed_public_keys, config.rng)
    m2 = Message2(ct=ct, aead_ct=aead_ct).encode(config.mode)
    handshake = ServerHandshake(
        mode=config.mode,
        ss_e=ss_e,
        transcript=m1 + m2,
        keys_hash=config.keys_hash,
        expires_at=now + config.handshake_ttl,
    )
    return m2, handshake


def receive_m3(
    config: ServerConfig, handshake: ServerHandshake, m3: bytes
) -> tuple[bytes, ServerSession]:
    """M3 → M4 (A_24626; lib-vau ``receiveMessage3``, libasl ``finish_handshake``).

    Opens the inner layer with ``K1_c2s``, decapsulates to the signed VAU keys, derives K2,
    checks the client's key confirmation ``SHA-256(M1 ‖ M2 ‖ M3.AEAD_ct)`` and answers with
    ``AEAD(K2_s2c_key_confirmation, SHA-256(M1 ‖ M2 ‖ M3))``.
    """
    now = config.clock()
    _check_handshake(config, handshake, now)
    message = parse_m3(m3)
    k1 = derive_handshake_keys(handshake.ss_e)
    inner = parse_m3_inner(aead_open(k1.c2s, message.aead_ct), config.mode)
    if inner.erp or inner.eso:
        raise VauUnsupportedError("ERP/ESO are not supported")  # libasl: MissingParameters
    keys = config.private_keys
    ss_s = hybrid.decapsulate(config.mode, keys.ecdh, keys.kem, inner.ct)
    k2 = derive_session_keys(handshake.ss_e, ss_s)
    confirmed = aead_open(
        k2.c2s_key_confirmation, message.key_confirmation, error=VauKeyConfirmationError
    )
    if not hmac.compare_digest(confirmed, sha256(handshake.transcript, message.aead_ct)):
        raise VauTranscriptError("the client's transcript hash differs from ours")
    confirmation = aead_seal(k2.s2c_key_confirmation, sha256(handshake.transcript, m3), config.rng)
    session = ServerSession(
        mode=config.mode,
        key_id=k2.key_id,
        k2_c2s_app_data=k2.c2s_app_data,
        k2_s2c_app_data=k2.s2c_app_data,
        expires_at=now + config.session_ttl,
    )
    return Message4(key_confirmation=confirmation).encode(), session


def _check_handshake(config: ServerConfig, handshake: ServerHandshake, now: int) -> None:
    if handshake.mode is not config.mode:
        raise VauStateError("handshake state is for another KEM mode")
    if not hmac.compare_digest(handshake.keys_hash, config.keys_hash):
        raise VauStateError("the server's VAU keys changed during the handshake")
    if now >= handshake.expires_at:
        raise VauExpiredError("the handshake has expired")


def _check_session(config: ServerConfig, session: ServerSession, now: int) -> None:
    if session.mode is not config.mode:
        raise VauStateError("session state is for another KEM mode")
    if now >= session.expires_at:
        raise VauExpiredError("the VAU session has expired")


def decrypt_request(
    config: ServerConfig, session: ServerSession, message: bytes
) -> tuple[ServerSession, VauRequest]:
    """Check and decrypt a request (A_24628).

    Order: size, version, PU flag, request byte, KeyID, counter, AES-GCM. The counter must
    exceed every counter accepted before (no repeat, no replay, no reordering; gaps are
    allowed, so a lost request does not end the session). The state only moves on after
    the tag verifies, so a forged message cannot burn counters.
    """
    _check_session(config, session, config.clock())
    split = split_message(message, max_plaintext_size=config.max_plaintext_size)
    check_header(
        split.header,
        environment=config.environment,
        direction=Direction.REQUEST,
        key_id=session.key_id,
    )
    counter = split.header.counter
    if counter <= session.last_request:
        raise VauCounterError("request counter repeats or goes backwards")
    plaintext = open_message(session.k2_c2s_app_data, split)
    return replace(session, last_request=counter), VauRequest(counter=counter, plaintext=plaintext)


def encrypt_response(
    config: ServerConfig, session: ServerSession, request_counter: int, plaintext: bytes
) -> tuple[ServerSession, bytes]:
    """Encrypt the response to the request with ``request_counter`` (echoed in the header).

    Each accepted request is answered at most once and in order, so the IV's counter half
    never repeats under ``K2_s2c_app_data``.
    """
    _check_session(config, session, config.clock())
    if not session.last_response < request_counter <= session.last_request:
        raise VauCounterError("no unanswered request with this counter")
    message = seal_message(
        session.k2_s2c_app_data,
        environment=config.environment,
        direction=Direction.RESPONSE,
        counter=request_counter,
        key_id=session.key_id,
        plaintext=plaintext,
        rng=config.rng,
    )
    return replace(session, last_response=request_counter), message
