"""Enclave-vouched sessions: proof tickets, device bindings, login challenges and session
tickets (the scheme is described in ``healthid.enclave.api``, "enclave-vouched sessions").

Everything here is the enclave's word on something the host stores: a MAC under a key derived
from the root key (:meth:`~healthid.enclave.vault.Vault.tag`, one key per purpose). The only
state is the set of login challenges already redeemed (single use), kept in memory for as long
as a challenge can be valid and bounded by :data:`MAX_REDEEMED`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections import deque
from collections.abc import Callable
from typing import Final

import cbor2

from healthid.enclave import api
from healthid.enclave.api import SessionRefused
from healthid.enclave.vault import Vault
from healthid.protocol import device_auth
from healthid.protocol.attestation import AppleConfig, AttestationError, verify_apple_assertion

PROOF_PURPOSE: Final = "proof-ticket"
BINDING_PURPOSE: Final = "device-binding"
TICKET_PURPOSE: Final = "session-ticket"
CHALLENGE_PURPOSE: Final = "login-challenge"
PROOF_TICKET_SECONDS: Final = 15 * 60  # an enrolment lives 10 min from its start
# A challenge is valid this long after the enclave made it: the host's own challenge TTL
# (120 s) plus the time it may sit in the host's pool (host/wallet_service.py).
CHALLENGE_SECONDS: Final = 180
CHALLENGE_FUTURE_SKEW: Final = 5  # seconds a challenge may come from the future (clock steps)
CHALLENGE_NONCE_BYTES: Final = 12
CHALLENGE_TAG_BYTES: Final = 16
# Redeemed challenges remembered (one per login within CHALLENGE_SECONDS: 5,000 logins/s).
MAX_REDEEMED: Final = 1_000_000
SESSION_SECRET_BYTES: Final = 32
# host/attestation.py FORMAT_APPLE: App Attest devices log in with assertions, not ES256
FORMAT_APPLE_APP_ATTEST: Final = "apple-appattest"
_VERSION: Final = 1


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def session_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class Sessions:
    def __init__(
        self,
        vault: Vault,
        *,
        clock: Callable[[], float] = time.time,
        apple: AppleConfig | None = None,
    ) -> None:
        self._vault = vault
        self._clock = clock
        self._apple = apple
        self._redeemed: dict[bytes, int] = {}
        self._expiry: deque[tuple[int, bytes]] = deque()

    def _now(self) -> int:
        return int(self._clock())

    def _signed(self, purpose: str, fields: list[object]) -> bytes:
        payload = bytes(cbor2.dumps([_VERSION, *fields]))
        return payload + self._vault.tag(purpose, payload)

    def _opened(self, purpose: str, blob: bytes, what: str) -> list[object]:
        if not api.TICKET_TAG_BYTES < len(blob) <= 1024:
            raise SessionRefused(f"the {what} is malformed")
        payload, tag = blob[: -api.TICKET_TAG_BYTES], blob[-api.TICKET_TAG_BYTES :]
        if not hmac.compare_digest(tag, self._vault.tag(purpose, payload)):
            raise SessionRefused(f"the {what} was not issued by this enclave")
        fields = cbor2.loads(payload)  # our own MAC'd CBOR: well-formed
        if not isinstance(fields, list) or not fields or fields[0] != _VERSION:
            raise SessionRefused(f"the {what} has an unknown version")
        return fields[1:]

    # -- 1. proof tickets --------------------------------------------------------------------
    def proof_ticket(self, pseudonym: str, method: str, proofed_at: int) -> bytes:
        return self._signed(
            PROOF_PURPOSE, [pseudonym, method, proofed_at, proofed_at + PROOF_TICKET_SECONDS]
        )

    # -- 2. device bindings ------------------------------------------------------------------
    def bind(self, request: api.DeviceBindingRequest) -> api.BoundDeviceKey:
        pseudonym, method, proofed_at, expires_at = self._opened(
            PROOF_PURPOSE, request.proof_ticket, "proof ticket"
        )
        assert isinstance(pseudonym, str) and isinstance(method, str)  # noqa: S101 - our MAC
        assert isinstance(proofed_at, int) and isinstance(expires_at, int)  # noqa: S101
        if expires_at < self._now():
            raise SessionRefused("the identity proof has expired; prove your identity again")
        try:
            device_auth.load_device_key(request.public_key)
        except device_auth.DeviceAuthError as exc:
            raise SessionRefused(str(exc)) from None
        binding = self._binding(
            pseudonym=pseudonym,
            device_id=request.device_id,
            public_key=request.public_key,
            key_class=request.key_class,
            attestation_format=request.attestation_format,
            proofing_method=method,
            proofed_at=proofed_at,
        )
        return api.BoundDeviceKey(
            pseudonym=pseudonym, proofing_method=method, proofed_at=proofed_at, binding=binding
        )

    def _binding(
        self,
        *,
        pseudonym: str,
        device_id: str,
        public_key: bytes,
        key_class: str,
        attestation_format: str,
        proofing_method: str,
        proofed_at: int,
    ) -> bytes:
        message = bytes(
            cbor2.dumps(
                [
                    _VERSION,
                    pseudonym,
                    device_id,
                    hashlib.sha256(public_key).digest(),
                    key_class,
                    attestation_format,
                    proofing_method,
                    proofed_at,
                ]
            )
        )
        return self._vault.tag(BINDING_PURPOSE, message)

    # -- 3. login challenges -----------------------------------------------------------------
    def challenges(self, count: int) -> tuple[bytes, ...]:
        if not 0 < count <= api.MAX_LOGIN_CHALLENGES:
            raise api.EnclaveError(f"ask for 1 to {api.MAX_LOGIN_CHALLENGES} challenges")
        issued = self._now().to_bytes(4, "big")
        out = []
        for _ in range(count):
            body = issued + self._vault.random(CHALLENGE_NONCE_BYTES)
            out.append(body + self._vault.tag(CHALLENGE_PURPOSE, body)[:CHALLENGE_TAG_BYTES])
        return tuple(out)

    def _redeem(self, challenge: bytes) -> None:
        if len(challenge) != device_auth.CHALLENGE_BYTES:
            raise SessionRefused("the challenge was not issued by this enclave")
        body, tag = challenge[:-CHALLENGE_TAG_BYTES], challenge[-CHALLENGE_TAG_BYTES:]
        if not hmac.compare_digest(
            tag, self._vault.tag(CHALLENGE_PURPOSE, body)[:CHALLENGE_TAG_BYTES]
        ):
            raise SessionRefused("the challenge was not issued by this enclave")
        now = self._now()
        issued = int.from_bytes(body[:4], "big")
        if issued > now + CHALLENGE_FUTURE_SKEW or now - issued > CHALLENGE_SECONDS:
            raise SessionRefused("the challenge has expired")
        self._forget_expired(now)
        nonce = body[4:]
        if nonce in self._redeemed:
            raise SessionRefused("the challenge was already used")
        if len(self._redeemed) >= MAX_REDEEMED:
            raise api.EnclaveError("too many logins in flight; try again shortly")
        self._redeemed[nonce] = issued + CHALLENGE_SECONDS
        self._expiry.append((issued + CHALLENGE_SECONDS, nonce))

    def _forget_expired(self, now: int) -> None:
        expiry, redeemed = self._expiry, self._redeemed
        while expiry and expiry[0][0] < now - CHALLENGE_FUTURE_SKEW:
            _, nonce = expiry.popleft()
            redeemed.pop(nonce, None)

    # -- 4. logins and session tickets -------------------------------------------------------
    def login(
        self, request: api.LoginRequest, *, channel: bool = False
    ) -> tuple[str, bytes, api.SessionTicket]:
        """Check the binding, the signature and the challenge (in that order: a refused
        signature does not spend the challenge); issue the session and its ticket.

        ``channel``: the login came through the VAU channel and its token goes back only
        inside it (the ticket says so)."""
        refused = SessionRefused("device authentication failed")
        expected = self._binding(
            pseudonym=request.pseudonym,
            device_id=request.device_id,
            public_key=request.public_key,
            key_class=request.key_class,
            attestation_format=request.attestation_format,
            proofing_method=request.proofing_method,
            proofed_at=request.proofed_at,
        )
        if not hmac.compare_digest(expected, request.binding):
            raise SessionRefused("the device is not bound by this enclave")
        try:
            signed = device_auth.message(request.challenge, request.device_id, request.counter)
        except device_auth.DeviceAuthError:
            raise refused from None
        if request.attestation_format == FORMAT_APPLE_APP_ATTEST:
            if self._apple is None:
                raise refused
            try:
                new_count = verify_apple_assertion(
                    request.signature,
                    client_data=signed,
                    public_key=request.public_key,
                    previous_sign_count=request.sign_count,
                    config=self._apple,
                )
            except (AttestationError, ValueError):
                raise refused from None
            if new_count != request.counter:
                raise refused
        else:
            try:
                valid = device_auth.verify(request.public_key, signed, request.signature)
            except device_auth.DeviceAuthError:
                raise refused from None
            if not valid:
                raise refused
        self._redeem(request.challenge)
        now = self._now()
        ttl = min(max(request.session_ttl, 1), api.MAX_SESSION_SECONDS)
        token = f"{request.device_id}.{_b64(self._vault.random(SESSION_SECRET_BYTES))}"
        ticket = api.SessionTicket(
            pseudonym=request.pseudonym,
            device_id=request.device_id,
            auth_time=now,
            expires_at=now + ttl,
            key_class=request.key_class,
            proofing_method=request.proofing_method,
            proofed_at=request.proofed_at,
            session_hash=session_hash(token),
            channel=channel,
        )
        blob = self._signed(
            TICKET_PURPOSE,
            [
                ticket.pseudonym,
                ticket.device_id,
                ticket.auth_time,
                ticket.expires_at,
                ticket.key_class,
                ticket.proofing_method,
                ticket.proofed_at,
                ticket.session_hash,
                ticket.channel,
            ],
        )
        return token, blob, ticket

    def ticket(self, blob: bytes) -> api.SessionTicket:
        """The session ticket ``blob`` if this enclave issued it and it has not expired."""
        self._opened(TICKET_PURPOSE, blob, "session ticket")
        try:
            ticket = api.read_session_ticket(blob)
        except ValueError:
            raise SessionRefused("the session ticket is malformed") from None
        if ticket.expires_at <= self._now():
            raise SessionRefused("the session has expired; log in again")
        return ticket

    def session(self, blob: bytes | None, token: str) -> api.SessionTicket:
        """The ticket of the session ``token`` (the wallet's own, as it sent it inside the
        channel), which must have been opened through the channel: the token of a plain
        login passed through the host."""
        if blob is None:
            raise SessionRefused("no session ticket")
        ticket = self.ticket(blob)
        if not hmac.compare_digest(ticket.session_hash, session_hash(token)):
            raise SessionRefused("the session ticket is for another session")
        if not ticket.channel:
            raise SessionRefused("log in through the channel to see personal data")
        return ticket
