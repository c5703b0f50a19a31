"""The narrow, typed interface between the host (untrusted) and the enclave (trusted).

Everything that crosses it is ciphertext, pseudonyms, keyed hashes, counts or errors that name
rows and fields only. The in-process implementation (embedded default) lives in
``healthid.enclave.service``; the RPC transport of the enclave issue implements the same
Protocol. Host code imports this module and nothing else from ``healthid.enclave``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

import cbor2

from healthid.protocol.audit import AuditEntry, SignedCheckpoint
from healthid.protocol.oauth.token import TokenGrant

TEE_SIMULATED = "simulated"
MAX_REPORTED_ERRORS = 10_000  # errors listed per import; the rest are counted


class EnclaveError(Exception):
    """The enclave refused a request. The message is safe to show: no personal data."""


class IdentityNotConfirmed(EnclaveError):  # noqa: N818 - a refusal, named as users see it
    """No single insured registry entry fits the proof. Deliberately says nothing more."""

    def __init__(self, detail: str = "the identity could not be confirmed") -> None:
        super().__init__(detail)


class ProofRejected(EnclaveError):  # noqa: N818 - a refusal, named as users see it
    """The identity proof itself is invalid (bad signature, untrusted card, expired ...)."""


class SessionRefused(EnclaveError):  # noqa: N818 - a refusal, named as users see it
    """A proof ticket, device binding, login challenge or signature, or session ticket is
    refused (see "enclave-vouched sessions"). The message names the check, nothing personal."""


class UnknownImport(EnclaveError):  # noqa: N818 (a refusal, named after what is missing)
    """The import id is unknown or has expired."""


@dataclass(frozen=True, kw_only=True)
class EnclaveStatus:
    tee: str  # "simulated" (development, no protection) or "sgx"
    root_key_id: str
    version: str
    warning: str | None = None


@dataclass(frozen=True, kw_only=True)
class RowError:
    """A problem in an import file: the row and field, never the value (it may be personal)."""

    row: int  # CSV: line number (header = 1); JSON: 1-based array position; 0: the file
    field: str
    reason: str

    def __str__(self) -> str:
        where = "file" if self.row == 0 else f"row {self.row}"
        return f"{where}, field {self.field}: {self.reason}"


@dataclass(frozen=True, kw_only=True)
class SealedRecord:
    record_type: str
    version: int
    ciphertext: bytes


@dataclass(frozen=True, kw_only=True)
class SealedPolicyholder:
    """Everything the host stores about one policyholder: opaque to the host."""

    pseudonym: str
    kvnr_index: bytes
    root_key_id: str
    wrapped_key: bytes | None  # None: the data key was deleted (crypto-shredded)
    records: tuple[SealedRecord, ...]
    lookup_indexes: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True, kw_only=True)
class PreparedImport:
    """An import file read by the enclave; its chunks are validated and sealed on request."""

    import_id: str
    format: str
    row_count: int
    chunk_count: int
    errors: tuple[RowError, ...]  # errors of the file's structure (rows not even read)
    errors_truncated: int = 0


@dataclass(frozen=True, kw_only=True)
class SealedChunk:
    """One chunk of an import: the sealed valid rows and the errors of the others."""

    rows: tuple[int, ...]  # row numbers, aligned with ``sealed``
    sealed: tuple[SealedPolicyholder, ...]
    errors: tuple[RowError, ...]


@dataclass(frozen=True, kw_only=True)
class IdentityLookup:
    """An identity proof held in the enclave, and the blind indexes to fetch candidates for."""

    proof_id: str
    method: str  # "eid" | "egk"
    lookups: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, kw_only=True)
class EidStarted:
    """What the wallet needs for its TC Token (TR-03124); ``handle`` stays with the host."""

    handle: str
    psk_id: str
    psk_key: str = field(repr=False)
    ecard_server_address: str | None = None


@dataclass(frozen=True, kw_only=True)
class IdentityMatch:
    pseudonym: str
    method: str
    new_lookup_indexes: tuple[tuple[str, bytes], ...] = ()  # e.g. the eID restricted-ID link
    # the enclave's word that this pseudonym proved its identity by ``method`` at
    # ``proofed_at``: what :meth:`EnclaveClient.bind_device` needs (see "Enclave-vouched
    # sessions" below)
    proof_ticket: bytes = field(default=b"", repr=False)
    proofed_at: int = 0


@dataclass(frozen=True, kw_only=True)
class HistoryEvent:
    """One entry of the policyholder's own history (sealed for them by the enclave)."""

    kind: str  # enrolled | device_bound | device_revoked | login | recovered
    at: int
    device_id: str | None = None
    detail: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "at": self.at,
            "device_id": self.device_id,
            "detail": self.detail,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> HistoryEvent:
        return cls(
            kind=str(data["kind"]),
            at=int(str(data["at"])),
            device_id=None if data.get("device_id") is None else str(data["device_id"]),
            detail=None if data.get("detail") is None else str(data["detail"]),
        )


@dataclass(frozen=True, kw_only=True)
class SealedHistoryEvent:
    event_id: str
    created_at: int
    ciphertext: bytes


@dataclass(frozen=True, kw_only=True)
class IdTokenRequest:
    """What the enclave needs to build, sign and encrypt one ID token (no personal data:
    the claim values come from the sealed master data, opened inside).

    Whom and how strongly: the session ``ticket`` the enclave issued at the device login the
    consent rests on (its pseudonym must be ``sealed``'s; ``auth_time`` and the assurance are
    the ticket's, downgraded to single sign-on when ``single_sign_on`` or when the login is
    older than a fresh one can be). For whom: ``rp_statements``, the relying party's trust
    chain as fetched (the master's subordinate statement, the RP's entity configuration),
    which an enclave with a pinned federation anchor verifies itself and takes the encryption
    key from; ``rp_encryption_jwk`` is believed only by an enclave without one (development).
    """

    sealed: SealedPolicyholder
    issuer: str
    grant: TokenGrant
    ticket: bytes = field(repr=False)
    single_sign_on: bool
    kid: str  # the active token signing key
    x5c: tuple[str, ...]  # its component-PKI chain
    rp_statements: tuple[str, ...]
    rp_encryption_jwk: dict[str, object]


# -- enclave-vouched sessions (issue #5: the host with root is not trusted) -----------------
# The host stores devices and sessions, but it is not the host's word whose they are:
# 1. identity proofing ends in the enclave, which answers a match with a *proof ticket*
#    (MAC over pseudonym, method, time; short-lived);
# 2. binding a device needs that ticket; the enclave returns a *binding*, a MAC over the
#    pseudonym, the device id, the device key and what the login's assurance rests on, which
#    the host stores with the device;
# 3. a login signs a challenge the enclave issued (MAC'd, timed, single use inside the
#    enclave); the enclave checks the binding and the signature itself and issues the session
#    token and a *session ticket* (MAC over the token's hash, the pseudonym, the device, the
#    login time, the assurance inputs and the expiry);
# 4. every operation on a person's data checks the ticket: minting an ID token (whose
#    pseudonym, which assurance), and the VAU channel's session operations (the wallet's token
#    inside the channel must hash to the ticket's).
# A host can therefore neither log in as a device it does not hold the key of, nor point a
# session at another person, nor replay an old login signature. Tickets are MACs, not
# ciphertext: what they carry is not personal (pseudonyms, ids, times), and the host reads it
# with :func:`read_session_ticket`. The MAC keys derive from the root key, so every enclave
# instance holding it accepts them.
SESSION_TICKET_VERSION = 1
TICKET_TAG_BYTES = 32  # HMAC-SHA-256
MAX_SESSION_SECONDS = 12 * 60 * 60 + 300  # the longest SSO window (settings) plus a session
MAX_LOGIN_CHALLENGES = 256  # challenges per login_challenges request


@dataclass(frozen=True, kw_only=True)
class SessionTicket:
    """What a session ticket says (readable by the host; only the enclave can make one)."""

    pseudonym: str
    device_id: str
    auth_time: int
    expires_at: int
    key_class: str
    proofing_method: str
    proofed_at: int
    session_hash: bytes = field(repr=False)  # SHA-256 of the session token
    # opened through the VAU channel: the token went to the wallet encrypted, the host knows
    # only its bearer (healthid.protocol.device_auth.session_bearer); only such sessions may
    # read the person's data through the channel
    channel: bool = False


def read_session_ticket(ticket: bytes) -> SessionTicket:
    """The fields of ``ticket`` without checking its MAC (the host's view; the enclave checks).

    Raises ValueError for anything that is not a session ticket.
    """
    if len(ticket) <= TICKET_TAG_BYTES or len(ticket) > 1024:
        raise ValueError("not a session ticket")
    try:
        fields_ = cbor2.loads(ticket[:-TICKET_TAG_BYTES])
    except (cbor2.CBORDecodeError, ValueError, TypeError, EOFError):
        raise ValueError("not a session ticket") from None
    if not (
        isinstance(fields_, list) and len(fields_) == 10 and fields_[0] == SESSION_TICKET_VERSION
    ):
        raise ValueError("not a session ticket")
    _, p, d, t, x, k, m, pa, h, c = fields_
    if not (
        all(isinstance(v, str) for v in (p, d, k, m))
        and all(isinstance(v, int) and not isinstance(v, bool) for v in (t, x, pa))
        and isinstance(h, bytes)
        and isinstance(c, bool)
    ):
        raise ValueError("not a session ticket")
    return SessionTicket(
        pseudonym=p,
        device_id=d,
        auth_time=t,
        expires_at=x,
        key_class=k,
        proofing_method=m,
        proofed_at=pa,
        session_hash=h,
        channel=c,
    )


@dataclass(frozen=True, kw_only=True)
class DeviceBindingRequest:
    """Bind a device key to the person a proof ticket names (the enrolment's last step)."""

    proof_ticket: bytes = field(repr=False)
    device_id: str
    public_key: bytes  # SubjectPublicKeyInfo DER, P-256
    key_class: str  # as the host verified the device attestation
    attestation_format: str


@dataclass(frozen=True, kw_only=True)
class BoundDeviceKey:
    """The binding (store it with the device) and whom it binds to."""

    pseudonym: str
    proofing_method: str
    proofed_at: int
    binding: bytes = field(repr=False)


@dataclass(frozen=True, kw_only=True)
class LoginRequest:
    """A device's login: its stored record and binding, the enclave's challenge it signed."""

    device_id: str
    pseudonym: str
    public_key: bytes
    key_class: str
    attestation_format: str
    proofing_method: str
    proofed_at: int
    sign_count: int  # the stored counter (App Attest assertions must exceed it)
    binding: bytes = field(repr=False)
    challenge: bytes
    counter: int
    signature: bytes
    session_ttl: int
    owner: SealedPolicyholder | None  # to seal the login into the person's history


@dataclass(frozen=True, kw_only=True)
class LoginGrant:
    """A verified login: the session token (for the wallet), its ticket (for the host to keep
    with the session) and the sealed history event of the login."""

    session: str = field(repr=False)
    ticket: bytes = field(repr=False)
    history: SealedHistoryEvent | None


class EnclaveClient(Protocol):
    """What the host may ask of the enclave."""

    async def status(self) -> EnclaveStatus: ...

    async def prepare_import(
        self, data: bytes, *, filename: str, fmt: str | None, accept_test_kvnr: bool
    ) -> PreparedImport:
        """Read a registry file inside the enclave and start validating and sealing it."""
        ...

    async def seal_import_chunk(self, import_id: str, index: int) -> SealedChunk:
        """Validate and seal chunk ``index`` (chunks are asked for in order, 0, 1, ...).

        Each valid row gets a fresh pseudonym and data key. A KVNR seen in an earlier chunk
        of the same import is an error.
        """
        ...

    async def discard_import(self, import_id: str) -> None: ...

    async def verify_policyholders(self, sealed: list[SealedPolicyholder]) -> list[str]:
        """Decrypt each policyholder's records; return the pseudonyms that fail integrity."""
        ...

    async def login_challenges(self, count: int) -> tuple[bytes, ...]:
        """``count`` fresh login challenges (MAC'd and timed by the enclave, single use)."""
        ...

    async def bind_device(self, request: DeviceBindingRequest) -> BoundDeviceKey:
        """Bind a device key to the person of ``request.proof_ticket``."""
        ...

    async def login(self, request: LoginRequest) -> LoginGrant:
        """Verify a device login (binding, challenge, signature) and issue its session."""
        ...

    async def egk_prove(
        self,
        *,
        certificate: bytes,
        signature: bytes,
        challenge: bytes,
        intermediates: tuple[bytes, ...] = (),
    ) -> IdentityLookup:
        """Verify the eGK's C.CH.AUT signature over ``challenge``; ProofRejected if invalid."""
        ...

    async def eid_start(self) -> EidStarted:
        """Open an eID-Server session (useID) for an identity proof with the eID card."""
        ...

    async def eid_collect(self, handle: str) -> IdentityLookup | None:
        """getResult: the proof once the user has finished, None while they have not."""
        ...

    async def match_identity(
        self, proof_id: str, candidates: list[SealedPolicyholder]
    ) -> IdentityMatch:
        """The one insured candidate fitting the proof, or IdentityNotConfirmed."""
        ...

    async def seal_history(
        self, sealed: SealedPolicyholder, event: HistoryEvent
    ) -> SealedHistoryEvent: ...

    async def mint_id_token(self, request: IdTokenRequest) -> str:
        """The ID token as a JWE for the relying party (signed and encrypted inside)."""
        ...

    async def attest(self, nonce: bytes) -> bytes:
        """The attestation document (JSON) for ``nonce``: the enclave's public keys bound
        into its evidence (healthid.protocol.tee); 16 to 64 bytes of nonce."""
        ...

    async def audit_head(self) -> SignedCheckpoint | None:
        """The last audit checkpoint the enclave signed (None before the first)."""
        ...

    async def sign_audit_checkpoint(self, request: AuditCheckpointRequest) -> SignedCheckpoint:
        """Sign the audit chain's head after ``request.entries``; EnclaveError if they do not
        extend the enclave's last signed head."""
        ...

    # -- the VAU channel into the enclave (issue #6; see VauContext below) ------------------
    async def vau_public_keys(self) -> bytes:
        """The enclave's current ``SignedPublicVauKeys`` (CBOR), signed with its attested
        identity key: what M2 carries, published for wallets and auditors."""
        ...

    async def vau_handshake(self, m1: bytes) -> VauReply:
        """M1 → M2: a new channel; the reply carries its ``cid`` (or a refusal)."""
        ...

    async def vau_finish(self, cid: str, m3: bytes) -> VauReply:
        """M3 → M4 for channel ``cid`` (its handshake is consumed, whatever the outcome)."""
        ...

    async def vau_request(self, cid: str, message: bytes, context: VauContext) -> VauReply:
        """One encrypted request on channel ``cid`` with the host's ``context``; the reply is
        the encrypted response (or a refusal of the message)."""
        ...


class EnclaveUnavailable(EnclaveError):  # noqa: N818 - the name says the state
    """The enclave process cannot be reached or did not answer in time: the host answers 503.

    Raised by the RPC client (``healthid.enclave.rpc``), never by the enclave's own logic.
    Whether the request took effect inside the enclave is unknown.
    """


# -- audit trail (issue #5 item 5) ----------------------------------------------------------
# The enclave's audit key signs checkpoints of the host's hash-chained audit log
# (healthid.protocol.audit). Its public JWK lies beside the sealed key under the enclave
# directory; an auditor should pin a copy obtained from the attested enclave instead.
AUDIT_PUBLIC_JWK_FILE = "audit-key.public.jwk"
MAX_AUDIT_CHECKPOINT_ENTRIES = 10_000  # entries one signing request may add


@dataclass(frozen=True, kw_only=True)
class AuditCheckpointRequest:
    """The entries after the enclave's last checkpoint, in order: it recomputes the chain from
    its own last signed head and signs only an exact extension of it."""

    entries: tuple[AuditEntry, ...]


class AuditWitness(Protocol):
    """What the host may ask of the enclave's audit signer."""

    async def audit_head(self) -> SignedCheckpoint | None:
        """The last checkpoint the enclave signed (None before the first)."""
        ...

    async def sign_audit_checkpoint(self, request: AuditCheckpointRequest) -> SignedCheckpoint:
        """Sign the head after ``request.entries``; EnclaveError if they do not extend it."""
        ...


# -- the VAU channel into the enclave (issue #6 items 2-4) ----------------------------------
# The wallet's end-to-end channel (gematik VAU/ASL, healthid.protocol.vau) ends inside the
# enclave: channel state (keys, counters) stays in enclave memory, the host relays ciphertext
# by channel id. An encrypted request names an operation (``op``); the host, which cannot read
# the request, adds what the operation needs as a VauContext built from the outer request's
# non-personal headers (the op, the device session, routing arguments such as an enrolment id)
# and its stores (sealed records). The enclave checks that the request inside says the same.
VAU_OP_STATUS = "status"  # the channel itself (gematik "GET /VAU-Status"): no context
VAU_OP_EGK_PROVE = "egk_prove"  # identity proofing with the eGK: the card's certificate
VAU_OP_ME = "me"  # the person's own display data
VAU_OP_CONSENT_CLAIMS = "consent_claims"  # the consent screen: requested claims and values
VAU_OP_HISTORY = "history"  # the person's own history, decrypted
VAU_OP_LOGIN = "login"  # a device login whose session token only the wallet receives
VAU_OPS = frozenset(
    {
        VAU_OP_STATUS,
        VAU_OP_EGK_PROVE,
        VAU_OP_ME,
        VAU_OP_CONSENT_CLAIMS,
        VAU_OP_HISTORY,
        VAU_OP_LOGIN,
    }
)
VAU_SESSION_OPS = frozenset({VAU_OP_ME, VAU_OP_CONSENT_CLAIMS, VAU_OP_HISTORY})
# the routing arguments an op's outer request carries (and its inner request repeats)
VAU_OP_ARGS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        VAU_OP_STATUS: (),
        VAU_OP_EGK_PROVE: ("enrolment_id",),
        VAU_OP_ME: (),
        VAU_OP_CONSENT_CLAIMS: ("client_id", "request_uri"),
        VAU_OP_HISTORY: (),
        # the counter is routing too: the host advances the device's counter with it
        VAU_OP_LOGIN: ("challenge_id", "device_id", "counter"),
    }
)
VAU_OK = "ok"  # VauReply.outcome of an answered request


@dataclass(frozen=True, kw_only=True)
class RequestedClaims:
    """The claim names a pending authorization asks for (the PAR's; no values)."""

    essential: tuple[str, ...]
    optional: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class VauContext:
    """What the host adds to one encrypted request: nothing personal, all of it checked.

    ``op``, ``session`` and ``args`` are copied from the outer request's headers; the enclave
    refuses the request unless the encrypted inner request names the same op, carries the
    same device session token and the same routing arguments. ``pseudonym`` is whom the host
    resolved ``session`` to, and ``ticket`` the session ticket the enclave issued for it at
    login (the enclave checks that the wallet's token hashes to it and takes the person from
    it); the sealed records must be that person's (``sealed``: master data
    and data key; ``history``: their sealed events). ``claims``: for ``consent_claims``, the
    pending authorization's requested claims. ``challenge``: for ``egk_prove``, the enrolment's
    challenge the card signed.
    """

    op: str
    session: str = field(default="", repr=False)
    args: tuple[tuple[str, str], ...] = ()
    pseudonym: str | None = None
    sealed: SealedPolicyholder | None = None
    history: tuple[SealedHistoryEvent, ...] = ()
    claims: RequestedClaims | None = None
    challenge: bytes | None = None
    ticket: bytes | None = field(default=None, repr=False)  # the session's (session ops)
    # ``login``: the device's record and the challenge, as for EnclaveClient.login; its
    # counter is the outer one, its signature comes from inside the channel
    login: LoginRequest | None = None


@dataclass(frozen=True, kw_only=True)
class VauReply:
    """The enclave's answer to one VAU message, for the host to send back as it is.

    ``status`` is the HTTP status: 200 with ``body`` = M2, M4 or the encrypted response, or
    the refusal's status with ``body`` = the CBOR error body (``{"MessageType": "Error",
    "ErrorCode", "ErrorMessage"}``). ``cid``: the new channel (handshake only). ``outcome``:
    :data:`VAU_OK`, or the public reason of the refusal — of the message, or of the operation
    inside an answered request (e.g. ``proof_rejected``, for the host's rate limits); never
    personal. ``lookup``: ``egk_prove`` only, the blind indexes to fetch the candidates for
    (as :meth:`EnclaveClient.egk_prove` returns them); the host then calls ``match_identity``.
    """

    status: int
    body: bytes = field(repr=False)
    cid: str | None = None
    outcome: str = VAU_OK
    lookup: IdentityLookup | None = None
    # ``login`` only: what the host keeps of the session (its ``session`` is the bearer; the
    # token itself is in the encrypted body, for the wallet)
    login: LoginGrant | None = None
