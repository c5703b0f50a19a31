"""The enclave service: implements :class:`healthid.enclave.api.EnclaveClient` in-process.

This object is what runs inside the trust boundary. In the embedded default the host calls it
directly; the enclave issue puts it behind an RPC server in its own attested process.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from healthid import __version__
from healthid.eid.client import EidClient
from healthid.enclave import api, id_token
from healthid.enclave.attestation import EvidenceProvider, make_attestation_document
from healthid.enclave.audit_signer import AuditSigner
from healthid.enclave.eid_proofing import EidProofing
from healthid.enclave.proofing import Proofing, ProvenAttributes
from healthid.enclave.registry.formats import (
    ParseOptions,
    RawRow,
    RegistryFormat,
    detect_format,
    finish_errors,
    read_rows,
    validate_row,
)
from healthid.enclave.registry.model import (
    RECORD_TYPE,
    RECORD_VERSION,
    Policyholder,
    name_birth_lookup_value,
)
from healthid.enclave.relying_parties import FederationAnchor, TrustedRelyingParties
from healthid.enclave.sealing import SIMULATED_WARNING
from healthid.enclave.sessions import Sessions
from healthid.enclave.vau_endpoint import EnclaveAccess, VauEndpoint, wall_clock
from healthid.enclave.vault import RootKey, Vault, VaultError, WrappedKey
from healthid.protocol import device_auth
from healthid.protocol.attestation import AppleConfig
from healthid.protocol.audit import SignedCheckpoint
from healthid.protocol.egk import EgkError, verify_egk_authentication
from healthid.protocol.oauth.authorize import AUTHORIZATION_CODE_TTL
from healthid.protocol.oidc.loa import (
    Assurance,
    DeviceKeyClass,
    ProofingMethod,
    derive_assurance,
    single_sign_on,
)
from healthid.protocol.tee import TeeAttestationError
from healthid.protocol.vau import Environment
from healthid.protocol.vau.cbor import CborValue

KVNR_INDEX = "kvnr"
NAME_BIRTH_INDEX = "name_birth"
MAX_PENDING_IMPORTS = 4
IDENTITY_ROLE = "identity"  # attestation claims: the enclave's identity key
AUDIT_ROLE = "audit"  # ... and the key that signs audit checkpoints
FEDERATION_ANCHOR_ROLE = "fedmaster"  # ... and the federation master keys it trusts
ANCHOR_JWK_MEMBERS = frozenset({"kty", "crv", "x", "y", "kid", "use", "alg"})
PENDING_IMPORT_TTL = 3600.0  # seconds a prepared import stays in enclave memory
IMPORT_CHUNK = 2_000  # rows per unit of work handed to a worker process
# A login older than this at the token request was not fresh at its consent (the host's
# FRESH_LOGIN_SECONDS, 120 s, plus the code's lifetime): its token says single sign-on.
FRESH_LOGIN_BOUND = 120 + AUTHORIZATION_CODE_TTL


def _ticket_assurance(ticket: api.SessionTicket) -> Assurance:
    """acr/amr of the login a session ticket vouches for (ValueError: an unknown method or
    key class)."""
    return derive_assurance(
        method=ProofingMethod(ticket.proofing_method),
        key_class=DeviceKeyClass(ticket.key_class),
        proofed_at=ticket.proofed_at,
        now=ticket.auth_time,
    )


_ChunkResult = tuple[list[tuple[int, api.SealedPolicyholder]], list[api.RowError]]


@dataclass(kw_only=True)
class _Pending:
    chunks: list[list[RawRow]]
    futures: list[asyncio.Future[_ChunkResult]] | None
    options: ParseOptions
    created: float
    next_chunk: int = 0
    seen: dict[bytes, int] = field(default_factory=dict)  # KVNR index -> first row


# -- worker processes (part of the enclave: in production they run inside it too) --------
_WORKER: Enclave | None = None


def _worker_init(root_secret: bytes, tee: str) -> None:
    global _WORKER
    _WORKER = Enclave(Vault(RootKey.from_secret(root_secret)), tee=tee)


def _worker_seal(chunk: list[RawRow], options: ParseOptions) -> _ChunkResult:
    if _WORKER is None:
        raise RuntimeError("enclave worker not initialised")
    return _WORKER.validate_and_seal(chunk, options)


class Enclave:
    """The trusted service over a :class:`Vault`."""

    def __init__(
        self,
        vault: Vault,
        *,
        root: RootKey | None = None,
        workers: int = 0,
        tee: str = api.TEE_SIMULATED,
        allow_test_kvnr: bool = False,
        clock: Callable[[], float] = time.monotonic,
        today: Callable[[], date] = lambda: datetime.now(UTC).date(),
        egk_cas: Sequence[x509.Certificate] = (),
        eid_client_factory: Callable[[], EidClient] | None = None,
        token_signer: Callable[[str, bytes], bytes] | None = None,
        identity_key: ec.EllipticCurvePrivateKey | None = None,
        audit: AuditSigner | None = None,
        evidence: EvidenceProvider | None = None,
        vau_clock: Callable[[], int] = wall_clock,
        federation: FederationAnchor | None = None,
        apple: AppleConfig | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._vault = vault
        self._wall = wall
        self._sessions = Sessions(vault, clock=wall, apple=apple)
        self._relying_parties = None if federation is None else TrustedRelyingParties(federation)
        self._root = root
        self._workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._tee = tee
        self._allow_test_kvnr = allow_test_kvnr
        self._clock = clock
        self._today = today
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self._egk_cas = tuple(egk_cas)
        self._proofing = Proofing(
            blind_index=vault.blind_index,
            open_policyholder=self.open_policyholder,
            today=today,
        )
        self._eid = EidProofing(eid_client_factory, self._proofing.begin)
        self._token_signer = token_signer
        self._identity = identity_key
        self._audit = audit
        self._evidence = evidence
        self._vau = None if identity_key is None else self._vau_endpoint(identity_key, vau_clock)

    # -- status ---------------------------------------------------------------------------
    async def status(self) -> api.EnclaveStatus:
        warning = SIMULATED_WARNING if self._tee == api.TEE_SIMULATED else None
        return api.EnclaveStatus(
            tee=self._tee, root_key_id=self._vault.root_key_id, version=__version__, warning=warning
        )

    # -- registry import ------------------------------------------------------------------
    def kvnr_index(self, kvnr: str) -> bytes:
        return self._vault.blind_index(KVNR_INDEX, kvnr)

    async def prepare_import(
        self, data: bytes, *, filename: str, fmt: str | None, accept_test_kvnr: bool
    ) -> api.PreparedImport:
        if accept_test_kvnr and not self._allow_test_kvnr:
            raise api.EnclaveError("test KVNRs are accepted in development mode only")
        try:
            registry_format = RegistryFormat(fmt) if fmt else detect_format(filename, data)
        except ValueError:
            raise api.EnclaveError(f"unknown format {fmt!r}: use csv, json or gematik") from None
        options = ParseOptions(today=self._today(), accept_test_kvnr=accept_test_kvnr)
        raw, errors = read_rows(data, registry_format)
        reported, truncated = finish_errors(errors, len(raw))
        chunks = [raw[i : i + IMPORT_CHUNK] for i in range(0, len(raw), IMPORT_CHUNK)]
        self._expire_pending()
        if len(self._pending) >= MAX_PENDING_IMPORTS:
            raise api.EnclaveError("too many imports in progress; try again later")
        import_id = secrets.token_urlsafe(16)
        self._pending[import_id] = _Pending(
            chunks=chunks,
            futures=self._start_workers(chunks, options),
            options=options,
            created=self._clock(),
        )
        return api.PreparedImport(
            import_id=import_id,
            format=registry_format.value,
            row_count=len(raw),
            chunk_count=len(chunks),
            errors=tuple(reported),
            errors_truncated=truncated,
        )

    def _start_workers(
        self, chunks: list[list[RawRow]], options: ParseOptions
    ) -> list[asyncio.Future[_ChunkResult]] | None:
        """Hand every chunk to the worker pool now, so sealing runs ahead of storing."""
        root = self._root
        if root is None or self._workers < 2 or len(chunks) < 2:
            return None  # small imports: seal inline when each chunk is asked for
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self._workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_init,
                initargs=(root.secret, self._tee),
            )
        loop = asyncio.get_running_loop()
        return [loop.run_in_executor(self._pool, _worker_seal, c, options) for c in chunks]

    async def seal_import_chunk(self, import_id: str, index: int) -> api.SealedChunk:
        self._expire_pending()
        pending = self._pending.get(import_id)
        if pending is None:
            raise api.UnknownImport("unknown or expired import id")
        if index != pending.next_chunk:
            raise api.EnclaveError(f"chunks are delivered in order; expected {pending.next_chunk}")
        pending.next_chunk += 1
        if pending.futures is not None:
            sealed, errors = await pending.futures[index]
        else:
            sealed, errors = self.validate_and_seal(pending.chunks[index], pending.options)
        pending.chunks[index] = []  # release the plaintext rows as soon as they are sealed
        kept: list[tuple[int, api.SealedPolicyholder]] = []
        for row_no, item in sealed:
            first = pending.seen.setdefault(item.kvnr_index, row_no)
            if first == row_no:
                kept.append((row_no, item))
            else:
                reason = f"duplicate KVNR (same as row {first})"
                errors.append(api.RowError(row=row_no, field="kvnr", reason=reason))
        return api.SealedChunk(
            rows=tuple(n for n, _ in kept),
            sealed=tuple(item for _, item in kept),
            errors=tuple(sorted(errors, key=lambda e: e.row)),
        )

    def validate_and_seal(self, chunk: list[RawRow], options: ParseOptions) -> _ChunkResult:
        """Validate raw rows and seal the valid ones (runs inline or in a pool worker)."""
        sealed: list[tuple[int, api.SealedPolicyholder]] = []
        errors: list[api.RowError] = []
        for row_no, item in chunk:
            holder, row_errors = validate_row(row_no, item, options)
            if holder is None:
                errors += row_errors
            else:
                sealed.append((row_no, self.seal_policyholder(holder)))
        return sealed, errors

    def close(self) -> None:
        """Stop the worker processes (if any were started)."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def _expire_pending(self) -> None:
        now = self._clock()
        for key in [k for k, p in self._pending.items() if now - p.created > PENDING_IMPORT_TTL]:
            self._drop(key)

    def _drop(self, import_id: str) -> None:
        pending = self._pending.pop(import_id, None)
        for future in (pending.futures or []) if pending else []:
            future.cancel()

    async def discard_import(self, import_id: str) -> None:
        self._drop(import_id)

    def seal_policyholder(self, holder: Policyholder) -> api.SealedPolicyholder:
        """New pseudonym, new data key, one encrypted master-data record, blind indexes."""
        vault = self._vault
        pseudonym = vault.new_pseudonym()
        data_key = vault.new_data_key()
        wrapped = vault.wrap(pseudonym, data_key)
        blob = vault.seal(
            data_key,
            pseudonym=pseudonym,
            record_type=RECORD_TYPE,
            version=RECORD_VERSION,
            plaintext=holder.to_cbor(),
        )
        lookup = name_birth_lookup_value(holder.family_name, holder.given_name, holder.birth_date)
        return api.SealedPolicyholder(
            pseudonym=pseudonym,
            kvnr_index=self.kvnr_index(holder.kvnr),
            root_key_id=wrapped.root_key_id,
            wrapped_key=wrapped.blob,
            records=(
                api.SealedRecord(record_type=RECORD_TYPE, version=RECORD_VERSION, ciphertext=blob),
            ),
            lookup_indexes=((NAME_BIRTH_INDEX, vault.blind_index(NAME_BIRTH_INDEX, lookup)),),
        )

    # -- identity proofing (issue #3) -----------------------------------------------------
    async def egk_prove(
        self,
        *,
        certificate: bytes,
        signature: bytes,
        challenge: bytes,
        intermediates: tuple[bytes, ...] = (),
    ) -> api.IdentityLookup:
        """Verify an eGK C.CH.AUT authentication and open a proof for its KVNR."""
        try:
            identity = verify_egk_authentication(
                certificate_der=certificate,
                signature=signature,
                challenge=challenge,
                trusted_cas=self._egk_cas,
                now=datetime.now(UTC),
                intermediates=intermediates,
                accept_test_kvnr=self._allow_test_kvnr,
            )
        except EgkError as exc:
            raise api.ProofRejected(f"eGK authentication refused: {exc.public_reason}") from None
        return self._proofing.begin(ProvenAttributes(method="egk", kvnr=identity.kvnr))

    async def eid_start(self) -> api.EidStarted:
        return await self._eid.start()

    async def eid_collect(self, handle: str) -> api.IdentityLookup | None:
        return await self._eid.collect(handle)

    async def match_identity(
        self, proof_id: str, candidates: list[api.SealedPolicyholder]
    ) -> api.IdentityMatch:
        match = self._proofing.match(proof_id, candidates)
        now = int(self._wall())
        return replace(
            match,
            proofed_at=now,
            proof_ticket=self._sessions.proof_ticket(match.pseudonym, match.method, now),
        )

    # -- enclave-vouched sessions (api: "enclave-vouched sessions") -----------------------
    async def login_challenges(self, count: int) -> tuple[bytes, ...]:
        return self._sessions.challenges(count)

    async def bind_device(self, request: api.DeviceBindingRequest) -> api.BoundDeviceKey:
        return self._sessions.bind(request)

    async def login(self, request: api.LoginRequest) -> api.LoginGrant:
        return await self._login(request, channel=False)

    async def _channel_login(self, request: api.LoginRequest) -> tuple[CborValue, api.LoginGrant]:
        """A login through the VAU channel: the wallet gets the token (encrypted), the host
        its bearer and the ticket."""
        grant = await self._login(request, channel=True)
        ticket = self._sessions.ticket(grant.ticket)
        assurance = _ticket_assurance(ticket)
        result: CborValue = {
            "session": grant.session,
            "auth_time": ticket.auth_time,
            "acr": assurance.acr,
            "amr": list(assurance.amr_v2),  # as the plain login reports it
        }
        return result, replace(grant, session=device_auth.session_bearer(grant.session))

    async def _login(self, request: api.LoginRequest, *, channel: bool) -> api.LoginGrant:
        token, ticket, fields = self._sessions.login(request, channel=channel)
        history = None
        if request.owner is not None and request.owner.wrapped_key is not None:
            if request.owner.pseudonym != fields.pseudonym:
                raise api.SessionRefused("the records are not this device's person's")
            event = api.HistoryEvent(kind="login", at=fields.auth_time, device_id=fields.device_id)
            history = await self.seal_history(request.owner, event)
        return api.LoginGrant(session=token, ticket=ticket, history=history)

    def _token_assurance(self, request: api.IdTokenRequest) -> tuple[str, Assurance, int]:
        """Whom the token is for and how strongly, from the session ticket (not the host)."""
        ticket = self._sessions.ticket(request.ticket)
        if ticket.pseudonym != request.sealed.pseudonym:
            raise api.SessionRefused("the records are not the logged-in person's")
        try:
            assurance = _ticket_assurance(ticket)
        except ValueError:
            raise api.SessionRefused("the session ticket names an unknown assurance") from None
        if request.single_sign_on or int(self._wall()) - ticket.auth_time > FRESH_LOGIN_BOUND:
            assurance = single_sign_on(assurance)
        return ticket.pseudonym, assurance, ticket.auth_time

    def _recipient(self, request: api.IdTokenRequest) -> dict[str, object]:
        """The relying party's encryption key: from its verified trust chain when this enclave
        has a federation anchor; the host's word only without one (development)."""
        if self._relying_parties is None:
            return dict(request.rp_encryption_jwk)
        return dict(
            self._relying_parties.encryption_key(
                request.grant.client_id, request.rp_statements, now=int(self._wall())
            )
        )

    async def seal_history(
        self, sealed: api.SealedPolicyholder, event: api.HistoryEvent
    ) -> api.SealedHistoryEvent:
        """Encrypt a history event for the policyholder (their data key, type history:<id>)."""
        vault = self._vault
        if sealed.wrapped_key is None:
            raise VaultError(f"policyholder {sealed.pseudonym} was crypto-shredded")
        data_key = vault.unwrap(
            sealed.pseudonym, WrappedKey(root_key_id=sealed.root_key_id, blob=sealed.wrapped_key)
        )
        event_id = secrets.token_hex(16)
        blob = vault.seal(
            data_key,
            pseudonym=sealed.pseudonym,
            record_type=f"history:{event_id}",
            version=1,
            plaintext=bytes(cbor2.dumps(event.to_dict())),
        )
        return api.SealedHistoryEvent(event_id=event_id, created_at=event.at, ciphertext=blob)

    def open_history(
        self, sealed: api.SealedPolicyholder, event_id: str, ciphertext: bytes
    ) -> api.HistoryEvent:
        vault = self._vault
        if sealed.wrapped_key is None:
            raise VaultError(f"policyholder {sealed.pseudonym} was crypto-shredded")
        data_key = vault.unwrap(
            sealed.pseudonym, WrappedKey(root_key_id=sealed.root_key_id, blob=sealed.wrapped_key)
        )
        raw = vault.open(
            data_key,
            pseudonym=sealed.pseudonym,
            record_type=f"history:{event_id}",
            version=1,
            blob=ciphertext,
        )
        return api.HistoryEvent.from_dict(cbor2.loads(raw))

    async def mint_id_token(self, request: api.IdTokenRequest) -> str:
        if self._token_signer is None:
            raise api.EnclaveError("no token signing key is configured")
        pseudonym, assurance, auth_time = self._token_assurance(request)
        recipient = self._recipient(request)
        try:
            holder = self.open_policyholder(request.sealed)
        except VaultError:  # a shredded, moved or altered record: nothing to put in a token
            raise api.EnclaveError("the policyholder's sealed data could not be opened") from None
        return id_token.mint(
            holder=holder,
            pseudonym=pseudonym,
            issuer=request.issuer,
            grant=request.grant,
            assurance=assurance,
            auth_time=auth_time,
            now=int(time.time()),
            today=self._today(),
            kid=request.kid,
            x5c=list(request.x5c),
            signer=self._token_signer,
            rp_encryption_jwk=recipient,
            blind_index=self._vault.blind_index,
        )

    # -- attestation and audit -------------------------------------------------------------
    async def attest(self, nonce: bytes) -> bytes:
        if self._identity is None or self._evidence is None:
            raise api.EnclaveError("attestation is not configured in this enclave")
        keys: dict[str, ec.EllipticCurvePublicKey | dict[str, str]] = {
            IDENTITY_ROLE: self._identity.public_key()
        }
        if self._audit is not None:
            keys[AUDIT_ROLE] = self._audit.public_jwk()
        keys |= self._anchor_keys()
        try:
            document = make_attestation_document(
                keys=keys, nonce=nonce, provider=self._evidence, now=datetime.now(UTC)
            )
        except (TeeAttestationError, ValueError) as exc:  # a nonce out of bounds
            raise api.EnclaveError(f"no attestation: {exc}") from None
        return document.to_json()

    def _anchor_keys(self) -> dict[str, ec.EllipticCurvePublicKey | dict[str, str]]:
        """The federation master keys this enclave trusts (``fedmaster-<n>``): whoever checks
        the attestation sees whom the enclave lets relying parties be vouched for by (an
        operator who pinned a master key of their own could have tokens encrypted to a
        relying party they made up)."""
        if self._relying_parties is None:
            return {}
        anchor_keys = self._relying_parties.anchor.jwks.get("keys", [])
        out: dict[str, ec.EllipticCurvePublicKey | dict[str, str]] = {}
        for n, jwk in enumerate(anchor_keys if isinstance(anchor_keys, list) else []):
            if isinstance(jwk, dict):
                out[f"{FEDERATION_ANCHOR_ROLE}-{n}"] = {
                    k: str(v) for k, v in jwk.items() if k in ANCHOR_JWK_MEMBERS
                }
        return out

    def _audit_signer(self) -> AuditSigner:
        if self._audit is None:
            raise api.EnclaveError("the audit signer is not configured in this enclave")
        return self._audit

    async def audit_head(self) -> SignedCheckpoint | None:
        return await self._audit_signer().audit_head()

    async def sign_audit_checkpoint(self, request: api.AuditCheckpointRequest) -> SignedCheckpoint:
        return await self._audit_signer().sign_audit_checkpoint(request)

    # -- the VAU channel (issue #6): its server end lives here --------------------------
    def _vau_endpoint(
        self, identity: ec.EllipticCurvePrivateKey, clock: Callable[[], int]
    ) -> VauEndpoint:
        """The channel's keys are made now, inside, and signed with the identity key. The PU
        flag: test environments for the simulated TEE, production for an attested one."""

        async def egk_prove(
            certificate: bytes, signature: bytes, challenge: bytes, chain: tuple[bytes, ...]
        ) -> api.IdentityLookup:
            return await self.egk_prove(
                certificate=certificate,
                signature=signature,
                challenge=challenge,
                intermediates=chain,
            )

        return VauEndpoint(
            identity,
            access=EnclaveAccess(
                open_policyholder=self.open_policyholder,
                open_history=self.open_history_events,
                egk_prove=egk_prove,
                today=self._today,
                session_owner=lambda ticket, token: self._sessions.session(ticket, token).pseudonym,
                login=self._channel_login,
            ),
            environment=(
                Environment.TEST if self._tee == api.TEE_SIMULATED else Environment.PRODUCTION
            ),
            clock=clock,
        )

    def _channel(self) -> VauEndpoint:
        if self._vau is None:
            raise api.EnclaveError("the VAU channel is not configured in this enclave")
        return self._vau

    async def vau_public_keys(self) -> bytes:
        return self._channel().public_keys()

    async def vau_handshake(self, m1: bytes) -> api.VauReply:
        return self._channel().handshake(m1)

    async def vau_finish(self, cid: str, m3: bytes) -> api.VauReply:
        return self._channel().finish(cid, m3)

    async def vau_request(self, cid: str, message: bytes, context: api.VauContext) -> api.VauReply:
        return await self._channel().request(cid, message, context)

    def open_history_events(
        self, sealed: api.SealedPolicyholder, entries: Sequence[api.SealedHistoryEvent]
    ) -> list[api.HistoryEvent]:
        """Decrypt a person's history events (one unwrap); any foreign event raises."""
        if sealed.wrapped_key is None:
            raise VaultError(f"policyholder {sealed.pseudonym} was crypto-shredded")
        vault = self._vault
        data_key = vault.unwrap(
            sealed.pseudonym, WrappedKey(root_key_id=sealed.root_key_id, blob=sealed.wrapped_key)
        )
        events = []
        for entry in entries:
            raw = vault.open(
                data_key,
                pseudonym=sealed.pseudonym,
                record_type=f"history:{entry.event_id}",
                version=1,
                blob=entry.ciphertext,
            )
            events.append(api.HistoryEvent.from_dict(cbor2.loads(raw)))
        return events

    # -- reading (inside the enclave only) ------------------------------------------------
    def open_policyholder(self, sealed: api.SealedPolicyholder) -> Policyholder:
        """Decrypt a policyholder's master data. Raises VaultError on any mismatch.

        Besides the AEAD check, the decrypted KVNR must hash to the row's blind index, so a
        whole row (key and record) copied under another KVNR index is refused too.
        """
        vault = self._vault
        if sealed.wrapped_key is None:
            raise VaultError(f"policyholder {sealed.pseudonym} was crypto-shredded")
        data_key = vault.unwrap(
            sealed.pseudonym, WrappedKey(root_key_id=sealed.root_key_id, blob=sealed.wrapped_key)
        )
        record = next((r for r in sealed.records if r.record_type == RECORD_TYPE), None)
        if record is None:
            raise VaultError(f"policyholder {sealed.pseudonym} has no master-data record")
        plaintext = vault.open(
            data_key,
            pseudonym=sealed.pseudonym,
            record_type=record.record_type,
            version=record.version,
            blob=record.ciphertext,
        )
        holder = Policyholder.from_cbor(plaintext)
        if not secrets.compare_digest(self.kvnr_index(holder.kvnr), sealed.kvnr_index):
            raise VaultError(f"policyholder {sealed.pseudonym} does not match its KVNR index")
        return holder

    async def verify_policyholders(self, sealed: list[api.SealedPolicyholder]) -> list[str]:
        failed: list[str] = []
        for item in sealed:
            try:
                self.open_policyholder(item)
            except (VaultError, ValueError, TypeError):
                failed.append(item.pseudonym)
        return failed
