"""Explicit CBOR mappings of the dataclasses that cross the enclave boundary.

One encoder and one decoder per dataclass of ``healthid.enclave.api`` (and the two protocol
dataclasses an :class:`~healthid.enclave.api.IdTokenRequest` carries), and of the one the
enclave-to-enclave key release returns (``healthid.enclave.key_release``). A dataclass is a map of
its field names; every field is always present (no defaults on the wire), no other key is
accepted, and every value's type is checked. Nothing is reflected over: a class without a pair
here cannot cross. Decoding errors name the field, never its value.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from typing import Any, Final, TypeVar

from healthid.enclave import api
from healthid.enclave.key_release import ReleasedRootKey
from healthid.enclave.rpc.errors import CodecError
from healthid.protocol.audit import (
    AuditEntry,
    AuditEvent,
    AuditKind,
    AuditOutcome,
    Checkpoint,
    SignedCheckpoint,
    details_json,
)
from healthid.protocol.oauth.token import TokenGrant

T = TypeVar("T")
Decoder = Callable[[object, str], T]
MAX_JSON_DEPTH: Final = 8  # JSON values inside a request (JWK, extra claims)


# -- scalar readers -------------------------------------------------------------------------
def text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise CodecError(f"{what}: expected text")
    return value


def blob(value: object, what: str) -> bytes:
    if not isinstance(value, bytes):
        raise CodecError(f"{what}: expected bytes")
    return value


def integer(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise CodecError(f"{what}: expected an integer")
    return value


def count(value: object, what: str) -> int:
    number = integer(value, what)
    if number < 0:
        raise CodecError(f"{what}: expected a non-negative integer")
    return number


def boolean(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise CodecError(f"{what}: expected true or false")
    return value


def optional(decode: Decoder[T]) -> Decoder[T | None]:
    def read(value: object, what: str) -> T | None:
        return None if value is None else decode(value, what)

    return read


def array(value: object, what: str, decode: Decoder[T]) -> tuple[T, ...]:
    if not isinstance(value, list):
        raise CodecError(f"{what}: expected an array")
    each = f"{what}[]"  # the index is named only when an item is refused (cheaper)
    out: list[T] = []
    for i, item in enumerate(value):
        try:
            out.append(decode(item, each))
        except CodecError as exc:
            raise CodecError(str(exc).replace(each, f"{what}[{i}]", 1)) from None
    return tuple(out)


_optional_text = optional(text)
_optional_blob = optional(blob)


def index_pair(value: object, what: str) -> tuple[str, bytes]:
    """A (kind, blind index) pair: an array [text, bytes]."""
    if not isinstance(value, list) or len(value) != 2:
        raise CodecError(f"{what}: expected [kind, digest]")
    return text(value[0], f"{what}.kind"), blob(value[1], f"{what}.digest")


def json_value(value: object, what: str, depth: int = 0) -> object:
    """A JSON value (null, bool, number, text, array, object); bytes are not JSON."""
    if depth > MAX_JSON_DEPTH:
        raise CodecError(f"{what}: nested deeper than {MAX_JSON_DEPTH}")
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list):
        return [json_value(v, f"{what}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: json_value(v, f"{what}.{k}", depth + 1) for k, v in value.items()}
    raise CodecError(f"{what}: expected a JSON value")


def json_object(value: object, what: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise CodecError(f"{what}: expected a JSON object")
    return {k: json_value(v, f"{what}.{k}", 1) for k, v in value.items()}


class Fields:
    """Typed, exact reading of one map: every listed key present, no other key."""

    __slots__ = ("_map", "_what")

    def __init__(self, value: object, what: str, keys: Collection[str]) -> None:
        if not isinstance(value, dict):
            raise CodecError(f"{what}: expected a map")
        if len(value) != len(keys) or not all(k in value for k in keys):
            missing = sorted(set(keys) - value.keys())
            if missing:
                raise CodecError(f"{what}: missing field(s) {', '.join(missing)}")
            raise CodecError(f"{what}: {len(value.keys() - set(keys))} unknown field(s)")
        self._map: dict[str, object] = value
        self._what = what

    def get(self, key: str, decode: Decoder[T]) -> T:
        return decode(self._map[key], f"{self._what}.{key}")

    # The scalar readers take the decoder's exact types at once and name the field (an
    # f-string per field) only on the way to the error; the decoder makes no subclasses.
    def text(self, key: str) -> str:
        value = self._map[key]
        return value if type(value) is str else self.get(key, text)

    def opt_text(self, key: str) -> str | None:
        value = self._map[key]
        return value if value is None or type(value) is str else self.get(key, _optional_text)

    def blob(self, key: str) -> bytes:
        value = self._map[key]
        return value if type(value) is bytes else self.get(key, blob)

    def opt_blob(self, key: str) -> bytes | None:
        value = self._map[key]
        return value if value is None or type(value) is bytes else self.get(key, _optional_blob)

    def integer(self, key: str) -> int:
        value = self._map[key]
        return value if type(value) is int else self.get(key, integer)

    def count(self, key: str) -> int:
        value = self._map[key]
        return value if type(value) is int and value >= 0 else self.get(key, count)

    def boolean(self, key: str) -> bool:
        value = self._map[key]
        return value if type(value) is bool else self.get(key, boolean)

    def array(self, key: str, decode: Decoder[T]) -> tuple[T, ...]:
        return array(self._map[key], f"{self._what}.{key}", decode)

    def pairs(self, key: str) -> tuple[tuple[str, bytes], ...]:
        return self.array(key, index_pair)


def _pairs(pairs: tuple[tuple[str, bytes], ...]) -> list[list[object]]:
    return [[kind, digest] for kind, digest in pairs]


# -- api dataclasses ------------------------------------------------------------------------
def encode_status(value: api.EnclaveStatus) -> dict[str, object]:
    return {
        "tee": value.tee,
        "root_key_id": value.root_key_id,
        "version": value.version,
        "warning": value.warning,
    }


def decode_status(value: object, what: str = "EnclaveStatus") -> api.EnclaveStatus:
    f = Fields(value, what, ("tee", "root_key_id", "version", "warning"))
    return api.EnclaveStatus(
        tee=f.text("tee"),
        root_key_id=f.text("root_key_id"),
        version=f.text("version"),
        warning=f.opt_text("warning"),
    )


def encode_row_error(value: api.RowError) -> dict[str, object]:
    return {"row": value.row, "field": value.field, "reason": value.reason}


def decode_row_error(value: object, what: str = "RowError") -> api.RowError:
    f = Fields(value, what, ("row", "field", "reason"))
    return api.RowError(row=f.count("row"), field=f.text("field"), reason=f.text("reason"))


def encode_sealed_record(value: api.SealedRecord) -> dict[str, object]:
    return {
        "record_type": value.record_type,
        "version": value.version,
        "ciphertext": value.ciphertext,
    }


def decode_sealed_record(value: object, what: str = "SealedRecord") -> api.SealedRecord:
    f = Fields(value, what, ("record_type", "version", "ciphertext"))
    return api.SealedRecord(
        record_type=f.text("record_type"),
        version=f.integer("version"),
        ciphertext=f.blob("ciphertext"),
    )


def encode_sealed_policyholder(value: api.SealedPolicyholder) -> dict[str, object]:
    return {
        "pseudonym": value.pseudonym,
        "kvnr_index": value.kvnr_index,
        "root_key_id": value.root_key_id,
        "wrapped_key": value.wrapped_key,
        "records": [encode_sealed_record(r) for r in value.records],
        "lookup_indexes": _pairs(value.lookup_indexes),
    }


def decode_sealed_policyholder(
    value: object, what: str = "SealedPolicyholder"
) -> api.SealedPolicyholder:
    f = Fields(
        value,
        what,
        ("pseudonym", "kvnr_index", "root_key_id", "wrapped_key", "records", "lookup_indexes"),
    )
    return api.SealedPolicyholder(
        pseudonym=f.text("pseudonym"),
        kvnr_index=f.blob("kvnr_index"),
        root_key_id=f.text("root_key_id"),
        wrapped_key=f.opt_blob("wrapped_key"),
        records=f.array("records", decode_sealed_record),
        lookup_indexes=f.pairs("lookup_indexes"),
    )


def encode_prepared_import(value: api.PreparedImport) -> dict[str, object]:
    return {
        "import_id": value.import_id,
        "format": value.format,
        "row_count": value.row_count,
        "chunk_count": value.chunk_count,
        "errors": [encode_row_error(e) for e in value.errors],
        "errors_truncated": value.errors_truncated,
    }


def decode_prepared_import(value: object, what: str = "PreparedImport") -> api.PreparedImport:
    f = Fields(
        value,
        what,
        ("import_id", "format", "row_count", "chunk_count", "errors", "errors_truncated"),
    )
    return api.PreparedImport(
        import_id=f.text("import_id"),
        format=f.text("format"),
        row_count=f.count("row_count"),
        chunk_count=f.count("chunk_count"),
        errors=f.array("errors", decode_row_error),
        errors_truncated=f.count("errors_truncated"),
    )


def encode_sealed_chunk(value: api.SealedChunk) -> dict[str, object]:
    return {
        "rows": list(value.rows),
        "sealed": [encode_sealed_policyholder(s) for s in value.sealed],
        "errors": [encode_row_error(e) for e in value.errors],
    }


def decode_sealed_chunk(value: object, what: str = "SealedChunk") -> api.SealedChunk:
    f = Fields(value, what, ("rows", "sealed", "errors"))
    rows = f.array("rows", count)
    sealed = f.array("sealed", decode_sealed_policyholder)
    if len(rows) != len(sealed):
        raise CodecError(f"{what}: rows and sealed differ in length")
    return api.SealedChunk(rows=rows, sealed=sealed, errors=f.array("errors", decode_row_error))


def encode_identity_lookup(value: api.IdentityLookup) -> dict[str, object]:
    return {"proof_id": value.proof_id, "method": value.method, "lookups": _pairs(value.lookups)}


def decode_identity_lookup(value: object, what: str = "IdentityLookup") -> api.IdentityLookup:
    f = Fields(value, what, ("proof_id", "method", "lookups"))
    return api.IdentityLookup(
        proof_id=f.text("proof_id"), method=f.text("method"), lookups=f.pairs("lookups")
    )


def encode_eid_started(value: api.EidStarted) -> dict[str, object]:
    return {
        "handle": value.handle,
        "psk_id": value.psk_id,
        "psk_key": value.psk_key,
        "ecard_server_address": value.ecard_server_address,
    }


def decode_eid_started(value: object, what: str = "EidStarted") -> api.EidStarted:
    f = Fields(value, what, ("handle", "psk_id", "psk_key", "ecard_server_address"))
    return api.EidStarted(
        handle=f.text("handle"),
        psk_id=f.text("psk_id"),
        psk_key=f.text("psk_key"),
        ecard_server_address=f.opt_text("ecard_server_address"),
    )


def encode_identity_match(value: api.IdentityMatch) -> dict[str, object]:
    return {
        "pseudonym": value.pseudonym,
        "method": value.method,
        "new_lookup_indexes": _pairs(value.new_lookup_indexes),
        "proof_ticket": value.proof_ticket,
        "proofed_at": value.proofed_at,
    }


def decode_identity_match(value: object, what: str = "IdentityMatch") -> api.IdentityMatch:
    f = Fields(
        value, what, ("pseudonym", "method", "new_lookup_indexes", "proof_ticket", "proofed_at")
    )
    return api.IdentityMatch(
        pseudonym=f.text("pseudonym"),
        method=f.text("method"),
        new_lookup_indexes=f.pairs("new_lookup_indexes"),
        proof_ticket=f.blob("proof_ticket"),
        proofed_at=f.integer("proofed_at"),
    )


# -- enclave-vouched sessions -----------------------------------------------------------------
def encode_binding_request(value: api.DeviceBindingRequest) -> dict[str, object]:
    return {
        "proof_ticket": value.proof_ticket,
        "device_id": value.device_id,
        "public_key": value.public_key,
        "key_class": value.key_class,
        "attestation_format": value.attestation_format,
    }


def decode_binding_request(
    value: object, what: str = "DeviceBindingRequest"
) -> api.DeviceBindingRequest:
    f = Fields(
        value,
        what,
        ("proof_ticket", "device_id", "public_key", "key_class", "attestation_format"),
    )
    return api.DeviceBindingRequest(
        proof_ticket=f.blob("proof_ticket"),
        device_id=f.text("device_id"),
        public_key=f.blob("public_key"),
        key_class=f.text("key_class"),
        attestation_format=f.text("attestation_format"),
    )


def encode_bound_device_key(value: api.BoundDeviceKey) -> dict[str, object]:
    return {
        "pseudonym": value.pseudonym,
        "proofing_method": value.proofing_method,
        "proofed_at": value.proofed_at,
        "binding": value.binding,
    }


def decode_bound_device_key(value: object, what: str = "BoundDeviceKey") -> api.BoundDeviceKey:
    f = Fields(value, what, ("pseudonym", "proofing_method", "proofed_at", "binding"))
    return api.BoundDeviceKey(
        pseudonym=f.text("pseudonym"),
        proofing_method=f.text("proofing_method"),
        proofed_at=f.integer("proofed_at"),
        binding=f.blob("binding"),
    )


_LOGIN_TEXT = (
    "device_id",
    "pseudonym",
    "key_class",
    "attestation_format",
    "proofing_method",
)
_LOGIN_INT = ("proofed_at", "sign_count", "counter", "session_ttl")
_LOGIN_BLOB = ("public_key", "binding", "challenge", "signature")


def encode_login_request(value: api.LoginRequest) -> dict[str, object]:
    out: dict[str, object] = {
        name: getattr(value, name) for name in (*_LOGIN_TEXT, *_LOGIN_INT, *_LOGIN_BLOB)
    }
    out["owner"] = None if value.owner is None else encode_sealed_policyholder(value.owner)
    return out


def decode_login_request(value: object, what: str = "LoginRequest") -> api.LoginRequest:
    f = Fields(value, what, (*_LOGIN_TEXT, *_LOGIN_INT, *_LOGIN_BLOB, "owner"))
    return api.LoginRequest(
        device_id=f.text("device_id"),
        pseudonym=f.text("pseudonym"),
        key_class=f.text("key_class"),
        attestation_format=f.text("attestation_format"),
        proofing_method=f.text("proofing_method"),
        proofed_at=f.integer("proofed_at"),
        sign_count=f.integer("sign_count"),
        counter=f.integer("counter"),
        session_ttl=f.integer("session_ttl"),
        public_key=f.blob("public_key"),
        binding=f.blob("binding"),
        challenge=f.blob("challenge"),
        signature=f.blob("signature"),
        owner=f.get("owner", optional(decode_sealed_policyholder)),
    )


def encode_login_grant(value: api.LoginGrant) -> dict[str, object]:
    return {
        "session": value.session,
        "ticket": value.ticket,
        "history": None if value.history is None else encode_sealed_history_event(value.history),
    }


def decode_login_grant(value: object, what: str = "LoginGrant") -> api.LoginGrant:
    f = Fields(value, what, ("session", "ticket", "history"))
    return api.LoginGrant(
        session=f.text("session"),
        ticket=f.blob("ticket"),
        history=f.get("history", optional(decode_sealed_history_event)),
    )


def encode_history_event(value: api.HistoryEvent) -> dict[str, object]:
    return {
        "kind": value.kind,
        "at": value.at,
        "device_id": value.device_id,
        "detail": value.detail,
    }


def decode_history_event(value: object, what: str = "HistoryEvent") -> api.HistoryEvent:
    f = Fields(value, what, ("kind", "at", "device_id", "detail"))
    return api.HistoryEvent(
        kind=f.text("kind"),
        at=f.integer("at"),
        device_id=f.opt_text("device_id"),
        detail=f.opt_text("detail"),
    )


def encode_sealed_history_event(value: api.SealedHistoryEvent) -> dict[str, object]:
    return {
        "event_id": value.event_id,
        "created_at": value.created_at,
        "ciphertext": value.ciphertext,
    }


def decode_sealed_history_event(
    value: object, what: str = "SealedHistoryEvent"
) -> api.SealedHistoryEvent:
    f = Fields(value, what, ("event_id", "created_at", "ciphertext"))
    return api.SealedHistoryEvent(
        event_id=f.text("event_id"),
        created_at=f.integer("created_at"),
        ciphertext=f.blob("ciphertext"),
    )


# -- the protocol dataclasses inside an IdTokenRequest --------------------------------------
def encode_token_grant(value: TokenGrant) -> dict[str, object]:
    return {
        "client_id": value.client_id,
        "nonce": value.nonce,
        "id_token_version": value.id_token_version,
        "consented_claims": list(value.consented_claims),
    }


def decode_token_grant(value: object, what: str = "TokenGrant") -> TokenGrant:
    f = Fields(value, what, ("client_id", "nonce", "id_token_version", "consented_claims"))
    return TokenGrant(
        client_id=f.text("client_id"),
        nonce=f.text("nonce"),
        id_token_version=f.text("id_token_version"),
        consented_claims=f.array("consented_claims", text),
    )


def encode_id_token_request(value: api.IdTokenRequest) -> dict[str, object]:
    return {
        "sealed": encode_sealed_policyholder(value.sealed),
        "issuer": value.issuer,
        "grant": encode_token_grant(value.grant),
        "ticket": value.ticket,
        "single_sign_on": value.single_sign_on,
        "kid": value.kid,
        "x5c": list(value.x5c),
        "rp_statements": list(value.rp_statements),
        "rp_encryption_jwk": dict(value.rp_encryption_jwk),
    }


_ID_TOKEN_REQUEST = (
    "sealed",
    "issuer",
    "grant",
    "ticket",
    "single_sign_on",
    "kid",
    "x5c",
    "rp_statements",
    "rp_encryption_jwk",
)


def decode_id_token_request(value: object, what: str = "IdTokenRequest") -> api.IdTokenRequest:
    f = Fields(value, what, _ID_TOKEN_REQUEST)
    return api.IdTokenRequest(
        sealed=f.get("sealed", decode_sealed_policyholder),
        issuer=f.text("issuer"),
        grant=f.get("grant", decode_token_grant),
        ticket=f.blob("ticket"),
        single_sign_on=f.boolean("single_sign_on"),
        kid=f.text("kid"),
        x5c=f.array("x5c", text),
        rp_statements=f.array("rp_statements", text),
        rp_encryption_jwk=f.get("rp_encryption_jwk", json_object),
    )


# Every dataclass that crosses, with its pair (the tests round-trip each one).


# -- audit trail ----------------------------------------------------------------------------
def encode_checkpoint(value: Checkpoint) -> dict[str, object]:
    return {"seq": value.seq, "head": value.head, "time": value.time}


def decode_checkpoint(value: object, what: str = "Checkpoint") -> Checkpoint:
    f = Fields(value, what, ("seq", "head", "time"))
    return Checkpoint(seq=f.count("seq"), head=f.blob("head"), time=f.integer("time"))


def encode_signed_checkpoint(value: SignedCheckpoint) -> dict[str, object]:
    return {"checkpoint": encode_checkpoint(value.checkpoint), "jws": value.jws}


def decode_signed_checkpoint(value: object, what: str = "SignedCheckpoint") -> SignedCheckpoint:
    f = Fields(value, what, ("checkpoint", "jws"))
    return SignedCheckpoint(checkpoint=f.get("checkpoint", decode_checkpoint), jws=f.text("jws"))


def encode_audit_event(value: AuditEvent) -> dict[str, object]:
    return {
        "time": value.time,
        "kind": value.kind.value,
        "outcome": value.outcome.value,
        "actor": value.actor,
        "subject": value.subject,
        "client_id": value.client_id,
        "details": details_json(value.details),
    }


def decode_audit_event(value: object, what: str = "AuditEvent") -> AuditEvent:
    f = Fields(value, what, ("time", "kind", "outcome", "actor", "subject", "client_id", "details"))
    try:
        details = json_object(json.loads(f.text("details")), f"{what}.details")
        return AuditEvent(
            time=f.integer("time"),
            kind=AuditKind(f.text("kind")),
            outcome=AuditOutcome(f.text("outcome")),
            actor=f.opt_text("actor"),
            subject=f.opt_text("subject"),
            client_id=f.opt_text("client_id"),
            details={k: text(v, f"{what}.details") for k, v in details.items()},
        )
    except (ValueError, TypeError) as exc:
        if isinstance(exc, CodecError):
            raise
        raise CodecError(f"{what}: not a valid audit event") from None


def encode_audit_entry(value: AuditEntry) -> dict[str, object]:
    return {
        "seq": value.seq,
        "event": encode_audit_event(value.event),
        "prev_hash": value.prev_hash,
        "entry_hash": value.entry_hash,
    }


def decode_audit_entry(value: object, what: str = "AuditEntry") -> AuditEntry:
    f = Fields(value, what, ("seq", "event", "prev_hash", "entry_hash"))
    return AuditEntry(
        seq=f.count("seq"),
        event=f.get("event", decode_audit_event),
        prev_hash=f.blob("prev_hash"),
        entry_hash=f.blob("entry_hash"),
    )


def encode_audit_request(value: api.AuditCheckpointRequest) -> dict[str, object]:
    return {"entries": [encode_audit_entry(e) for e in value.entries]}


def decode_audit_request(
    value: object, what: str = "AuditCheckpointRequest"
) -> api.AuditCheckpointRequest:
    f = Fields(value, what, ("entries",))
    entries = f.array("entries", decode_audit_entry)
    if len(entries) > api.MAX_AUDIT_CHECKPOINT_ENTRIES:
        raise CodecError(f"{what}: at most {api.MAX_AUDIT_CHECKPOINT_ENTRIES} entries")
    return api.AuditCheckpointRequest(entries=entries)


# -- key release (enclave to enclave; healthid.enclave.key_release) --------------------------
def encode_released_root_key(value: ReleasedRootKey) -> dict[str, object]:
    return {
        "root_key_id": value.root_key_id,
        "attestation": value.attestation,
        "wrapped": value.wrapped,
    }


def decode_released_root_key(value: object, what: str = "ReleasedRootKey") -> ReleasedRootKey:
    f = Fields(value, what, ("root_key_id", "attestation", "wrapped"))
    return ReleasedRootKey(
        root_key_id=f.text("root_key_id"),
        attestation=f.blob("attestation"),
        wrapped=f.blob("wrapped"),
    )


# -- the VAU channel (issue #6) -------------------------------------------------------------
def text_pair(value: object, what: str) -> tuple[str, str]:
    """A (name, value) routing argument: an array [text, text]."""
    if not isinstance(value, list) or len(value) != 2:
        raise CodecError(f"{what}: expected [name, value]")
    return text(value[0], f"{what}.name"), text(value[1], f"{what}.value")


def encode_requested_claims(value: api.RequestedClaims) -> dict[str, object]:
    return {"essential": list(value.essential), "optional": list(value.optional)}


def decode_requested_claims(value: object, what: str = "RequestedClaims") -> api.RequestedClaims:
    f = Fields(value, what, ("essential", "optional"))
    return api.RequestedClaims(
        essential=f.array("essential", text), optional=f.array("optional", text)
    )


def encode_vau_context(value: api.VauContext) -> dict[str, object]:
    return {
        "op": value.op,
        "session": value.session,
        "args": [[name, arg] for name, arg in value.args],
        "pseudonym": value.pseudonym,
        "sealed": None if value.sealed is None else encode_sealed_policyholder(value.sealed),
        "history": [encode_sealed_history_event(e) for e in value.history],
        "claims": None if value.claims is None else encode_requested_claims(value.claims),
        "challenge": value.challenge,
        "ticket": value.ticket,
        "login": None if value.login is None else encode_login_request(value.login),
    }


def decode_vau_context(value: object, what: str = "VauContext") -> api.VauContext:
    f = Fields(
        value,
        what,
        (
            "op",
            "session",
            "args",
            "pseudonym",
            "sealed",
            "history",
            "claims",
            "challenge",
            "ticket",
            "login",
        ),
    )
    return api.VauContext(
        op=f.text("op"),
        session=f.text("session"),
        args=f.array("args", text_pair),
        pseudonym=f.opt_text("pseudonym"),
        sealed=f.get("sealed", optional(decode_sealed_policyholder)),
        history=f.array("history", decode_sealed_history_event),
        claims=f.get("claims", optional(decode_requested_claims)),
        challenge=f.opt_blob("challenge"),
        ticket=f.opt_blob("ticket"),
        login=f.get("login", optional(decode_login_request)),
    )


def encode_vau_reply(value: api.VauReply) -> dict[str, object]:
    return {
        "status": value.status,
        "body": value.body,
        "cid": value.cid,
        "outcome": value.outcome,
        "lookup": None if value.lookup is None else encode_identity_lookup(value.lookup),
        "login": None if value.login is None else encode_login_grant(value.login),
    }


def decode_vau_reply(value: object, what: str = "VauReply") -> api.VauReply:
    f = Fields(value, what, ("status", "body", "cid", "outcome", "lookup", "login"))
    return api.VauReply(
        status=f.count("status"),
        body=f.blob("body"),
        cid=f.opt_text("cid"),
        outcome=f.text("outcome"),
        lookup=f.get("lookup", optional(decode_identity_lookup)),
        login=f.get("login", optional(decode_login_grant)),
    )


DATACLASS_CODECS: Final[Mapping[type[Any], tuple[Callable[[Any], object], Decoder[Any]]]] = {
    api.EnclaveStatus: (encode_status, decode_status),
    api.RowError: (encode_row_error, decode_row_error),
    api.SealedRecord: (encode_sealed_record, decode_sealed_record),
    api.SealedPolicyholder: (encode_sealed_policyholder, decode_sealed_policyholder),
    api.PreparedImport: (encode_prepared_import, decode_prepared_import),
    api.SealedChunk: (encode_sealed_chunk, decode_sealed_chunk),
    api.IdentityLookup: (encode_identity_lookup, decode_identity_lookup),
    api.EidStarted: (encode_eid_started, decode_eid_started),
    api.IdentityMatch: (encode_identity_match, decode_identity_match),
    api.HistoryEvent: (encode_history_event, decode_history_event),
    api.SealedHistoryEvent: (encode_sealed_history_event, decode_sealed_history_event),
    api.IdTokenRequest: (encode_id_token_request, decode_id_token_request),
    api.DeviceBindingRequest: (encode_binding_request, decode_binding_request),
    api.BoundDeviceKey: (encode_bound_device_key, decode_bound_device_key),
    api.LoginRequest: (encode_login_request, decode_login_request),
    api.LoginGrant: (encode_login_grant, decode_login_grant),
    TokenGrant: (encode_token_grant, decode_token_grant),
    Checkpoint: (encode_checkpoint, decode_checkpoint),
    SignedCheckpoint: (encode_signed_checkpoint, decode_signed_checkpoint),
    AuditEvent: (encode_audit_event, decode_audit_event),
    AuditEntry: (encode_audit_entry, decode_audit_entry),
    api.AuditCheckpointRequest: (encode_audit_request, decode_audit_request),
    ReleasedRootKey: (encode_released_root_key, decode_released_root_key),
    api.RequestedClaims: (encode_requested_claims, decode_requested_claims),
    api.VauContext: (encode_vau_context, decode_vau_context),
    api.VauReply: (encode_vau_reply, decode_vau_reply),
}
