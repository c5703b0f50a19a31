"""The wallet backend's flows on the host: enrolment, device binding, device-key login,
device management and recovery (issue #3).

Everything personal is decided in the enclave (identity proofing and matching); the host
keeps flow state in the ephemeral store (TTL'd, single use), devices (public keys) and the
policyholder's sealed history in SQL, and enforces rate limits. Errors carry no personal data
and never say whether someone is insured.
"""

from __future__ import annotations

import re
import secrets
import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from healthid.enclave.api import (
    DeviceBindingRequest,
    EnclaveClient,
    HistoryEvent,
    IdentityLookup,
    IdentityMatch,
    LoginGrant,
    LoginRequest,
    SealedHistoryEvent,
    SealedPolicyholder,
    SessionRefused,
    read_session_ticket,
)
from healthid.host import json_io
from healthid.host.attestation import AttestationPolicy, verify_device_attestation
from healthid.host.rate_limits import (
    RateLimit,
    RateLimiter,
    WalletLimits,
    counter_key,
)
from healthid.host.wallet_errors import (
    Conflict,
    Forbidden,
    NotFound,
    TooManyRequests,
    Unauthorized,
    WalletError,
)
from healthid.protocol import device_auth
from healthid.protocol.audit import AuditKind, AuditOutcome
from healthid.protocol.jose.keys import b64url_decode, b64url_encode
from healthid.protocol.oidc.loa import (
    Assurance,
    DeviceKeyClass,
    ProofingMethod,
    derive_assurance,
)
from healthid.store.ephemeral import EphemeralStore
from healthid.store.sql.audit import AuditRecorder, AuditSink
from healthid.store.sql.devices import DeviceRecord, DeviceRepository, HistoryEntry
from healthid.store.sql.policyholders import PolicyholderRepository

__all__ = [  # the refusals and limits are part of this module's interface
    "Conflict",
    "Forbidden",
    "NotFound",
    "RateLimit",
    "TooManyRequests",
    "Unauthorized",
    "WalletError",
    "WalletLimits",
    "WalletService",
]

ENROLMENT_TTL = 600  # seconds from starting an enrolment to binding the device
AUTH_CHALLENGE_TTL = 120  # seconds a login challenge is valid (single use)
DEVICE_SESSION_TTL = 300  # seconds a device session (device management) is valid
MAX_DEVICES_PER_PERSON = 5
DEVICE_ID_BYTES = 16
_DEVICE_ID = re.compile(f"[0-9a-f]{{{2 * DEVICE_ID_BYTES}}}")
_SESSION_SECRET = re.compile(r"[A-Za-z0-9_-]{43}")  # token_urlsafe(32)
_ENROLMENT_ID = re.compile(r"[A-Za-z0-9_-]{24}")  # token_urlsafe(18)
_CHALLENGE_ID = _ENROLMENT_ID  # login challenges' ids are made the same way
DEVICE_CACHE_TTL = 600  # seconds a device's public record is cached for logins
# Login challenges come from the enclave (it vouches for them and spends each once), fetched
# this many at a time; one older than CHALLENGE_POOL_AGE is not handed out (the enclave
# accepts a challenge for 180 s: this plus AUTH_CHALLENGE_TTL, with room to spare).
CHALLENGE_POOL = 64
CHALLENGE_POOL_AGE = 30


IDENTITY_NOT_CONFIRMED = "the identity could not be confirmed"


@dataclass(frozen=True, kw_only=True)
class Enrolment:
    enrolment_id: str
    challenge: bytes
    expires_in: int


@dataclass(frozen=True, kw_only=True)
class BoundDevice:
    device_id: str
    key_class: str
    assurance: Assurance
    revoked_devices: int


@dataclass(frozen=True, kw_only=True)
class LoginResult:
    session: str
    device_id: str
    auth_time: int
    assurance: Assurance
    pseudonym: str = field(repr=False)


class WalletService:
    def __init__(
        self,
        *,
        enclave: EnclaveClient,
        policyholders: PolicyholderRepository,
        devices: DeviceRepository,
        ephemeral: EphemeralStore,
        attestation: AttestationPolicy,
        limits: WalletLimits | None = None,
        clock: Callable[[], float] = time.time,
        session_ttl: int = DEVICE_SESSION_TTL,
        audit: AuditSink | None = None,
    ) -> None:
        self._event = AuditRecorder(audit, clock)
        self._session_ttl = session_ttl
        self._enclave = enclave
        self._policyholders = policyholders
        self._devices = devices
        self._store = ephemeral
        self._attestation = attestation
        self._limits = limits or WalletLimits()
        self._rate = RateLimiter(ephemeral)
        self._clock = clock
        self._challenges: deque[tuple[float, bytes]] = deque()

    def _now(self) -> int:
        return int(self._clock())

    # -- state helpers ------------------------------------------------------------------------
    async def _put(self, key: str, value: dict[str, Any], ttl: int) -> None:
        await self._store.put(key, json_io.dumps(value), ttl)

    async def _get(self, key: str) -> dict[str, Any] | None:
        raw = await self._store.get(key)
        return None if raw is None else dict(json_io.loads(raw))

    async def _enrolment(self, enrolment_id: str) -> dict[str, Any]:
        if not _ENROLMENT_ID.fullmatch(enrolment_id):
            raise NotFound("unknown or expired enrolment")  # never one we issued
        state = await self._get(f"enrol:{enrolment_id}")
        if state is None:
            raise NotFound("unknown or expired enrolment")
        return state

    # -- enrolment ------------------------------------------------------------------------------
    async def start_enrolment(self, *, ip: str) -> Enrolment:
        enrolment_id = secrets.token_urlsafe(18)
        challenge = secrets.token_bytes(device_auth.CHALLENGE_BYTES)
        state = {"challenge": b64url_encode(challenge), "ip": ip, "started": self._now()}
        # counted against the address and stored in one round trip (refused: removed again)
        await self._rate.take_and_put(
            "enrol_ip",
            ip,
            self._limits.enrolments_per_ip,
            f"enrol:{enrolment_id}",
            json_io.dumps(state),
            ENROLMENT_TTL,
        )
        return Enrolment(enrolment_id=enrolment_id, challenge=challenge, expires_in=ENROLMENT_TTL)

    async def prove_with_egk(
        self,
        enrolment_id: str,
        *,
        certificate: bytes,
        signature: bytes,
        intermediates: tuple[bytes, ...] = (),
        ip: str,
    ) -> str:
        """Identity proofing with the eGK; returns the method. The card signed the challenge.

        The certificate names the person: the wallet sends it through the VAU channel
        (``egk_prove`` in host/vau_api.py, which uses :meth:`egk_challenge`,
        :meth:`egk_rejected` and :meth:`egk_proven`); this plain form is development only.
        """
        challenge = await self.egk_challenge(enrolment_id, ip=ip)
        from healthid.enclave.api import ProofRejected

        try:
            lookup = await self._enclave.egk_prove(
                certificate=certificate,
                signature=signature,
                challenge=challenge,
                intermediates=intermediates,
            )
        except ProofRejected as exc:
            await self.egk_rejected(ip=ip)
            raise Forbidden(str(exc)) from None
        return await self.egk_proven(enrolment_id, lookup, ip=ip)

    async def egk_challenge(self, enrolment_id: str, *, ip: str) -> bytes:
        """The enrolment's challenge for the card to sign, unless the address is throttled."""
        state = await self._enrolment(enrolment_id)
        await self._rate.check("proof_ip", ip, self._limits.failed_proofs_per_ip)
        return b64url_decode(state["challenge"])

    async def egk_rejected(self, *, ip: str) -> None:
        """The enclave refused the card's authentication: count it against the address."""
        await self._rate.count("proof_ip", ip, self._limits.failed_proofs_per_ip)
        self._event(AuditKind.IDENTITY_PROOF, AuditOutcome.FAILURE, method="egk", reason="rejected")

    async def egk_proven(self, enrolment_id: str, lookup: IdentityLookup, *, ip: str) -> str:
        """Match the card's proof (the enclave's lookup) and record it on the enrolment."""
        state = await self._enrolment(enrolment_id)
        match = await self._match(lookup.proof_id, lookup.lookups, ip=ip)
        await self._record_proof(enrolment_id, state, match)
        return match.method

    async def start_eid(self, enrolment_id: str, *, ip: str) -> dict[str, str | None]:
        """Open an eID-Server session; the wallet gets the values of its TC Token."""
        from healthid.enclave.api import ProofRejected

        state = await self._enrolment(enrolment_id)
        await self._rate.check("proof_ip", ip, self._limits.failed_proofs_per_ip)
        try:
            started = await self._enclave.eid_start()
        except ProofRejected as exc:
            raise Forbidden(str(exc)) from None
        state["eid_handle"] = started.handle
        remaining = max(1, ENROLMENT_TTL - (self._now() - int(state["started"])))
        await self._put(f"enrol:{enrolment_id}", state, remaining)
        return {
            "psk_id": started.psk_id,
            "psk_key": started.psk_key,
            "ecard_server_address": started.ecard_server_address,
        }

    async def finish_eid(self, enrolment_id: str, *, ip: str) -> str | None:
        """After the user finished in the eID client: the proving method, or None (pending)."""
        from healthid.enclave.api import ProofRejected

        state = await self._enrolment(enrolment_id)
        handle = state.get("eid_handle")
        if not handle:
            raise WalletError("start the eID session first")
        try:
            lookup = await self._enclave.eid_collect(handle)
        except ProofRejected as exc:
            await self._rate.count("proof_ip", ip, self._limits.failed_proofs_per_ip)
            self._event(
                AuditKind.IDENTITY_PROOF, AuditOutcome.FAILURE, method="eid", reason="rejected"
            )
            raise Forbidden(str(exc)) from None
        if lookup is None:
            return None
        match = await self._match(lookup.proof_id, lookup.lookups, ip=ip)
        state.pop("eid_handle", None)
        await self._record_proof(enrolment_id, state, match)
        return match.method

    async def _match(
        self, proof_id: str, lookups: tuple[tuple[str, bytes], ...], *, ip: str
    ) -> IdentityMatch:
        from healthid.enclave.api import IdentityNotConfirmed

        candidates: dict[str, SealedPolicyholder] = {}
        for kind, digest in lookups:
            if kind == "kvnr":
                found = await self._policyholders.find_by_kvnr_index(digest)
                if found is not None:
                    candidates[found.pseudonym] = found
            else:
                for item in await self._policyholders.find_by_lookup(kind, digest):
                    candidates[item.pseudonym] = item
        for pseudonym in candidates:
            await self._rate.check("proof_person", pseudonym, self._limits.failed_proofs_per_person)
        try:
            match = await self._enclave.match_identity(proof_id, list(candidates.values()))
        except IdentityNotConfirmed:
            self._event(
                AuditKind.IDENTITY_PROOF, AuditOutcome.DENIED, reason="identity not confirmed"
            )
            await self._rate.count("proof_ip", ip, self._limits.failed_proofs_per_ip)
            for pseudonym in candidates:
                await self._rate.count(
                    "proof_person", pseudonym, self._limits.failed_proofs_per_person
                )
            raise Forbidden(IDENTITY_NOT_CONFIRMED) from None
        if match.new_lookup_indexes:
            await self._policyholders.add_lookup_indexes(match.pseudonym, match.new_lookup_indexes)
        return match

    async def _record_proof(
        self, enrolment_id: str, state: dict[str, Any], match: IdentityMatch
    ) -> None:
        state |= {
            "pseudonym": match.pseudonym,
            "method": match.method,
            "proofed_at": match.proofed_at,
            "proof_ticket": b64url_encode(match.proof_ticket),
        }
        self._event(AuditKind.IDENTITY_PROOF, actor=match.pseudonym, method=match.method)
        remaining = max(1, ENROLMENT_TTL - (self._now() - int(state["started"])))
        await self._put(f"enrol:{enrolment_id}", state, remaining)

    async def bind_device(
        self,
        enrolment_id: str,
        *,
        public_key: bytes,
        attestation_format: str,
        attestation: bytes,
        replace_devices: bool = False,
    ) -> BoundDevice:
        """Bind the device key (attested over the enrolment challenge) to the proven person.

        Consumes the enrolment: one device per proof. ``replace_devices`` is recovery after a
        lost phone: every other device of the person is revoked in the same transaction.
        """
        if not _ENROLMENT_ID.fullmatch(enrolment_id):
            raise NotFound("unknown or expired enrolment")
        raw = await self._store.consume(f"enrol:{enrolment_id}")
        if raw is None:
            raise NotFound("unknown or expired enrolment")
        state = dict(json_io.loads(raw))
        if "pseudonym" not in state:
            raise Forbidden("prove your identity (eID or eGK) before binding a device")
        try:
            device_auth.load_device_key(public_key)
        except device_auth.DeviceAuthError as exc:
            raise WalletError(str(exc)) from None
        attested = verify_device_attestation(
            self._attestation,
            fmt=attestation_format,
            attestation=attestation,
            public_key=public_key,
            challenge=b64url_decode(state["challenge"]),
        )
        device_id = secrets.token_hex(DEVICE_ID_BYTES)
        try:  # the enclave binds the key to the person its own proof named
            bound = await self._enclave.bind_device(
                DeviceBindingRequest(
                    proof_ticket=b64url_decode(state.get("proof_ticket", "")),
                    device_id=device_id,
                    public_key=public_key,
                    key_class=attested.key_class,
                    attestation_format=attestation_format,
                )
            )
        except SessionRefused as exc:
            raise Forbidden(str(exc)) from None
        pseudonym = bound.pseudonym
        if not replace_devices and (
            await self._devices.count_active(pseudonym) >= MAX_DEVICES_PER_PERSON
        ):
            raise Conflict(f"at most {MAX_DEVICES_PER_PERSON} devices; revoke one first or recover")
        now = self._now()
        before = {d.device_id for d in await self._devices.list_for(pseudonym) if d.active}
        device = DeviceRecord(
            device_id=device_id,
            pseudonym=pseudonym,
            key_class=attested.key_class,
            attestation_format=attestation_format,
            public_key=public_key,
            sign_count=attested.sign_count,
            proofing_method=bound.proofing_method,
            proofed_at=bound.proofed_at,
            created_at=now,
            binding=bound.binding,
        )
        kind = "recovered" if replace_devices else "enrolled"
        revoked_ids = sorted(before) if replace_devices else []
        entries = await self._sealed_history(
            pseudonym,
            [
                HistoryEvent(kind=kind, at=now, detail=state["method"]),
                HistoryEvent(kind="device_bound", at=now, device_id=device.device_id),
                *(HistoryEvent(kind="device_revoked", at=now, device_id=d) for d in revoked_ids),
            ],
        )
        await self._devices.add(  # the device and its history: one transaction
            device,
            revoke_others_at=now if replace_devices else None,
            history_entries=entries,
        )
        if replace_devices:
            await self._mark_revoked(revoked_ids, now)
        self._event(
            AuditKind.RECOVERY if replace_devices else AuditKind.ENROLMENT,
            actor=pseudonym,
            method=state["method"],
        )
        self._event(
            AuditKind.DEVICE_BOUND,
            actor=pseudonym,
            subject=device.device_id,
            key_class=device.key_class,
            attestation=attestation_format,
        )
        for old in revoked_ids:
            self._event(AuditKind.DEVICE_REVOKED, actor=pseudonym, subject=old, reason="recovery")
        revoked = len(revoked_ids)
        return BoundDevice(
            device_id=device.device_id,
            key_class=device.key_class,
            assurance=self._assurance(device, now),
            revoked_devices=revoked,
        )

    # -- login ----------------------------------------------------------------------------------
    def _assurance(self, device: DeviceRecord, now: int) -> Assurance:
        return derive_assurance(
            method=ProofingMethod(device.proofing_method),
            key_class=DeviceKeyClass(device.key_class),
            proofed_at=device.proofed_at,
            now=now,
        )

    async def login_challenge(
        self, device_id: str, *, ip: str, context: str = ""
    ) -> tuple[str, bytes]:
        challenge_id = secrets.token_urlsafe(18)
        challenge = await self._enclave_challenge()
        state = {"device_id": device_id, "challenge": b64url_encode(challenge), "context": context}
        await self._rate.take_and_put(
            "chal_ip",
            ip,
            self._limits.challenges_per_ip,
            f"authchal:{challenge_id}",
            json_io.dumps(state),
            AUTH_CHALLENGE_TTL,
        )
        return challenge_id, challenge

    async def _enclave_challenge(self) -> bytes:
        """A login challenge the enclave made (from this worker's pool)."""
        pool, now = self._challenges, self._clock()
        while pool and now - pool[0][0] > CHALLENGE_POOL_AGE:
            pool.popleft()
        if not pool:
            fresh = await self._enclave.login_challenges(CHALLENGE_POOL)
            pool.extend((now, c) for c in fresh)
        return pool.popleft()[1]

    def _login_checks(self, device_id: str, ip: str) -> list[tuple[str, str, RateLimit]]:
        limits = self._limits
        return [
            ("auth_ip", ip, limits.failed_auth_per_ip),
            ("auth_dev_ip", f"{device_id}|{ip}", limits.failed_auth_per_device_ip),
            ("auth_dev", device_id, limits.failed_auth_per_device),
        ]

    async def login(
        self, *, challenge_id: str, device_id: str, counter: int, signature: bytes, ip: str
    ) -> LoginResult:
        """Verify the device's signature over the challenge; single use, counter must rise.

        The session token passes through this host: it serves the plain wallet API (device
        management, consent); the person's data needs a login through the VAU channel."""
        request = await self.login_request(
            challenge_id=challenge_id,
            device_id=device_id,
            counter=counter,
            ip=ip,
            signature=signature,
        )
        try:
            try:  # the enclave checks the binding, its challenge and the signature
                grant = await self._enclave.login(request)
            except SessionRefused:
                raise Unauthorized("device authentication failed") from None
            return await self.login_finished(request, grant)
        except WalletError as exc:
            await self.login_failed(device_id, ip, exc.description)
            raise

    async def login_request(
        self, *, challenge_id: str, device_id: str, counter: int, ip: str, signature: bytes = b""
    ) -> LoginRequest:
        """The enclave's login request for a device's answer to challenge ``challenge_id``
        (with ``signature``, or without one for the channel to add): the challenge consumed,
        the failure limits checked."""
        if not _DEVICE_ID.fullmatch(device_id):
            raise Unauthorized("device authentication failed")
        if not _CHALLENGE_ID.fullmatch(challenge_id):  # never one we issued
            raise Unauthorized("unknown, expired or already used challenge")
        checks = self._login_checks(device_id, ip)
        # one round trip: consume the challenge (single use), read the failure counters and
        # the device's cached public record
        raw, values = await self._store.consume_and_get(
            f"authchal:{challenge_id}",
            [*(counter_key(n, subj) for n, subj, _ in checks), f"devrec:{device_id}"],
        )
        counts, cached = values[:-1], values[-1]
        await self._rate.check_counts(checks, counts)
        try:
            return await self._login_request(
                raw, device_id=device_id, counter=counter, cached=cached, signature=signature
            )
        except WalletError as exc:
            await self.login_failed(device_id, ip, exc.description)
            raise

    async def login_failed(self, device_id: str, ip: str, reason: str) -> None:
        """A refused login: recorded, and counted against the address and the device."""
        self._event(
            AuditKind.LOGIN,
            AuditOutcome.FAILURE,
            subject=device_id if _DEVICE_ID.fullmatch(device_id) else None,
            reason=reason[:200],
        )
        for name, subject, rule in self._login_checks(device_id, ip):
            await self._rate.count(name, subject, rule)

    async def _device_for_login(
        self, device_id: str, cached: bytes | None
    ) -> tuple[DeviceRecord, str | None, bytes | None] | None:
        """The device's public record, cached in the ephemeral store.

        Safe to cache: revocation and the counter are enforced by the SQL compare-and-set
        after the signature check, never by this copy; revoking also drops it.
        """
        key = f"devrec:{device_id}"
        if cached is not None:
            doc = json_io.loads(cached)
            stored = doc["device"]
            device = DeviceRecord(
                **(
                    stored
                    | {
                        "public_key": b64url_decode(stored["public_key"]),
                        "binding": b64url_decode(stored["binding"]) if stored["binding"] else None,
                    }
                )
            )
            wrapped = b64url_decode(doc["wrapped_key"]) if doc["wrapped_key"] else None
            return device, doc["root_key_id"], wrapped
        found = await self._devices.get_with_key(device_id)
        if found is None or not found[0].active:
            return found
        device, root_key_id, wrapped = found
        doc = {
            "device": device.__dict__
            | {
                "public_key": b64url_encode(device.public_key),
                "binding": b64url_encode(device.binding) if device.binding else None,
            },
            "root_key_id": root_key_id,
            "wrapped_key": b64url_encode(wrapped) if wrapped else None,
        }
        await self._put(key, doc, DEVICE_CACHE_TTL)
        return found

    async def _login_request(
        self,
        raw: bytes | None,
        *,
        device_id: str,
        counter: int,
        cached: bytes | None,
        signature: bytes,
    ) -> LoginRequest:
        failed = Unauthorized("device authentication failed")
        if raw is None:
            raise Unauthorized("unknown, expired or already used challenge")
        state = dict(json_io.loads(raw))
        if not secrets.compare_digest(state["device_id"].encode(), device_id.encode()):
            raise failed
        found = await self._device_for_login(device_id, cached)
        if found is None or not found[0].active:
            raise failed
        device, root_key_id, wrapped_key = found
        if device.binding is None:
            raise failed  # bound before the enclave vouched for bindings: recover the account
        owner = None
        if wrapped_key is not None:
            owner = SealedPolicyholder(
                pseudonym=device.pseudonym,
                kvnr_index=b"",
                root_key_id=root_key_id or "",
                wrapped_key=wrapped_key,
                records=(),
            )
        return LoginRequest(
            device_id=device_id,
            pseudonym=device.pseudonym,
            public_key=device.public_key,
            key_class=device.key_class,
            attestation_format=device.attestation_format,
            proofing_method=device.proofing_method,
            proofed_at=device.proofed_at,
            sign_count=device.sign_count,
            binding=device.binding,
            challenge=b64url_decode(state["challenge"]),
            counter=counter,
            signature=signature,
            session_ttl=self._session_ttl,
            owner=owner,
        )

    async def login_finished(self, request: LoginRequest, grant: LoginGrant) -> LoginResult:
        """After the enclave verified a login: the device's counter advanced (with the sealed
        history event) and the session stored under ``grant.session`` (the token of a plain
        login, the bearer of one through the channel) with its ticket."""
        ticket = read_session_ticket(grant.ticket)
        entry = None
        if grant.history is not None:
            sealed = grant.history
            entry = HistoryEntry(
                event_id=sealed.event_id, created_at=sealed.created_at, ciphertext=sealed.ciphertext
            )
        if not await self._devices.advance_counter_and_log(
            request.device_id, request.counter, request.pseudonym, entry
        ):
            # a counter that did not go up (replay / clone), or just revoked
            raise Unauthorized("device authentication failed")
        now = ticket.auth_time
        await self._put(
            f"devsess:{grant.session}",
            {
                "pseudonym": ticket.pseudonym,
                "device_id": ticket.device_id,
                "auth_time": now,
                # what the assurance of this login rests on, as the device was bound
                "key_class": ticket.key_class,
                "proofing_method": ticket.proofing_method,
                "proofed_at": ticket.proofed_at,
                # the enclave's word on all of the above (checked where it matters)
                "ticket": b64url_encode(grant.ticket),
            },
            self._session_ttl,
        )
        self._event(AuditKind.LOGIN, actor=ticket.pseudonym, subject=ticket.device_id)
        return LoginResult(
            session=grant.session,
            device_id=ticket.device_id,
            auth_time=now,
            assurance=derive_assurance(
                method=ProofingMethod(ticket.proofing_method),
                key_class=DeviceKeyClass(ticket.key_class),
                proofed_at=ticket.proofed_at,
                now=now,
            ),
            pseudonym=ticket.pseudonym,
        )

    # -- device management ------------------------------------------------------------------
    def session_keys(self, token: str) -> tuple[str, str]:
        """The ephemeral-store keys of a device session and of its device's revocation mark.

        A session token is ``<device id>.<secret>``, so both are read in one round trip.
        """
        device_id, dot, secret = token.partition(".")
        if not dot or not _DEVICE_ID.fullmatch(device_id) or not _SESSION_SECRET.fullmatch(secret):
            raise Unauthorized("missing, unknown or expired device session")
        return f"devsess:{token}", f"devrevoked:{device_id}"

    def session_from(
        self, state_raw: bytes | None, revoked_raw: bytes | None
    ) -> tuple[dict[str, Any], Assurance]:
        """Check a session read with :meth:`session_keys`: it exists and its device was not
        revoked since (revocation marks the device in the ephemeral store for as long as any
        of its sessions can live, after the SQL update that revokes it)."""
        if state_raw is None:
            raise Unauthorized("missing, unknown or expired device session")
        if revoked_raw is not None:
            raise Unauthorized("the device of this session was revoked")
        state = dict(json_io.loads(state_raw))
        auth_time = int(state["auth_time"])
        assurance = derive_assurance(
            method=ProofingMethod(state["proofing_method"]),
            key_class=DeviceKeyClass(state["key_class"]),
            proofed_at=int(state["proofed_at"]),
            now=auth_time,
        )
        return state, assurance

    async def _session(self, token: str) -> dict[str, Any]:
        state_raw, revoked_raw = await self._store.get_many(list(self.session_keys(token)))
        return self.session_from(state_raw, revoked_raw)[0]

    async def authenticated(self, session: str) -> tuple[str, Assurance, int]:
        """Who a fresh device session belongs to, the assurance it carries, and when it was
        established (for the authorization: consent with a device-key login)."""
        state_raw, revoked_raw = await self._store.get_many(list(self.session_keys(session)))
        state, assurance = self.session_from(state_raw, revoked_raw)
        return state["pseudonym"], assurance, int(state["auth_time"])

    async def _mark_revoked(self, device_ids: Collection[str], now: int) -> None:
        """After the SQL revocation: end the devices' open sessions and drop cached records."""
        for device_id in device_ids:
            await self._store.put(f"devrevoked:{device_id}", str(now).encode(), self._session_ttl)
            await self._store.delete(f"devrec:{device_id}")

    async def list_devices(self, session: str) -> list[dict[str, Any]]:
        state = await self._session(session)
        return [
            {
                "device_id": d.device_id,
                "key_class": d.key_class,
                "attestation_format": d.attestation_format,
                "proofing_method": d.proofing_method,
                "created_at": d.created_at,
                "revoked_at": d.revoked_at,
                "current": d.device_id == state["device_id"],
            }
            for d in await self._devices.list_for(state["pseudonym"])
        ]

    async def revoke_device(self, session: str, device_id: str) -> None:
        state = await self._session(session)
        now = self._now()
        if not await self._devices.revoke(device_id, state["pseudonym"], now):
            raise NotFound("no such active device")
        await self._mark_revoked([device_id], now)
        self._event(AuditKind.DEVICE_REVOKED, actor=state["pseudonym"], subject=device_id)
        await self._history(
            state["pseudonym"], HistoryEvent(kind="device_revoked", at=now, device_id=device_id)
        )

    async def history_count(self, session: str) -> int:
        """How many history events are stored (their content is sealed for the person)."""
        state = await self._session(session)
        return len(await self._devices.list_history(state["pseudonym"]))

    # -- the VAU channel's context (host/vau_api.py) ------------------------------------------
    async def person(self, session: str) -> tuple[str, SealedPolicyholder, bytes]:
        """Whom a device session belongs to, their sealed records and the session's ticket
        (for the enclave, which checks the ticket against the token the wallet sent it)."""
        state = await self._session(session)
        pseudonym = str(state["pseudonym"])
        sealed = await self._policyholders.get(pseudonym)
        if sealed is None or sealed.wrapped_key is None:
            raise NotFound("no records for this account")
        return pseudonym, sealed, b64url_decode(state["ticket"])

    async def sealed_history(self, pseudonym: str) -> tuple[SealedHistoryEvent, ...]:
        """The person's sealed history events, newest first (as many as the store lists)."""
        return tuple(
            SealedHistoryEvent(
                event_id=e.event_id, created_at=e.created_at, ciphertext=e.ciphertext
            )
            for e in await self._devices.list_history(pseudonym)
        )

    async def _sealed_history(
        self, pseudonym: str, events: Sequence[HistoryEvent]
    ) -> list[HistoryEntry]:
        """The events sealed by the enclave for the person (none if erased or shredded)."""
        sealed_person = await self._policyholders.get(pseudonym)
        if sealed_person is None or sealed_person.wrapped_key is None:
            return []  # erased or shredded: nothing to record for them
        out = []
        for event in events:
            sealed = await self._enclave.seal_history(sealed_person, event)
            out.append(
                HistoryEntry(
                    event_id=sealed.event_id,
                    created_at=sealed.created_at,
                    ciphertext=sealed.ciphertext,
                )
            )
        return out

    async def _history(self, pseudonym: str, event: HistoryEvent) -> None:
        for entry in await self._sealed_history(pseudonym, [event]):
            await self._devices.add_history(pseudonym, entry)
