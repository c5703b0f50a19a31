"""The enclave's end of the VAU channel (issue #6 items 2-4): the wallet's requests end here.

The handshake and the user-data messages are gematik's VAU/ASL protocol
(:mod:`healthid.protocol.vau`, vau-and-tee.md §1.2-§1.5); this module keeps its server state.

- **Keys.** The VAU keys (ECDH P-256 + ML-KEM-768) are generated inside the enclave at start
  and every :data:`KEY_ROTATION` seconds; the ``SignedPublicVauKeys`` are signed with the
  enclave's identity key (ES256), the key the attestation document binds (vau-and-tee.md
  §4.3-§4.5). A wallet that verified the attestation checks that signature before it sends M3.
- **State stays in enclave memory**: handshakes and channels live in two bounded maps under a
  random channel id (CID), each with its TTL, and are dropped on expiry. Nothing of it is
  handed to the host: a host that could replay an old state could make the enclave accept a
  replayed request or reuse a counter (and so an AES-GCM IV) under the same key.
- **One enclave instance per channel.** A channel exists in the instance that made it; with
  several enclave instances the load balancer must route ``/VAU/<cid>`` by CID (a CID unknown
  to an instance is answered 404 and the wallet starts a new handshake).

An encrypted request's plaintext is a CBOR map ``{"op": tstr, "session": tstr, "args": map}``;
the response's is ``{"ok": result}`` or ``{"error": {"status", "error",
"error_description"}}``. The host cannot read the request, so it sends the op, the device
session and the op's routing arguments in the outer request too and builds the
:class:`~healthid.enclave.api.VauContext` from them; :func:`check_context` refuses a request
whose inside says otherwise, and a channel serves one person only.

**Whose records.** The enclave checks that the records it opens belong to the pseudonym the
context names (the vault's AEAD binds every record to its pseudonym), and that this is the
person of the device session: the context carries the session ticket the enclave issued at
the device login (healthid.enclave.sessions), and the token the wallet sent inside the channel
must hash to it. A host cannot cross-wire sessions or make one up. (It still relays the
wallet API's plain requests, which carry the session token: a host that copies a token from
there can use it on a channel of its own while the session lives; see the enclave issue's
note on moving session-bearing calls into the channel.)
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import date
from typing import Final

from cryptography.hazmat.primitives.asymmetric import ec

from healthid.enclave import api
from healthid.enclave.id_token import claim_values
from healthid.enclave.registry.model import Policyholder
from healthid.enclave.vault import VaultError
from healthid.protocol import device_auth
from healthid.protocol.vau import (
    Environment,
    KemMode,
    ServerConfig,
    ServerHandshake,
    ServerPrivateKeys,
    ServerSession,
    VauError,
    VauExpiredError,
    error_body,
    es256_signer,
    server,
    sign_public_keys,
)
from healthid.protocol.vau import cbor as vau_cbor
from healthid.protocol.vau.cbor import CborValue
from healthid.protocol.vau.primitives import RandomBytes

HANDSHAKE_TTL: Final = 60  # seconds from M1 to M3
CHANNEL_TTL: Final = 15 * 60  # seconds a channel lives after M4 (then: a new handshake)
MAX_HANDSHAKES: Final = 4_096  # open handshakes in memory (each holds M1 ‖ M2, ~4 KB)
MAX_CHANNELS: Final = 50_000  # open channels in memory (each ~0.5 KB)
KEY_VALIDITY: Final = 7 * 24 * 3600  # exp - iat of the signed VAU keys (lib-vau: ≤ 30 days)
KEY_BACKDATE: Final = 300  # iat lies this far back, for wallets whose clock is behind
KEY_ROTATION: Final = 24 * 3600  # new VAU keys after this long (open handshakes finish)
MAX_REQUEST_PLAINTEXT: Final = 128 * 1024  # one inner request (an eGK chain at most)
CID_BYTES: Final = 32  # the CID is 64 hex digits: unguessable, and the Go client's pattern
MAX_OP_CHARS: Final = 32
MAX_SESSION_CHARS: Final = 256
MAX_ARG_BYTES: Final = 8 * 1024  # one certificate, signature or routing argument
MAX_INTERMEDIATES: Final = 4
MAX_CLAIMS: Final = 64  # claim names per list of a consent screen
KEYS_COMMENT: Final = "healthid enclave VAU keys (signed with the attested identity key)"
UNKNOWN_CID = "unknown_cid"
_INTERNAL: dict[str, CborValue] = {
    "status": 500,
    "error": "server_error",
    "error_description": "internal enclave error",
}
_log = logging.getLogger(__name__)


def wall_clock() -> int:
    return int(time.time())


# -- the operations ----------------------------------------------------------------------------
class OpRefused(Exception):  # noqa: N818 - a refusal, answered inside the channel
    """An operation refused; answered to the wallet inside the channel (safe to show)."""

    def __init__(self, status: int, error: str, description: str, *, outcome: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description
        self.outcome = outcome


@dataclass(frozen=True, kw_only=True)
class InnerRequest:
    """The plaintext of an encrypted request."""

    op: str
    session: str
    args: dict[str, CborValue]


@dataclass(frozen=True, kw_only=True)
class OpResult:
    """An answered operation: the wallet's result and what the host may learn (egk_prove)."""

    result: CborValue
    lookup: api.IdentityLookup | None = None
    login: api.LoginGrant | None = None  # the host's part of a channel login


@dataclass(frozen=True, kw_only=True)
class EnclaveAccess:
    """What the operations may do inside the enclave (the Enclave's own methods)."""

    open_policyholder: Callable[[api.SealedPolicyholder], Policyholder]
    open_history: Callable[
        [api.SealedPolicyholder, Sequence[api.SealedHistoryEvent]], list[api.HistoryEvent]
    ]
    egk_prove: Callable[[bytes, bytes, bytes, tuple[bytes, ...]], Awaitable[api.IdentityLookup]]
    today: Callable[[], date]
    # the pseudonym of a session (its ticket, the token the wallet sent); raises if refused
    session_owner: Callable[[bytes | None, str], str]
    # a device login through the channel: (the wallet's result, the host's grant)
    login: Callable[[api.LoginRequest], Awaitable[tuple[CborValue, api.LoginGrant]]]


def _bad(description: str) -> OpRefused:
    return OpRefused(400, "invalid_request", description, outcome="invalid_request")


def parse_inner(plaintext: bytes) -> InnerRequest:
    """The inner request; anything else is refused inside the channel (400)."""
    try:
        m = vau_cbor.decode_map(plaintext, max_size=MAX_REQUEST_PLAINTEXT)
    except VauError:
        raise _bad("the request inside the channel is not a CBOR map") from None
    op, session, args = m.get("op"), m.get("session"), m.get("args")
    if set(m) != {"op", "session", "args"}:
        raise _bad("the request inside the channel needs exactly op, session and args")
    if not isinstance(op, str) or not 0 < len(op) <= MAX_OP_CHARS:
        raise _bad("op must be a short text")
    if not isinstance(session, str) or len(session) > MAX_SESSION_CHARS:
        raise _bad("session must be a text")
    if not isinstance(args, dict):
        raise _bad("args must be a map")
    return InnerRequest(op=op, session=session, args=args)


def check_context(inner: InnerRequest, context: api.VauContext) -> None:
    """The outer request (as the host says) must be what the wallet sent inside.

    The op, the device session token and every routing argument must be equal, so the host
    cannot move a request into another context; the sealed records must be those of the
    person the context names.
    """
    mismatch = OpRefused(
        400,
        "invalid_request",
        "the request does not match its outer headers",
        outcome="context_mismatch",
    )
    if inner.op != context.op or inner.op not in api.VAU_OPS:
        raise mismatch
    # a session op carries the session token inside and its bearer outside (the host never
    # sees the token of a session opened through the channel)
    bearer = device_auth.session_bearer(inner.session) if inner.session else ""
    if not hmac.compare_digest(bearer.encode(), context.session.encode()):
        raise mismatch
    expected = api.VAU_OP_ARGS[inner.op]
    outer = dict(context.args)
    if len(outer) != len(context.args) or set(outer) != set(expected):
        raise mismatch
    for name, value in outer.items():
        if inner.args.get(name) != value:
            raise mismatch
    if inner.op in api.VAU_SESSION_OPS:
        sealed = context.sealed
        if not context.session or context.pseudonym is None or sealed is None:
            raise mismatch
        if sealed.pseudonym != context.pseudonym:
            raise OpRefused(
                403, "access_denied", "the records are not this person's", outcome="foreign_data"
            )


def _blob(args: dict[str, CborValue], name: str) -> bytes:
    value = args.get(name)
    if not isinstance(value, bytes) or not 0 < len(value) <= MAX_ARG_BYTES:
        raise _bad(f"{name} must be a byte string of at most {MAX_ARG_BYTES} bytes")
    return value


async def _egk_prove(
    access: EnclaveAccess, inner: InnerRequest, context: api.VauContext
) -> OpResult:
    chain = inner.args.get("intermediates", [])
    if not isinstance(chain, list) or len(chain) > MAX_INTERMEDIATES:
        raise _bad(f"intermediates must be a list of at most {MAX_INTERMEDIATES} certificates")
    if not all(isinstance(c, bytes) and 0 < len(c) <= MAX_ARG_BYTES for c in chain):
        raise _bad("intermediates must be certificates (DER)")
    if not context.challenge:
        raise _bad("no enrolment challenge")
    certificate, signature = _blob(inner.args, "certificate"), _blob(inner.args, "signature")
    try:
        lookup = await access.egk_prove(
            certificate,
            signature,
            context.challenge,
            tuple(c for c in chain if isinstance(c, bytes)),
        )
    except api.ProofRejected as exc:
        raise OpRefused(403, "access_denied", str(exc), outcome="proof_rejected") from None
    return OpResult(result={"certificate": "verified", "method": lookup.method}, lookup=lookup)


async def _login(access: EnclaveAccess, inner: InnerRequest, context: api.VauContext) -> OpResult:
    """The device's signature (inside) over the enclave's challenge, for the device record
    and counter the host names (outside): the session token goes back inside only."""
    request = context.login
    counter = dict(context.args).get("counter", "")
    if request is None or not counter.isdigit() or len(counter) > 19:
        raise _bad("no login context")
    signature = _blob(inner.args, "signature")
    try:
        result, grant = await access.login(
            replace(request, counter=int(counter), signature=signature)
        )
    except api.SessionRefused:
        raise OpRefused(
            401, "unauthorized", "device authentication failed", outcome="login_refused"
        ) from None
    return OpResult(result=result, login=grant)


def _holder(access: EnclaveAccess, context: api.VauContext) -> Policyholder:
    if context.sealed is None:
        raise _bad("no records")
    try:
        return access.open_policyholder(context.sealed)
    except (VaultError, ValueError, TypeError):
        raise OpRefused(
            403, "access_denied", "the records are not this person's", outcome="foreign_data"
        ) from None


def _me(access: EnclaveAccess, context: api.VauContext) -> OpResult:
    holder = _holder(access, context)
    return OpResult(
        result={
            "given_name": holder.given_name,
            "family_name": holder.family_name,
            "kvnr": holder.kvnr,
            "birth_date": holder.birth_date,
        }
    )


def _consent_claims(
    access: EnclaveAccess, inner: InnerRequest, context: api.VauContext
) -> OpResult:
    claims = context.claims
    if claims is None or max(len(claims.essential), len(claims.optional)) > MAX_CLAIMS:
        raise _bad("no requested claims")
    values = claim_values(_holder(access, context), access.today())

    def shown(names: tuple[str, ...]) -> CborValue:
        return [{"claim": n, "value": values.get(n)} for n in names]

    return OpResult(
        result={
            "client_id": inner.args["client_id"],
            "essential": shown(claims.essential),
            "optional": shown(claims.optional),
        }
    )


def _history(access: EnclaveAccess, context: api.VauContext) -> OpResult:
    if context.sealed is None:
        raise _bad("no records")
    try:
        events = access.open_history(context.sealed, context.history)
    except (VaultError, ValueError, TypeError, KeyError):
        raise OpRefused(
            403, "access_denied", "the history is not this person's", outcome="foreign_data"
        ) from None
    return OpResult(
        result={
            "events": [
                {"kind": e.kind, "at": e.at, "device_id": e.device_id, "detail": e.detail}
                for e in events
            ]
        }
    )


async def run_op(access: EnclaveAccess, inner: InnerRequest, context: api.VauContext) -> OpResult:
    """One checked operation (:func:`check_context` has passed)."""
    if inner.op == api.VAU_OP_EGK_PROVE:
        return await _egk_prove(access, inner, context)
    if inner.op == api.VAU_OP_ME:
        return _me(access, context)
    if inner.op == api.VAU_OP_CONSENT_CLAIMS:
        return _consent_claims(access, inner, context)
    if inner.op == api.VAU_OP_HISTORY:
        return _history(access, context)
    if inner.op == api.VAU_OP_LOGIN:
        return await _login(access, inner, context)
    raise _bad("unknown op")  # status is answered by the endpoint itself


# -- the channel state ---------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True, slots=True)
class _Handshake:
    config: ServerConfig  # the keys M2 went out with (they may rotate before M3)
    state: ServerHandshake


@dataclass(frozen=True, kw_only=True, slots=True)
class _Channel:
    session: ServerSession
    pseudonym: str | None = None  # whose records it carries (bound on first use)


def _refusal(exc: VauError, outcome: str | None = None) -> api.VauReply:
    return api.VauReply(
        status=exc.status_code, body=error_body(exc), outcome=outcome or exc.public_reason
    )


def _unknown_cid() -> api.VauReply:
    """No handshake or channel under this CID, or it expired: 404 with ASL code 9."""
    body = error_body(VauExpiredError("unknown CID"))  # ASL 9 "unknown CID"
    return api.VauReply(status=404, body=body, outcome=UNKNOWN_CID)


class VauEndpoint:
    """Handshakes and channels of one enclave instance, in memory."""

    def __init__(
        self,
        identity: ec.EllipticCurvePrivateKey,
        *,
        access: EnclaveAccess,
        environment: Environment,
        clock: Callable[[], int] = wall_clock,
        rng: RandomBytes = secrets.token_bytes,
        mode: KemMode = KemMode.MLKEM768,
        max_handshakes: int = MAX_HANDSHAKES,
        max_channels: int = MAX_CHANNELS,
    ) -> None:
        if not isinstance(identity.curve, ec.SECP256R1):
            raise ValueError("the VAU keys are signed with ES256: the identity key is P-256")
        self._sign = es256_signer(identity)
        self._access = access
        self._environment = environment
        self._clock = clock
        self._rng = rng
        self._mode = mode
        self._max_handshakes = max_handshakes
        self._max_channels = max_channels
        self._handshakes: OrderedDict[str, _Handshake] = OrderedDict()
        self._channels: OrderedDict[str, _Channel] = OrderedDict()
        self._config, self._config_since = self._new_config(), clock()

    def _new_config(self) -> ServerConfig:
        now = self._clock()
        keys = ServerPrivateKeys.generate(self._rng)
        public = keys.public_keys(
            iat=now - KEY_BACKDATE, exp=now - KEY_BACKDATE + KEY_VALIDITY, comment=KEYS_COMMENT
        )
        return ServerConfig(
            signed_public_keys=sign_public_keys(public, self._mode, self._sign),
            private_keys=keys,
            environment=self._environment,
            clock=self._clock,
            rng=self._rng,
            mode=self._mode,
            handshake_ttl=HANDSHAKE_TTL,
            session_ttl=CHANNEL_TTL,
            max_plaintext_size=MAX_REQUEST_PLAINTEXT,
        )

    def _current(self) -> ServerConfig:
        if self._clock() - self._config_since >= KEY_ROTATION:
            self._config, self._config_since = self._new_config(), self._clock()
        return self._config

    @property
    def open_handshakes(self) -> int:
        return len(self._handshakes)

    @property
    def open_channels(self) -> int:
        return len(self._channels)

    def public_keys(self) -> bytes:
        return self._current().signed_public_keys

    def _expire(self) -> None:
        """Drop what has expired; every entry of a map has the same TTL, so the oldest go
        first (insertion order is expiry order)."""
        now = self._clock()
        while self._handshakes:
            first = next(iter(self._handshakes.values()))
            if now < first.state.expires_at:
                break
            self._handshakes.popitem(last=False)
        while self._channels:
            oldest = next(iter(self._channels.values()))
            if now < oldest.session.expires_at:
                break
            self._channels.popitem(last=False)

    def _new_cid(self) -> str:
        return self._rng(CID_BYTES).hex()

    # -- M1 → M2, M3 → M4 ---------------------------------------------------------------------
    def handshake(self, m1: bytes) -> api.VauReply:
        config = self._current()
        try:
            m2, state = server.receive_m1(config, m1)
        except VauError as exc:
            return _refusal(exc)
        self._expire()
        while len(self._handshakes) >= self._max_handshakes:
            self._handshakes.popitem(last=False)  # the oldest open handshake gives way
        cid = self._new_cid()
        self._handshakes[cid] = _Handshake(config=config, state=state)
        return api.VauReply(status=200, body=m2, cid=cid)

    def finish(self, cid: str, m3: bytes) -> api.VauReply:
        self._expire()
        handshake = self._handshakes.pop(cid, None)  # single use, whatever happens next
        if handshake is None:
            return _unknown_cid()
        try:
            m4, session = server.receive_m3(handshake.config, handshake.state, m3)
        except VauError as exc:
            return _refusal(exc)
        while len(self._channels) >= self._max_channels:
            self._channels.popitem(last=False)  # the oldest channel gives way
        self._channels[cid] = _Channel(session=session)
        return api.VauReply(status=200, body=m4)

    # -- encrypted requests -----------------------------------------------------------------
    async def request(self, cid: str, message: bytes, context: api.VauContext) -> api.VauReply:
        """Decrypt (replay, reordering and tampering refused), check the context, run the
        operation, encrypt the answer. The request counter is spent once the message
        authenticates, whatever the operation does."""
        self._expire()
        channel = self._channels.get(cid)
        if channel is None:
            return _unknown_cid()
        config = self._config
        try:
            session, request = server.decrypt_request(config, channel.session, message)
        except VauError as exc:
            return _refusal(exc)
        channel = replace(channel, session=session)
        self._channels[cid] = channel
        outcome, lookup, login = api.VAU_OK, None, None
        try:
            inner = parse_inner(request.plaintext)
            check_context(inner, context)
            if inner.op in api.VAU_SESSION_OPS:
                self._check_session(inner, context)
            channel = self._bind(cid, channel, inner, context)
            if inner.op == api.VAU_OP_STATUS:
                result: CborValue = {"status": "ok", "expires_at": session.expires_at}
            else:
                answered = await run_op(self._access, inner, context)
                result, lookup, login = answered.result, answered.lookup, answered.login
            plaintext = vau_cbor.encode({"ok": result})
        except OpRefused as exc:
            outcome = exc.outcome
            error: CborValue = {
                "status": exc.status,
                "error": exc.error,
                "error_description": exc.description,
            }
            plaintext = vau_cbor.encode({"error": error})
        except Exception as exc:  # an operation's bug must not leave the request unanswered
            outcome, lookup, login = "internal_error", None, None
            _log.error("vau: %s failed with %s", context.op[:MAX_OP_CHARS], type(exc).__name__)
            plaintext = vau_cbor.encode({"error": _INTERNAL})
        return self._answer(cid, request.counter, plaintext, outcome, lookup, login)

    def _check_session(self, inner: InnerRequest, context: api.VauContext) -> None:
        """The session is one this enclave issued, for the token the wallet sent, and the
        records are its person's."""
        try:
            owner = self._access.session_owner(context.ticket, inner.session)
        except api.EnclaveError:
            raise OpRefused(
                401, "access_denied", "the device session is not valid", outcome="session_refused"
            ) from None
        if owner != context.pseudonym:
            raise OpRefused(
                403, "access_denied", "the records are not this person's", outcome="foreign_data"
            )

    def _bind(
        self, cid: str, channel: _Channel, inner: InnerRequest, context: api.VauContext
    ) -> _Channel:
        """A channel serves the first person whose records it carried, only (each request's
        device session is checked against the outer one by :func:`check_context`)."""
        if inner.op not in api.VAU_SESSION_OPS:
            return channel
        if channel.pseudonym is None:
            channel = replace(channel, pseudonym=context.pseudonym)
            self._channels[cid] = channel
            return channel
        if channel.pseudonym != context.pseudonym:
            raise OpRefused(
                403, "access_denied", "this channel serves another person", outcome="channel_bound"
            )
        return channel

    def _answer(
        self,
        cid: str,
        counter: int,
        plaintext: bytes,
        outcome: str,
        lookup: api.IdentityLookup | None,
        login: api.LoginGrant | None = None,
    ) -> api.VauReply:
        channel = self._channels.get(cid)  # the latest state (an operation may have awaited)
        if channel is None:
            return _unknown_cid()
        try:
            session, response = server.encrypt_response(
                self._config, channel.session, counter, plaintext
            )
        except VauError as exc:
            return _refusal(exc)
        self._channels[cid] = replace(channel, session=session)
        return api.VauReply(status=200, body=response, outcome=outcome, lookup=lookup, login=login)
