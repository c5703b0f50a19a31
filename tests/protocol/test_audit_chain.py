"""The audit hash chain (healthid.protocol.audit): every kind of tampering is found."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from healthid.keys import es256
from healthid.keys.jwk import signing_jwk
from healthid.protocol.audit import (
    GENESIS_HASH,
    TYP_AUDIT_CHECKPOINT,
    AuditEntry,
    AuditEvent,
    AuditEventError,
    AuditKind,
    AuditOutcome,
    ChainError,
    ChainItem,
    Checkpoint,
    FindingKind,
    SignedCheckpoint,
    UnreadableEntry,
    canonical,
    chain,
    checkpoint_claims,
    checkpoint_verifier,
    entry_from_row,
    entry_hash,
    entry_to_row,
    extend,
    truncate_ip,
    verify_chain,
)
from healthid.protocol.jose import sign_compact

PSEUDONYM = "0123456789abcdef0123456789abcdef"
# Known-answer vector: the deterministic CBOR of one entry and its hash after genesis.
KAT_EVENT = AuditEvent(
    time=1764500000,
    kind=AuditKind.TOKEN_REQUEST,
    outcome=AuditOutcome.SUCCESS,
    actor=PSEUDONYM,
    subject="d" * 32,
    client_id="https://rp.example/",
    details={"scope": "openid", "acr": "gematik-ehealth-loa-high"},
)
KAT_CANONICAL = (
    "a96176016373657101646b696e646d746f6b656e5f726571756573746474696d651a692c2220656163746f72"
    "782030313233343536373839616263646566303132333435363738396162636465666764657461696c73a263"
    "616372781867656d6174696b2d656865616c74682d6c6f612d686967686573636f7065666f70656e6964676f"
    "7574636f6d656773756363657373677375626a65637478206464646464646464646464646464646464646464"
    "64646464646464646464646469636c69656e745f69647368747470733a2f2f72702e6578616d706c652f"
)
KAT_GENESIS = "f3ae20e4eb09dbf3f17e580a104e444026d9a47859166480b8a9d0cf570bd8b6"
KAT_HASH = "1e3edf65323466382bcbff1c329f1cd8f6ac66b8c4eff9b432c8777eb3f69b8d"


class Witness:
    """A stand-in for the enclave's audit key: signs checkpoints with an in-memory key."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.jwk = signing_jwk(self.key.public_key())

    def sign(self, entries: Sequence[AuditEntry], seq: int, time: int = 1000) -> SignedCheckpoint:
        cp = Checkpoint(seq=seq, head=entries[seq - 1].entry_hash, time=time)
        jws = sign_compact(
            checkpoint_claims(cp),
            kid=self.jwk["kid"],
            typ=TYP_AUDIT_CHECKPOINT,
            signer=lambda _kid, data: es256.sign(self.key, data),
        )
        return SignedCheckpoint(checkpoint=cp, jws=jws)

    @property
    def verify(self) -> Callable[[str], Checkpoint | None]:
        return checkpoint_verifier({"keys": [self.jwk]})


def event(i: int, **changes: Any) -> AuditEvent:
    base = AuditEvent(
        time=1_764_500_000 + i,
        kind=list(AuditKind)[i % len(AuditKind)],
        outcome=AuditOutcome.FAILURE if i % 5 == 4 else AuditOutcome.SUCCESS,
        actor=f"{i:032x}" if i % 3 else None,
        subject=f"{i:x}" * 4 if i % 2 else None,
        client_id="https://rp.example/" if i % 4 == 1 else None,
        details={"reason": "bad_signature", "net": "10.1.2.0/24"} if i % 5 == 4 else {},
    )
    return dataclasses.replace(base, **changes)


def make_chain(n: int) -> list[AuditEntry]:
    return chain(0, GENESIS_HASH, [event(i) for i in range(n)])


@pytest.fixture
def witness() -> Witness:
    return Witness()


# -- encoding and hashing -----------------------------------------------------------------
def test_canonical_encoding_matches_the_known_answer() -> None:
    assert GENESIS_HASH.hex() == KAT_GENESIS
    assert canonical(1, KAT_EVENT).hex() == KAT_CANONICAL
    assert entry_hash(GENESIS_HASH, 1, KAT_EVENT).hex() == KAT_HASH
    assert cbor2.loads(bytes.fromhex(KAT_CANONICAL))["details"] == dict(KAT_EVENT.details)


def _cbor2_canonical(seq: int, ev: AuditEvent) -> bytes:
    """The reference: cbor2 sorting every map itself (RFC 8949 §4.2.1)."""
    doc = {
        "v": 1,
        "seq": seq,
        "time": ev.time,
        "kind": ev.kind.value,
        "outcome": ev.outcome.value,
        "actor": ev.actor,
        "subject": ev.subject,
        "client_id": ev.client_id,
        "details": dict(ev.details),
    }
    return bytes(cbor2.dumps(doc, canonical=True))


@settings(max_examples=300, deadline=None)
@given(
    seq=st.integers(1, 2**63 - 1),
    time=st.integers(0, 2**63 - 1),
    kind=st.sampled_from(list(AuditKind)),
    outcome=st.sampled_from(list(AuditOutcome)),
    actor=st.none() | st.just(PSEUDONYM),
    subject=st.none() | st.from_regex(r"[A-Za-z0-9._:-]{1,64}", fullmatch=True),
    client_id=st.none() | st.from_regex(r"[!-~]{1,80}", fullmatch=True),
    details=st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9_]{0,31}", fullmatch=True),
        st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40),
        max_size=8,
    ),
)
def test_canonical_encoding_is_cbor2_deterministic_encoding(
    seq: int,
    time: int,
    kind: AuditKind,
    outcome: AuditOutcome,
    actor: str | None,
    subject: str | None,
    client_id: str | None,
    details: dict[str, str],
) -> None:
    try:
        ev = AuditEvent(
            time=time,
            kind=kind,
            outcome=outcome,
            actor=actor,
            subject=subject,
            client_id=client_id,
            details=details,
        )
    except AuditEventError:
        return  # not an event (a KVNR-like subject, a date-like detail ...)
    assert canonical(seq, ev) == _cbor2_canonical(seq, ev)


def test_entry_hash_is_sha256_of_prev_hash_and_canonical_entry() -> None:
    expected = hashlib.sha256(GENESIS_HASH + canonical(1, KAT_EVENT)).digest()
    assert entry_hash(GENESIS_HASH, 1, KAT_EVENT) == expected


def test_canonical_encoding_ignores_detail_insertion_order() -> None:
    a = event(0, details={"a": "1", "b": "2"})
    b = event(0, details={"b": "2", "a": "1"})
    assert canonical(7, a) == canonical(7, b)


def test_seq_is_part_of_the_hash() -> None:
    assert entry_hash(GENESIS_HASH, 1, KAT_EVENT) != entry_hash(GENESIS_HASH, 2, KAT_EVENT)


def test_rows_round_trip() -> None:
    entries = make_chain(12)
    assert [entry_from_row(entry_to_row(e)) for e in entries] == entries


def test_non_canonical_details_json_is_unreadable() -> None:
    row = entry_to_row(make_chain(5)[4]) | {"details": '{"net": "10.1.2.0/24"}'}
    assert isinstance(entry_from_row(row), UnreadableEntry)


# -- event model: bounds and pseudonyms only ----------------------------------------------
@pytest.mark.parametrize(
    "value",
    [
        "A123456780",
        "1961-03-17",
        "17.03.1961",
        "192.0.2.7",
        "::1",
        "fe80::1%eth0",
        "::ffff:192.0.2.7",
        "2001:db8::7/64",
    ],
)
def test_event_refuses_personal_looking_detail_values(value: str) -> None:
    with pytest.raises(AuditEventError):
        event(0, details={"note": value})


def test_event_refuses_a_host_network_but_accepts_a_truncated_one() -> None:
    with pytest.raises(AuditEventError):
        event(0, details={"net": "192.0.2.7/32"})
    assert event(0, details={"net": truncate_ip("192.0.2.7")}).details["net"] == "192.0.2.0/24"
    assert truncate_ip("2001:db8:1:2::7") == "2001:db8:1::/48"


def test_event_actor_must_be_a_pseudonym() -> None:
    for actor in ("A123456780", "Erika Mustermann", PSEUDONYM.upper(), PSEUDONYM[:-1]):
        with pytest.raises(AuditEventError):
            event(0, actor=actor)


def test_event_subject_may_not_be_a_kvnr() -> None:
    with pytest.raises(AuditEventError):
        event(0, subject="A123456780")


@pytest.mark.parametrize(
    "details",
    [
        {f"k{i}": "v" for i in range(9)},
        {"Key": "v"},
        {"k": "v" * 257},
        {"k": "line\nbreak"},
        {"k": 1},
    ],
)
def test_event_details_are_bounded(details: dict[str, Any]) -> None:
    with pytest.raises(AuditEventError):
        event(0, details=details)


def test_event_kind_and_outcome_are_closed_lists() -> None:
    with pytest.raises(AuditEventError):
        event(0, kind="debug")
    with pytest.raises(AuditEventError):
        event(0, outcome="maybe")
    with pytest.raises(AuditEventError):
        event(0, time=-1)


# -- verification ---------------------------------------------------------------------------
def test_clean_chain_verifies_with_counts(witness: Witness) -> None:
    entries = make_chain(20)
    checkpoints = [witness.sign(entries, 8), witness.sign(entries, 15)]
    report = verify_chain(entries, checkpoints, witness.verify)
    assert report.ok and report.finding is None
    assert (report.entries, report.checkpoints, report.head_seq) == (20, 2, 20)
    assert report.signed_seq == 15 and report.unsigned_tail == 5
    assert report.head_hash == entries[-1].entry_hash


def test_empty_log_verifies() -> None:
    report = verify_chain([], [], lambda _jws: None)
    assert report.ok and report.entries == 0 and report.head_hash == GENESIS_HASH


def test_modified_entry_is_found(witness: Witness) -> None:
    entries: list[ChainItem] = list(make_chain(10))
    entry = entries[4]
    assert isinstance(entry, AuditEntry)
    entries[4] = dataclasses.replace(entry, event=dataclasses.replace(entry.event, time=1))
    finding = verify_chain(entries, [witness.sign(make_chain(10), 10)], witness.verify).finding
    assert finding is not None
    assert (finding.kind, finding.seq) == (FindingKind.MODIFIED, 5)


def test_modified_hash_is_found() -> None:
    entries = make_chain(10)
    entries[6] = dataclasses.replace(entries[6], entry_hash=bytes(32))
    finding = verify_chain(entries, [], lambda _jws: None).finding
    assert finding is not None and (finding.kind, finding.seq) == (FindingKind.MODIFIED, 7)


def test_deleted_entry_is_found() -> None:
    entries = make_chain(10)
    del entries[3]
    finding = verify_chain(entries, [], lambda _jws: None).finding
    assert finding is not None and (finding.kind, finding.seq) == (FindingKind.MISSING, 4)


def test_deleted_first_entries_are_found() -> None:
    finding = verify_chain(make_chain(10)[2:], [], lambda _jws: None).finding
    assert finding is not None and (finding.kind, finding.seq) == (FindingKind.MISSING, 1)
    assert "1..2" in finding.detail


def test_swapped_entries_are_reported_as_reordered() -> None:
    """Rows swap places: each now claims the other's seq (what a raw UPDATE of seq does)."""
    entries = make_chain(10)
    a, b = entries[3], entries[4]
    entries[3], entries[4] = dataclasses.replace(b, seq=4), dataclasses.replace(a, seq=5)
    finding = verify_chain(entries, [], lambda _jws: None).finding
    assert finding is not None and (finding.kind, finding.seq) == (FindingKind.REORDERED, 4)
    assert "seq 5" in finding.detail


def test_out_of_order_input_is_reported_as_reordered() -> None:
    entries = make_chain(6)
    entries[2], entries[3] = entries[3], entries[2]
    finding = verify_chain(entries, [], lambda _jws: None).finding
    assert finding is not None and finding.kind is FindingKind.MISSING  # seq 3 absent at 3
    duplicated = [*make_chain(4), make_chain(4)[1]]
    finding = verify_chain(duplicated, [], lambda _jws: None).finding
    assert finding is not None and finding.kind is FindingKind.REORDERED


def test_rewritten_entry_with_recomputed_own_hash_breaks_the_link() -> None:
    entries = make_chain(10)
    forged_event = event(99)
    forged = AuditEntry(
        seq=5,
        event=forged_event,
        prev_hash=entries[4].prev_hash,
        entry_hash=entry_hash(entries[4].prev_hash, 5, forged_event),
    )
    entries[4] = forged
    finding = verify_chain(entries, [], lambda _jws: None).finding
    assert finding is not None and (finding.kind, finding.seq) == (FindingKind.MODIFIED, 6)
    assert "does not link to seq 5" in finding.detail


def test_rewritten_history_with_recomputed_hashes_breaks_the_checkpoint(
    witness: Witness,
) -> None:
    """The attacker rewrites seq 3 and recomputes every later hash: only the signature sees it."""
    original = make_chain(12)
    checkpoint = witness.sign(original, 10)
    events = [e.event for e in original]
    events[2] = dataclasses.replace(events[2], time=events[2].time + 1)
    rewritten = chain(0, GENESIS_HASH, events)
    finding = verify_chain(rewritten, [checkpoint], witness.verify).finding
    assert finding is not None
    assert (finding.kind, finding.seq) == (FindingKind.CHECKPOINT_MISMATCH, 10)


def test_forged_checkpoint_signature_is_found(witness: Witness) -> None:
    entries = make_chain(10)
    forged = Witness().sign(entries, 10)  # another key
    finding = verify_chain(entries, [forged], witness.verify).finding
    assert finding is not None
    assert (finding.kind, finding.seq) == (FindingKind.CHECKPOINT_SIGNATURE_INVALID, 10)


def test_checkpoint_row_differing_from_its_signature_is_found(witness: Witness) -> None:
    entries = make_chain(10)
    signed = witness.sign(entries, 6)
    moved = dataclasses.replace(signed, checkpoint=dataclasses.replace(signed.checkpoint, seq=7))
    finding = verify_chain(entries, [moved], witness.verify).finding
    assert finding is not None
    assert (finding.kind, finding.seq) == (FindingKind.CHECKPOINT_MISMATCH, 7)


def test_truncation_below_the_last_checkpoint_is_a_distinct_finding(witness: Witness) -> None:
    entries = make_chain(10)
    checkpoint = witness.sign(entries, 9)
    finding = verify_chain(entries[:7], [checkpoint], witness.verify).finding
    assert finding is not None
    assert (finding.kind, finding.seq) == (FindingKind.TRUNCATED, 8)
    assert "ends at seq 7" in finding.detail and "up to seq 9" in finding.detail
    emptied = verify_chain([], [checkpoint], witness.verify).finding
    assert emptied is not None and emptied.kind is FindingKind.TRUNCATED


def test_truncation_after_the_last_checkpoint_only_shrinks_the_unsigned_tail(
    witness: Witness,
) -> None:
    entries = make_chain(10)
    report = verify_chain(entries[:8], [witness.sign(entries, 6)], witness.verify)
    assert report.ok and report.unsigned_tail == 2


def test_unreadable_row_is_reported_as_modified() -> None:
    items: list[ChainItem] = list(make_chain(5))
    items[2] = UnreadableEntry(seq=3, reason="details are not in their canonical form")
    finding = verify_chain(items, [], lambda _jws: None).finding
    assert finding is not None and (finding.kind, finding.seq) == (FindingKind.MODIFIED, 3)


def test_the_first_finding_by_seq_is_reported(witness: Witness) -> None:
    entries = make_chain(12)
    bad_signature = Witness().sign(entries, 10)
    entries[4] = dataclasses.replace(entries[4], entry_hash=bytes(32))
    finding = verify_chain(entries, [bad_signature], witness.verify).finding
    assert finding is not None and (finding.kind, finding.seq) == (FindingKind.MODIFIED, 5)
    finding = verify_chain(make_chain(12), [bad_signature], witness.verify).finding
    assert finding is not None and finding.kind is FindingKind.CHECKPOINT_SIGNATURE_INVALID


def test_checkpoint_jws_uses_its_own_typ(witness: Witness) -> None:
    entries = make_chain(3)
    signed = witness.sign(entries, 3)
    assert witness.verify(signed.jws) == signed.checkpoint
    other_typ = sign_compact(
        checkpoint_claims(signed.checkpoint),
        kid=witness.jwk["kid"],
        typ="JWT",
        signer=lambda _kid, data: es256.sign(witness.key, data),
    )
    assert witness.verify(other_typ) is None


# -- extending a signed head (the enclave's rule) ------------------------------------------
def test_extend_accepts_exactly_the_continuation() -> None:
    entries = make_chain(8)
    seq, head = extend(3, entries[2].entry_hash, entries[3:])
    assert (seq, head) == (8, entries[-1].entry_hash)


@pytest.mark.parametrize(
    ("start", "mutate"),
    [
        (2, lambda es: es),  # a gap: entries start at 4 but the head is at 2
        (3, lambda es: [dataclasses.replace(es[0], entry_hash=bytes(32)), *es[1:]]),
        (3, lambda es: [es[1], es[0], *es[2:]]),
        (3, lambda es: [dataclasses.replace(es[0], prev_hash=GENESIS_HASH), *es[1:]]),
    ],
)
def test_extend_refuses_anything_else(
    start: int, mutate: Callable[[list[AuditEntry]], list[AuditEntry]]
) -> None:
    entries = make_chain(8)
    with pytest.raises(ChainError):
        extend(start, entries[start - 1].entry_hash, mutate(entries[3:]))


# -- property: any single-byte change of a stored row is found ------------------------------
CHAIN_LEN = 6
_BASE = make_chain(CHAIN_LEN)
_ROWS = [entry_to_row(e) for e in _BASE]


def _mutate(value: int | str | bytes, index: int, xor: int) -> int | str | bytes:
    """Flip bits of one byte of a column's stored representation."""
    if isinstance(value, int):
        raw = bytearray(value.to_bytes(8, "big", signed=True))
        raw[index % len(raw)] ^= xor
        return int.from_bytes(raw, "big", signed=True)
    raw = bytearray(value.encode("utf-8") if isinstance(value, str) else value)
    raw[index % len(raw)] ^= xor
    return raw.decode("utf-8", "surrogateescape") if isinstance(value, str) else bytes(raw)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    row=st.integers(0, CHAIN_LEN - 1),
    column=st.sampled_from(sorted(_ROWS[0])),
    index=st.integers(0, 10_000),
    xor=st.integers(1, 255),
    signed=st.booleans(),
)
def test_any_single_byte_change_in_any_entry_is_found(
    row: int, column: str, index: int, xor: int, signed: bool
) -> None:
    witness = _WITNESS
    rows = [dict(r) for r in _ROWS]
    value = rows[row][column]
    if value is None:  # a NULL column has no byte to change; change the hash instead
        column = "entry_hash"
        value = rows[row][column]
    rows[row][column] = _mutate(value, index, xor)
    rows.sort(key=lambda r: r["seq"])  # the database reads in seq order
    checkpoints = [witness.sign(_BASE, CHAIN_LEN)] if signed else []
    report = verify_chain([entry_from_row(r) for r in rows], checkpoints, witness.verify)
    assert not report.ok


_WITNESS = Witness()
