"""The typed mapping of every dataclass that crosses the enclave boundary, and the allow-list."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import Any

import pytest

from healthid.enclave import api
from healthid.enclave.key_release import KeyReleaseSource, ReleasedRootKey
from healthid.enclave.rpc import cbor, schema
from healthid.enclave.rpc.errors import CodecError
from healthid.enclave.rpc.methods import KEY_RELEASE_METHODS, METHODS, UPLOAD_METHOD
from healthid.protocol.audit import (
    AuditEntry,
    AuditEvent,
    AuditKind,
    AuditOutcome,
    Checkpoint,
    SignedCheckpoint,
)
from healthid.protocol.oauth.token import TokenGrant

HOLDER = api.SealedPolicyholder(
    pseudonym="p1",
    kvnr_index=b"\x01" * 32,
    root_key_id="rk",
    wrapped_key=b"\x02" * 60,
    records=(api.SealedRecord(record_type="master", version=1, ciphertext=b"\x03" * 90),),
    lookup_indexes=(("name_birth", b"\x04" * 32),),
)
SHREDDED = dataclasses.replace(HOLDER, wrapped_key=None, records=(), lookup_indexes=())
ROW_ERROR = api.RowError(row=3, field="kvnr", reason="invalid check digit")
GRANT = TokenGrant(
    client_id="https://rp.example", nonce="n", id_token_version="2.0.0", consented_claims=("a",)
)
CHECKPOINT = Checkpoint(seq=7, head=b"\x06" * 32, time=1_700_000_000)
EVENT = AuditEvent(
    time=1_700_000_000,
    kind=AuditKind.LOGIN,
    outcome=AuditOutcome.FAILURE,
    actor="0" * 32,
    subject="d" * 32,
    client_id="https://rp.example",
    details={"reason": "bad signature"},
)
ENTRY = AuditEntry(seq=8, event=EVENT, prev_hash=b"\x06" * 32, entry_hash=b"\x07" * 32)
CLAIMS = api.RequestedClaims(essential=("openid",), optional=("birthdate", "x"))
EXAMPLES: dict[type[Any], list[object]] = {
    Checkpoint: [CHECKPOINT],
    SignedCheckpoint: [SignedCheckpoint(checkpoint=CHECKPOINT, jws="a.b.c")],
    AuditEvent: [EVENT, AuditEvent(time=1, kind=AuditKind.KEY_ROTATION)],
    AuditEntry: [ENTRY],
    api.AuditCheckpointRequest: [
        api.AuditCheckpointRequest(entries=(ENTRY,)),
        api.AuditCheckpointRequest(entries=()),
    ],
    api.EnclaveStatus: [
        api.EnclaveStatus(tee="simulated", root_key_id="rk", version="1", warning="INSECURE"),
        api.EnclaveStatus(tee="sgx", root_key_id="rk", version="1"),
    ],
    api.RowError: [ROW_ERROR, api.RowError(row=0, field="file", reason="empty")],
    api.SealedRecord: [HOLDER.records[0]],
    api.SealedPolicyholder: [HOLDER, SHREDDED],
    api.PreparedImport: [
        api.PreparedImport(
            import_id="i", format="csv", row_count=5, chunk_count=1, errors=(ROW_ERROR,)
        ),
        api.PreparedImport(
            import_id="i", format="json", row_count=0, chunk_count=0, errors=(), errors_truncated=7
        ),
    ],
    api.SealedChunk: [
        api.SealedChunk(rows=(2, 4), sealed=(HOLDER, SHREDDED), errors=(ROW_ERROR,)),
        api.SealedChunk(rows=(), sealed=(), errors=()),
    ],
    api.IdentityLookup: [
        api.IdentityLookup(proof_id="pr", method="egk", lookups=(("kvnr", b"\x05" * 32),))
    ],
    api.EidStarted: [
        api.EidStarted(handle="h", psk_id="id", psk_key="00ff", ecard_server_address="x"),
        api.EidStarted(handle="h", psk_id="id", psk_key="00ff"),
    ],
    api.IdentityMatch: [
        api.IdentityMatch(pseudonym="p", method="eid", new_lookup_indexes=(("eid_rid", b"r"),)),
        api.IdentityMatch(pseudonym="p", method="egk"),
        api.IdentityMatch(pseudonym="p", method="egk", proof_ticket=b"t" * 40, proofed_at=9),
    ],
    api.DeviceBindingRequest: [
        api.DeviceBindingRequest(
            proof_ticket=b"t" * 40,
            device_id="d" * 32,
            public_key=b"\x30" * 91,
            key_class="software",
            attestation_format="healthid-software",
        )
    ],
    api.BoundDeviceKey: [
        api.BoundDeviceKey(pseudonym="p", proofing_method="egk", proofed_at=1, binding=b"b" * 32)
    ],
    api.LoginRequest: [
        api.LoginRequest(
            device_id="d" * 32,
            pseudonym="p",
            public_key=b"\x30" * 91,
            key_class="hardware",
            attestation_format="apple-appattest",
            proofing_method="eid",
            proofed_at=5,
            sign_count=0,
            binding=b"b" * 32,
            challenge=b"c" * 32,
            counter=2,
            signature=b"s" * 64,
            session_ttl=300,
            owner=owner,
        )
        for owner in (HOLDER, None)
    ],
    api.LoginGrant: [
        api.LoginGrant(
            session="d" * 32 + "." + "s" * 43,
            ticket=b"t" * 80,
            history=api.SealedHistoryEvent(event_id="e", created_at=5, ciphertext=b"c"),
        ),
        api.LoginGrant(session="x.y", ticket=b"t", history=None),
    ],
    api.HistoryEvent: [
        api.HistoryEvent(kind="login", at=1, device_id="d", detail="rp"),
        api.HistoryEvent(kind="enrolled", at=-1),
    ],
    api.SealedHistoryEvent: [api.SealedHistoryEvent(event_id="e", created_at=5, ciphertext=b"c")],
    api.IdTokenRequest: [
        api.IdTokenRequest(
            sealed=HOLDER,
            issuer="https://idp.example",
            grant=GRANT,
            ticket=b"t" * 80,
            single_sign_on=True,
            kid="k",
            x5c=("MIIB", "MIIC"),
            rp_statements=("a.b.c", "d.e.f"),
            rp_encryption_jwk={"kty": "EC", "crv": "P-256", "x": "a", "y": "b", "kid": "e"},
        )
    ],
    TokenGrant: [GRANT],
    ReleasedRootKey: [ReleasedRootKey(root_key_id="rk", attestation=b"{}", wrapped=b"\x01" * 61)],
    # the VAU channel (issue #6)
    api.RequestedClaims: [CLAIMS, api.RequestedClaims(essential=(), optional=())],
    api.VauContext: [
        api.VauContext(op="status"),
        api.VauContext(op="egk_prove", args=(("enrolment_id", "e1"),), challenge=b"\x08" * 32),
        api.VauContext(
            op="consent_claims",
            session="d" * 32 + "." + "s" * 43,
            args=(("client_id", "https://rp.example"), ("request_uri", "urn:x")),
            pseudonym="p1",
            sealed=HOLDER,
            history=(api.SealedHistoryEvent(event_id="e", created_at=5, ciphertext=b"c"),),
            claims=CLAIMS,
            ticket=b"t" * 80,
        ),
    ],
    api.VauReply: [
        api.VauReply(status=200, body=b"m2", cid="ab" * 32),
        api.VauReply(status=404, body=b"\xa1", outcome="unknown_cid"),
        api.VauReply(
            status=200,
            body=b"\x02\x00\x02",
            lookup=api.IdentityLookup(proof_id="pr", method="egk", lookups=(("kvnr", b"k"),)),
        ),
    ],
}


def public_methods(protocol: type[Any]) -> set[str]:
    return {
        name
        for name, _ in inspect.getmembers(protocol, inspect.isfunction)
        if not name.startswith("_")
    }


def crossing_dataclasses() -> set[type[Any]]:
    """Every dataclass reachable from the method signatures of the EnclaveClient and of the
    enclave-to-enclave key-release group."""
    found: set[type[Any]] = set()

    def visit(hint: object) -> None:
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            if hint not in found:
                found.add(hint)
                for field_hint in typing.get_type_hints(hint).values():
                    visit(field_hint)
            return
        for arg in typing.get_args(hint):
            visit(arg)

    for protocol in (api.EnclaveClient, KeyReleaseSource):
        for name, method in inspect.getmembers(protocol, inspect.isfunction):
            if not name.startswith("_"):
                for hint in typing.get_type_hints(method).values():
                    visit(hint)
    return found


def test_every_dataclass_that_crosses_has_an_explicit_codec_and_an_example() -> None:
    crossing = crossing_dataclasses()
    assert api.IdTokenRequest in crossing and TokenGrant in crossing
    assert crossing == set(schema.DATACLASS_CODECS) == set(EXAMPLES)


def test_the_allow_list_is_the_enclave_client_the_upload_and_the_key_release_group() -> None:
    client_methods = public_methods(api.EnclaveClient)
    # the key-release group is enclave to enclave: not part of what the host calls
    assert KEY_RELEASE_METHODS == public_methods(KeyReleaseSource)
    assert not KEY_RELEASE_METHODS & client_methods
    assert set(METHODS) == client_methods | {UPLOAD_METHOD} | KEY_RELEASE_METHODS


@pytest.mark.parametrize(
    ("cls", "value"),
    [(cls, value) for cls, values in EXAMPLES.items() for value in values],
    ids=lambda v: v.__name__ if isinstance(v, type) else "",
)
def test_every_dataclass_round_trips_through_cbor(cls: type[Any], value: object) -> None:
    encode, decode = schema.DATACLASS_CODECS[cls]
    wire = cbor.decode(cbor.encode(encode(value)))
    back = decode(wire, cls.__name__)
    assert back == value and type(back) is cls
    assert cbor.encode(encode(back)) == cbor.encode(encode(value))


def wire_of(value: object) -> dict[str, object]:
    encode, _ = schema.DATACLASS_CODECS[type(value)]
    wire = cbor.decode(cbor.encode(encode(value)))
    assert isinstance(wire, dict)
    return wire


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("pseudonym", b"p1"),
        ("kvnr_index", "0101"),
        ("wrapped_key", 5),
        ("records", {}),
        ("lookup_indexes", [["kvnr"]]),
        ("lookup_indexes", [[1, b"x"]]),
    ],
)
def test_a_field_of_the_wrong_type_is_refused_by_name(field: str, bad: object) -> None:
    wire = wire_of(HOLDER) | {field: bad}
    with pytest.raises(CodecError, match=f"^SealedPolicyholder.{field}"):
        schema.decode_sealed_policyholder(wire)


def test_missing_and_unknown_fields_are_refused_without_echoing_them() -> None:
    wire = wire_of(ROW_ERROR)
    with pytest.raises(CodecError, match="missing field"):
        schema.decode_row_error({k: v for k, v in wire.items() if k != "reason"})
    with pytest.raises(CodecError, match="1 unknown field") as info:
        schema.decode_row_error(wire | {"A123456780": 1})
    assert "A123456780" not in str(info.value)


def test_a_value_is_never_echoed_in_a_codec_error() -> None:
    wire = wire_of(api.HistoryEvent(kind="login", at=1)) | {"at": "Erika Mustermann"}
    with pytest.raises(CodecError) as info:
        schema.decode_history_event(wire)
    assert str(info.value) == "HistoryEvent.at: expected an integer"


def test_bool_is_not_an_integer_and_counts_are_not_negative() -> None:
    with pytest.raises(CodecError, match="expected an integer"):
        schema.decode_row_error(wire_of(ROW_ERROR) | {"row": True})
    with pytest.raises(CodecError, match="non-negative"):
        schema.decode_row_error(wire_of(ROW_ERROR) | {"row": -1})


def test_rows_and_sealed_of_a_chunk_must_align() -> None:
    wire = wire_of(EXAMPLES[api.SealedChunk][0]) | {"rows": [2]}
    with pytest.raises(CodecError, match="differ in length"):
        schema.decode_sealed_chunk(wire)


def test_json_fields_refuse_bytes_and_deep_nesting() -> None:
    request = wire_of(EXAMPLES[api.IdTokenRequest][0])
    with pytest.raises(CodecError, match=r"rp_encryption_jwk\.x: expected a JSON value"):
        schema.decode_id_token_request(request | {"rp_encryption_jwk": {"x": b"raw"}})
    deep: object = 1
    for _ in range(schema.MAX_JSON_DEPTH + 2):
        deep = [deep]
    with pytest.raises(CodecError, match="nested deeper"):
        schema.decode_id_token_request(request | {"rp_encryption_jwk": {"x": deep}})
