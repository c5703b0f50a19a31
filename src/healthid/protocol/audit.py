"""The tamper-evident audit trail: event model, hash chain, signed checkpoints, verification.

OWASP ASVS 5.0 V16.3 (log security-relevant events) and V16.4 (protect logs from
modification); CONVENTIONS 15 (nothing personal in logs). Every security-relevant event is one
entry of a hash chain::

    entry_hash(n) = SHA-256(entry_hash(n-1) || canonical(entry n)),  entry_hash(0) = GENESIS_HASH

where ``canonical`` is deterministic CBOR (RFC 8949 §4.2.1 core deterministic encoding, as
cbor2's ``canonical=True`` writes it) of the entry including its ``seq``. Each stored row
carries its ``prev_hash`` and ``entry_hash``, so a row is checked on its own (modified) and
against its predecessor (deleted, reordered). The enclave signs checkpoints ``(seq, head,
time)`` over the chain (ES256 JWS) and signs only extensions of what it signed before, so
rows up to the last checkpoint cannot be rewritten without breaking a signature.

Events carry pseudonyms only: the actor is a 128-bit pseudonym, the subject an opaque id
(device id, key id, another pseudonym), the client a relying party's entity id. The details
map is small and refuses values that look like a KVNR, a birth date or a plain IP address;
use :func:`truncate_ip` for an address.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final

import cbor2

from healthid.protocol.jose import JoseError, verify_compact
from healthid.protocol.jose.keys import b64url_decode, b64url_encode

FORMAT_VERSION: Final = 1
HASH_LEN: Final = 32  # SHA-256
GENESIS_HASH: Final = hashlib.sha256(b"healthid/audit-log/v1/genesis").digest()
TYP_AUDIT_CHECKPOINT: Final = "healthid-audit-checkpoint+jwt"
# Bounds (CONVENTIONS 6).
MAX_TIME: Final = 2**63 - 1  # SQL BIGINT
MAX_SUBJECT_LEN: Final = 64
MAX_CLIENT_ID_LEN: Final = 512
MAX_DETAILS: Final = 8
MAX_DETAIL_KEY_LEN: Final = 32
MAX_DETAIL_VALUE_LEN: Final = 256
MAX_DETAILS_JSON_LEN: Final = 4096  # the stored form; 8 * (32 + 256) plus quoting fits
REORDER_SEARCH: Final = 32  # positions either side tried to explain a moved entry
IPV4_KEEP_BITS: Final = 24  # truncate_ip: /24 for IPv4
IPV6_KEEP_BITS: Final = 48  # and /48 for IPv6

_PSEUDONYM = re.compile(r"[0-9a-f]{32}")
_SUBJECT = re.compile(rf"[A-Za-z0-9._:-]{{1,{MAX_SUBJECT_LEN}}}")
_CLIENT_ID = re.compile(rf"[!-~]{{1,{MAX_CLIENT_ID_LEN}}}")
_DETAIL_KEY = re.compile(rf"[a-z][a-z0-9_]{{0,{MAX_DETAIL_KEY_LEN - 1}}}")
# Personal-data guards on free values (fullmatch): KVNR (§290 SGB V), dates, IP addresses.
_KVNR_LIKE = re.compile(r"[A-Z][0-9]{9}")
_DATE_LIKE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9]{1,2}\.[0-9]{1,2}\.[0-9]{4}")


class AuditKind(StrEnum):
    """What happened (closed list). Failed attempts are the same kind with another outcome."""

    IDENTITY_PROOF = "identity_proof"  # eID / eGK proof checked (details: method)
    ENROLMENT = "enrolment"
    RECOVERY = "recovery"
    DEVICE_BOUND = "device_bound"
    DEVICE_REVOKED = "device_revoked"
    LOGIN = "login"
    AUTHORIZATION_REQUEST = "authorization_request"  # PAR accepted or refused
    CONSENT = "consent"
    TOKEN_REQUEST = "token_request"  # noqa: S105 - success: an ID token issued to client_id
    KEY_ROTATION = "key_rotation"  # subject: kid; details: purpose, step
    REGISTRY_IMPORT = "registry_import"
    REPRESENTATIVE_ADDED = "representative_added"  # actor and subject are both recorded
    REPRESENTATIVE_REMOVED = "representative_removed"


class AuditOutcome(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"  # refused: bad proof, signature, PKCE, replay ... (details: reason)
    DENIED = "denied"  # the user or a policy said no


class AuditEventError(ValueError):
    """An audit event would break a bound or carry something that looks personal."""


def truncate_ip(address: str) -> str:
    """The network of ``address`` (IPv4 /24, IPv6 /48): what an audit event may say of an IP."""
    ip = ipaddress.ip_address(address)
    bits = IPV4_KEEP_BITS if ip.version == 4 else IPV6_KEEP_BITS
    return str(ipaddress.ip_network(f"{ip}/{bits}", strict=False))


def _looks_personal(value: str) -> bool:
    if _KVNR_LIKE.fullmatch(value) or _DATE_LIKE.fullmatch(value):
        return True
    if "." not in value and ":" not in value:
        return False  # no IPv4 address or network without a dot, no IPv6 one without a colon
    try:
        ipaddress.ip_address(value)
    except ValueError:
        pass
    else:
        return True  # a plain address: use truncate_ip or a keyed hash
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    limit = IPV4_KEEP_BITS if net.version == 4 else IPV6_KEEP_BITS
    return net.prefixlen > limit


def _check_details(details: Mapping[str, str]) -> None:
    if len(details) > MAX_DETAILS:
        raise AuditEventError(f"at most {MAX_DETAILS} details")
    for key, value in details.items():
        if not isinstance(key, str) or not _DETAIL_KEY.fullmatch(key):
            raise AuditEventError("a detail key must be [a-z][a-z0-9_]*, at most 32 characters")
        if not isinstance(value, str) or len(value) > MAX_DETAIL_VALUE_LEN:
            raise AuditEventError(f"detail {key}: a string of at most {MAX_DETAIL_VALUE_LEN}")
        if not value.isprintable():
            raise AuditEventError(f"detail {key}: control characters are not allowed")
        if _looks_personal(value):
            raise AuditEventError(f"detail {key}: looks like a KVNR, a date or an IP address")


@dataclass(frozen=True, kw_only=True)
class AuditEvent:
    """One security-relevant event, before it has a place in the chain."""

    time: int  # Unix seconds
    kind: AuditKind
    outcome: AuditOutcome = AuditOutcome.SUCCESS
    actor: str | None = None  # the policyholder's pseudonym
    subject: str | None = None  # device id, key id, another pseudonym, import id
    client_id: str | None = None  # the relying party (federation entity id)
    details: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            if type(self.kind) is not AuditKind:
                object.__setattr__(self, "kind", AuditKind(self.kind))
            if type(self.outcome) is not AuditOutcome:
                object.__setattr__(self, "outcome", AuditOutcome(self.outcome))
        except ValueError:
            raise AuditEventError("unknown kind or outcome") from None
        if type(self.time) is not int or not 0 <= self.time <= MAX_TIME:
            raise AuditEventError("time must be a non-negative integer")
        if self.actor is not None and not _PSEUDONYM.fullmatch(self.actor):
            raise AuditEventError("actor must be a pseudonym (32 lowercase hex)")
        if self.subject is not None and (
            not _SUBJECT.fullmatch(self.subject) or _KVNR_LIKE.fullmatch(self.subject)
        ):
            raise AuditEventError("subject must be an opaque id [A-Za-z0-9._:-], at most 64")
        if self.client_id is not None and not _CLIENT_ID.fullmatch(self.client_id):
            raise AuditEventError(f"client_id must be printable ASCII, at most {MAX_CLIENT_ID_LEN}")
        _check_details(self.details)
        object.__setattr__(self, "details", MappingProxyType(dict(sorted(self.details.items()))))


@dataclass(frozen=True, kw_only=True)
class AuditEntry:
    """An event at position ``seq`` of the chain, with the hashes that link it."""

    seq: int
    event: AuditEvent
    prev_hash: bytes
    entry_hash: bytes


@dataclass(frozen=True, kw_only=True)
class UnreadableEntry:
    """A stored row that does not decode into an entry (so it was changed)."""

    seq: int
    reason: str


ChainItem = AuditEntry | UnreadableEntry


def _encoded_key_order(key: str) -> tuple[int, bytes]:
    """RFC 8949 §4.2.1 orders map keys bytewise by their encoding; a text key's encoding
    starts with its length, so: shorter first, then bytewise."""
    raw = key.encode()
    return len(raw), raw


def canonical(seq: int, event: AuditEvent) -> bytes:
    """Deterministic CBOR of the entry (RFC 8949 §4.2.1, as cbor2's ``canonical=True`` writes
    it); every field present, null if unset.

    The maps are built in deterministic key order (:func:`_encoded_key_order`; the entry's
    own keys are fixed and written in that order below), so cbor2 writes them as they are:
    sorting them on every call (``canonical=True``) costs three times the encoding. The
    known-answer and property tests hold this to cbor2's canonical output."""
    details = event.details
    ordered = (
        {key: details[key] for key in sorted(details, key=_encoded_key_order)}
        if len(details) > 1
        else dict(details)
    )
    doc = {
        "v": FORMAT_VERSION,
        "seq": seq,
        "kind": event.kind.value,
        "time": event.time,
        "actor": event.actor,
        "details": ordered,
        "outcome": event.outcome.value,
        "subject": event.subject,
        "client_id": event.client_id,
    }
    return bytes(cbor2.dumps(doc))


def entry_hash(prev_hash: bytes, seq: int, event: AuditEvent) -> bytes:
    """SHA-256(prev_hash || canonical(entry))."""
    return hashlib.sha256(prev_hash + canonical(seq, event)).digest()


def chain(seq: int, head: bytes, events: Iterable[AuditEvent]) -> list[AuditEntry]:
    """The entries for ``events`` appended after ``(seq, head)``: seq + 1, seq + 2, ..."""
    out: list[AuditEntry] = []
    for event in events:
        seq += 1
        digest = entry_hash(head, seq, event)
        out.append(AuditEntry(seq=seq, event=event, prev_hash=head, entry_hash=digest))
        head = digest
    return out


class ChainError(Exception):
    """Entries are not the exact continuation of a chain head."""

    def __init__(self, seq: int, reason: str) -> None:
        self.seq = seq
        self.reason = reason
        super().__init__(f"seq {seq}: {reason}")


def extend(seq: int, head: bytes, entries: Sequence[AuditEntry]) -> tuple[int, bytes]:
    """The head after ``entries``, which must continue ``(seq, head)`` exactly: consecutive
    seqs, each linked to its predecessor, each hash recomputed. ChainError otherwise."""
    for entry in entries:
        seq += 1
        if entry.seq != seq:
            raise ChainError(seq, f"expected seq {seq}, got {entry.seq}")
        if not hmac.compare_digest(entry.prev_hash, head):
            raise ChainError(seq, "does not link to the previous entry")
        head = entry_hash(head, seq, entry.event)
        if not hmac.compare_digest(entry.entry_hash, head):
            raise ChainError(seq, "its stored hash does not match its content")
    return seq, head


# -- the stored row form ----------------------------------------------------------------
_DETAILS_JSON: Final = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False
)  # what json.dumps makes of these options on every call, made once


def details_json(details: Mapping[str, str]) -> str:
    """The stored form of the details: JSON, sorted keys, no whitespace (one spelling only)."""
    return _DETAILS_JSON.encode(dict(details))


def entry_to_row(entry: AuditEntry) -> dict[str, Any]:
    ev = entry.event
    return {
        "seq": entry.seq,
        "occurred_at": ev.time,
        "kind": ev.kind.value,
        "outcome": ev.outcome.value,
        "actor": ev.actor,
        "subject": ev.subject,
        "client_id": ev.client_id,
        "details": details_json(ev.details),
        "prev_hash": entry.prev_hash,
        "entry_hash": entry.entry_hash,
    }


def entry_from_row(row: Mapping[Any, Any]) -> ChainItem:
    """Decode a stored row; anything that does not decode strictly is an UnreadableEntry."""
    seq = row.get("seq")
    if type(seq) is not int:
        return UnreadableEntry(seq=-1, reason="seq is not an integer")
    try:
        text = row["details"]
        if not isinstance(text, str) or len(text) > MAX_DETAILS_JSON_LEN:
            raise AuditEventError("details are not a bounded string")
        details = json.loads(text)
        if not isinstance(details, dict) or details_json(details) != text:
            raise AuditEventError("details are not in their canonical form")
        event = AuditEvent(
            time=row["occurred_at"],
            kind=row["kind"],
            outcome=row["outcome"],
            actor=row["actor"],
            subject=row["subject"],
            client_id=row["client_id"],
            details=details,
        )
        prev, digest = bytes(row["prev_hash"]), bytes(row["entry_hash"])
    except (AuditEventError, ValueError, TypeError, KeyError, RecursionError) as exc:
        return UnreadableEntry(seq=seq, reason=str(exc)[:200] or type(exc).__name__)
    if len(prev) != HASH_LEN or len(digest) != HASH_LEN:
        return UnreadableEntry(seq=seq, reason="a hash is not 32 bytes")
    return AuditEntry(seq=seq, event=event, prev_hash=prev, entry_hash=digest)


# -- checkpoints ------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Checkpoint:
    """The chain head at ``seq`` as the enclave saw it at ``time``."""

    seq: int
    head: bytes
    time: int


@dataclass(frozen=True, kw_only=True)
class SignedCheckpoint:
    """A checkpoint and its ES256 JWS (typ TYP_AUDIT_CHECKPOINT) by the enclave's audit key."""

    checkpoint: Checkpoint
    jws: str


def checkpoint_claims(cp: Checkpoint) -> dict[str, Any]:
    return {"seq": cp.seq, "head": b64url_encode(cp.head), "time": cp.time}


def checkpoint_from_claims(claims: Mapping[str, Any]) -> Checkpoint:
    seq, head, time = claims.get("seq"), claims.get("head"), claims.get("time")
    if type(seq) is not int or seq < 1 or type(time) is not int or not isinstance(head, str):
        raise ValueError("checkpoint claims need integer seq >= 1, time and a head")
    digest = b64url_decode(head)
    if len(digest) != HASH_LEN:
        raise ValueError("checkpoint head is not a SHA-256 hash")
    return Checkpoint(seq=seq, head=digest, time=time)


VerifySignature = Callable[[str], Checkpoint | None]
"""The checkpoint a JWS signs if its signature is valid under a trusted key, else None."""


def checkpoint_verifier(jwks: Mapping[str, Any]) -> VerifySignature:
    """Verify checkpoint JWSs against the audit keys in ``jwks`` (trusted, pinned)."""

    def verify(jws: str) -> Checkpoint | None:
        try:
            return checkpoint_from_claims(
                verify_compact(jws, jwks=jwks, typ=TYP_AUDIT_CHECKPOINT).claims
            )
        except (JoseError, ValueError):
            return None

    return verify


# -- verification -----------------------------------------------------------------------
class FindingKind(StrEnum):
    MODIFIED = "modified"
    MISSING = "missing"
    REORDERED = "reordered"
    CHECKPOINT_SIGNATURE_INVALID = "checkpoint_signature_invalid"
    CHECKPOINT_MISMATCH = "checkpoint_mismatch"
    TRUNCATED = "truncated"


@dataclass(frozen=True, kw_only=True)
class Finding:
    kind: FindingKind
    seq: int
    detail: str

    def __str__(self) -> str:
        return f"seq {self.seq}: {self.kind.value}: {self.detail}"


@dataclass(frozen=True, kw_only=True)
class ChainReport:
    entries: int  # entries read and found sound
    checkpoints: int  # checkpoints whose signature and head were confirmed
    head_seq: int
    head_hash: bytes
    signed_seq: int  # the last seq covered by a confirmed checkpoint
    finding: Finding | None = None

    @property
    def ok(self) -> bool:
        return self.finding is None

    @property
    def unsigned_tail(self) -> int:
        """Entries after the last checkpoint: sound, but not yet protected by a signature."""
        return self.head_seq - self.signed_seq


class ChainVerifier:
    """Streams a chain (ordered by seq) against its checkpoints; stops at the first finding.

    Signatures are checked first; a checkpoint's head is compared when the chain reaches its
    seq. The first finding by seq is reported (a chain finding before a checkpoint finding at
    the same seq).
    """

    def __init__(
        self, checkpoints: Iterable[SignedCheckpoint], verify_signature: VerifySignature
    ) -> None:
        self._seq = 0
        self._head = GENESIS_HASH
        self._count = 0
        self._confirmed = 0
        self._signed_seq = 0
        self._finding: Finding | None = None
        self._deferred: Finding | None = None  # the first checkpoint finding, by seq
        self._pending: list[Checkpoint] = []
        for stored in sorted(checkpoints, key=lambda c: c.checkpoint.seq):
            self._check_signature(stored, verify_signature)
        self._pending.sort(key=lambda c: c.seq, reverse=True)  # pop() yields the lowest

    def _check_signature(self, stored: SignedCheckpoint, verify: VerifySignature) -> None:
        seq = stored.checkpoint.seq
        signed = verify(stored.jws)
        if signed is None:
            self._defer(FindingKind.CHECKPOINT_SIGNATURE_INVALID, seq, "the signature is invalid")
        elif signed != stored.checkpoint:
            self._defer(FindingKind.CHECKPOINT_MISMATCH, seq, "row differs from what was signed")
        else:
            self._pending.append(signed)

    def _defer(self, kind: FindingKind, seq: int, detail: str) -> None:
        if self._deferred is None or seq < self._deferred.seq:
            self._deferred = Finding(kind=kind, seq=seq, detail=detail)

    def _fail(self, kind: FindingKind, seq: int, detail: str) -> bool:
        self._finding = Finding(kind=kind, seq=seq, detail=detail)
        return False

    def feed(self, item: ChainItem) -> bool:
        """Check the next item; False once a finding is made (feed no more)."""
        if self._finding is not None:
            return False
        expected = self._seq + 1
        if self._deferred is not None and self._deferred.seq < expected:
            self._finding = self._deferred
            return False
        if item.seq > expected:
            last = f"{expected}" if item.seq == expected + 1 else f"{expected}..{item.seq - 1}"
            return self._fail(FindingKind.MISSING, expected, f"entries {last} are missing")
        if item.seq < expected:
            detail = f"seq {item.seq} appears again after seq {self._seq}"
            return self._fail(FindingKind.REORDERED, expected, detail)
        if isinstance(item, UnreadableEntry):
            return self._fail(FindingKind.MODIFIED, expected, f"does not decode ({item.reason})")
        if not hmac.compare_digest(
            entry_hash(item.prev_hash, item.seq, item.event), item.entry_hash
        ):
            return self._misfit(item)
        if not hmac.compare_digest(item.prev_hash, self._head):
            detail = (
                f"does not link to seq {self._seq}: one of them was rewritten"
                if self._seq
                else "does not start from the genesis hash"
            )
            return self._fail(FindingKind.MODIFIED, expected, detail)
        self._seq, self._head = expected, item.entry_hash
        self._count += 1
        return self._reach_checkpoints()

    def _misfit(self, item: AuditEntry) -> bool:
        """An entry whose hash does not fit its content: moved here from elsewhere, or changed."""
        seq = item.seq
        for other in range(max(1, seq - REORDER_SEARCH), seq + REORDER_SEARCH + 1):
            if other != seq and hmac.compare_digest(
                entry_hash(item.prev_hash, other, item.event), item.entry_hash
            ):
                return self._fail(FindingKind.REORDERED, seq, f"the entry of seq {other} is here")
        return self._fail(FindingKind.MODIFIED, seq, "content or hash changed")

    def _reach_checkpoints(self) -> bool:
        while self._pending and self._pending[-1].seq <= self._seq:
            cp = self._pending.pop()
            if not hmac.compare_digest(cp.head, self._head):
                return self._fail(
                    FindingKind.CHECKPOINT_MISMATCH,
                    cp.seq,
                    "the signed head differs from the chain",
                )
            self._confirmed += 1
            self._signed_seq = cp.seq
        return True

    def finish(self) -> ChainReport:
        finding = self._finding
        if finding is None and self._pending:
            end = self._seq
            top = self._pending[0].seq  # the highest signed seq
            finding = Finding(
                kind=FindingKind.TRUNCATED,
                seq=end + 1,
                detail=f"the log ends at seq {end} but a checkpoint signs up to seq {top}",
            )
        deferred = self._deferred
        if deferred is not None and (finding is None or deferred.seq < finding.seq):
            finding = deferred
        return ChainReport(
            entries=self._count,
            checkpoints=self._confirmed,
            head_seq=self._seq,
            head_hash=self._head,
            signed_seq=self._signed_seq,
            finding=finding,
        )


def verify_chain(
    entries: Iterable[ChainItem],
    checkpoints: Iterable[SignedCheckpoint],
    verify_signature: VerifySignature,
) -> ChainReport:
    """Verify a whole chain from genesis: the first finding (or none) and the counts."""
    verifier = ChainVerifier(checkpoints, verify_signature)
    for item in entries:
        if not verifier.feed(item):
            break
    return verifier.finish()
