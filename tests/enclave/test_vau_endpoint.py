"""The enclave's end of the VAU channel (issue #6 items 2-3): state in enclave memory, keys
signed with the identity key, replay/reordering/expiry refused, and the context checks that
keep the host from moving a request into another context or another person's records."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from healthid.demo.egk_test_ca import TestEgkCa
from healthid.demo.synthetic import synthetic_rows
from healthid.enclave import api, vau_endpoint
from healthid.enclave.registry.model import Policyholder
from healthid.enclave.service import Enclave
from healthid.enclave.vault import RootKey, Vault
from healthid.protocol.device_auth import session_bearer
from healthid.protocol.vau import (
    ClientConfig,
    ClientSession,
    Environment,
    client,
    es256_verifier,
    parse_signed_public_keys,
)
from healthid.protocol.vau import cbor as vau_cbor
from session_testlib import LoggedIn, log_in_with_card, login_request

ROWS = [dict(r) for r in synthetic_rows(3, seed=41)]


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000

    def __call__(self) -> int:
        return self.now


@dataclass
class Setup:
    enclave: Enclave
    identity: ec.EllipticCurvePrivateKey
    clock: Clock
    ca: TestEgkCa
    people: list[api.SealedPolicyholder]
    logins: list[LoggedIn]  # a bound device each, and a plain login
    sessions: list[tuple[str, bytes]] = field(default_factory=list)  # token, ticket (channel)

    def token(self, person: int) -> str:
        """The person's session token from a login through the channel."""
        return self.sessions[person][0]

    def ticket(self, person: int) -> bytes:
        return self.sessions[person][1]

    def config(self, key: ec.EllipticCurvePrivateKey | None = None) -> ClientConfig:
        return ClientConfig(
            environment=Environment.TEST,
            verifier=es256_verifier((key or self.identity).public_key()),
            clock=self.clock,
            rng=secrets.token_bytes,
        )


def holder(row: dict[str, str]) -> Policyholder:
    return Policyholder(
        kvnr=row["kvnr"],
        ik=row["ik"],
        given_name=row["given_name"],
        family_name=row["family_name"],
        birth_date=row["birth_date"],
        sex=row["sex"],
        insured_type=row["insured_type"],
        valid_from=row["valid_from"],
    )


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    clock = Clock()
    identity = ec.generate_private_key(ec.SECP256R1())
    ca = TestEgkCa.create(tmp_path / "ca")
    enclave = Enclave(
        Vault(RootKey.from_secret(os.urandom(32))),
        identity_key=identity,
        allow_test_kvnr=True,
        egk_cas=[ca.certificate],
        vau_clock=clock,
    )
    people = [enclave.seal_policyholder(holder(r)) for r in ROWS]
    logins = [  # each person's device session, as the enclave issues it at login
        await log_in_with_card(
            enclave, sealed, ca.issue_card(r["kvnr"], r["ik"], r["given_name"], r["family_name"])
        )
        for r, sealed in zip(ROWS, people, strict=True)
    ]
    setup = Setup(
        enclave=enclave, identity=identity, clock=clock, ca=ca, people=people, logins=logins
    )
    for done in logins:
        token, reply = await channel_login(setup, done)
        assert reply.login is not None
        setup.sessions.append((token, reply.login.ticket))
    yield setup
    enclave.close()


async def channel_login(
    s: Setup, done: LoggedIn, *, signature: bytes | None = None
) -> tuple[str, api.VauReply]:
    """A login of ``done``'s device through a new channel: the token (from the encrypted
    answer; "" if refused) and the enclave's reply to the host."""
    cid, session = await open_channel(s)
    (challenge,) = await s.enclave.login_challenges(1)
    counter = len(s.sessions) + 10
    signed = login_request(done, challenge, counter=counter)
    args = {"challenge_id": "c" * 24, "device_id": done.device_id, "counter": str(counter)}
    plaintext = inner("login", "", **args, signature=signature or signed.signature)
    context = api.VauContext(
        op="login",
        args=tuple(sorted(args.items())),
        login=replace(signed, signature=b""),  # what the host knows: all but the signature
    )
    _, reply, answer = await call(s, cid, session, plaintext, context)
    result = answer.get("ok")
    return (str(result["session"]) if isinstance(result, dict) else ""), reply


async def open_channel(s: Setup) -> tuple[str, ClientSession]:
    config = s.config()
    m1, handshake = client.start(config)
    reply = await s.enclave.vau_handshake(m1)
    assert reply.status == 200 and reply.cid is not None
    m3, confirmation = client.receive_m2(config, handshake, reply.body)
    finished = await s.enclave.vau_finish(reply.cid, m3)
    assert finished.status == 200
    return reply.cid, client.receive_m4(config, confirmation, finished.body)


def inner(op: str, session: str = "", **args: object) -> bytes:
    return vau_cbor.encode({"op": op, "session": session, "args": args})  # type: ignore[dict-item]


def context_for(s: Setup, op: str = "me", person: int = 0, **extra: object) -> api.VauContext:
    sealed = s.people[person]
    values: dict[str, object] = {
        "op": op,
        "session": session_bearer(s.token(person)),  # the host sees the bearer only
        "pseudonym": sealed.pseudonym,
        "sealed": sealed,
        "ticket": s.ticket(person),
    }
    return api.VauContext(**(values | extra))  # type: ignore[arg-type]


async def call(
    s: Setup, cid: str, session: ClientSession, plaintext: bytes, context: api.VauContext
) -> tuple[ClientSession, api.VauReply, dict[str, object]]:
    session, message = client.encrypt_request(s.config(), session, plaintext)
    reply = await s.enclave.vau_request(cid, message, context)
    if reply.status != 200:
        return session, reply, {}
    session, raw = client.decrypt_response(s.config(), session, reply.body)
    answer = cbor2.loads(raw)
    assert isinstance(answer, dict)
    return session, reply, answer


async def test_the_signed_vau_keys_verify_with_the_attested_identity_key(setup: Setup) -> None:
    signed = parse_signed_public_keys(await setup.enclave.vau_public_keys())
    assert es256_verifier(setup.identity.public_key())(signed)
    assert not es256_verifier(ec.generate_private_key(ec.SECP256R1()).public_key())(signed)


async def test_me_opens_the_persons_sealed_master_data(setup: Setup) -> None:
    cid, session = await open_channel(setup)
    _, reply, answer = await call(
        setup, cid, session, inner("me", setup.token(1)), context_for(setup, "me", 1)
    )
    assert reply.status == 200 and reply.outcome == api.VAU_OK
    row = ROWS[1]
    assert answer == {
        "ok": {
            "given_name": row["given_name"],
            "family_name": row["family_name"],
            "kvnr": row["kvnr"],
            "birth_date": row["birth_date"],
        }
    }


async def test_a_replayed_request_is_refused(setup: Setup) -> None:
    cid, session = await open_channel(setup)
    session, message = client.encrypt_request(setup.config(), session, inner("status"))
    context = api.VauContext(op="status")
    assert (await setup.enclave.vau_request(cid, message, context)).status == 200
    again = await setup.enclave.vau_request(cid, message, context)
    assert again.status == 403 and again.outcome == "bad_counter"
    assert cbor2.loads(again.body)["MessageType"] == "Error"


async def test_a_reordered_request_is_refused(setup: Setup) -> None:
    cid, session = await open_channel(setup)
    config, context = setup.config(), api.VauContext(op="status")
    session, first = client.encrypt_request(config, session, inner("status"))
    session, second = client.encrypt_request(config, session, inner("status"))
    assert (await setup.enclave.vau_request(cid, second, context)).status == 200
    late = await setup.enclave.vau_request(cid, first, context)
    assert late.status == 403 and late.outcome == "bad_counter"


async def test_a_tampered_request_is_refused_and_burns_no_counter(setup: Setup) -> None:
    cid, session = await open_channel(setup)
    config, context = setup.config(), api.VauContext(op="status")
    session, message = client.encrypt_request(config, session, inner("status"))
    forged = message[:-1] + bytes([message[-1] ^ 1])
    refused = await setup.enclave.vau_request(cid, forged, context)
    assert refused.status == 403 and refused.outcome == "decryption_failed"
    assert (await setup.enclave.vau_request(cid, message, context)).status == 200


async def test_unknown_and_expired_channels_are_404(setup: Setup) -> None:
    context = api.VauContext(op="status")
    unknown = await setup.enclave.vau_request("0" * 64, b"\x02" * 80, context)
    assert unknown.status == 404 and unknown.outcome == "unknown_cid"
    cid, session = await open_channel(setup)
    setup.clock.now += vau_endpoint.CHANNEL_TTL
    _, message = client.encrypt_request(setup.config(), session, inner("status"))
    expired = await setup.enclave.vau_request(cid, message, context)
    assert expired.status == 404 and cbor2.loads(expired.body)["ErrorCode"] == 9
    assert setup.enclave._channel().open_channels == 0  # removed on expiry


async def test_a_handshake_is_single_use_and_expires(setup: Setup) -> None:
    config = setup.config()
    m1, handshake = client.start(config)
    reply = await setup.enclave.vau_handshake(m1)
    assert reply.cid is not None
    m3, _ = client.receive_m2(config, handshake, reply.body)
    assert (await setup.enclave.vau_finish(reply.cid, m3)).status == 200
    assert (await setup.enclave.vau_finish(reply.cid, m3)).status == 404  # M3 replayed

    m1, handshake = client.start(config)
    reply = await setup.enclave.vau_handshake(m1)
    assert reply.cid is not None
    m3, _ = client.receive_m2(config, handshake, reply.body)
    setup.clock.now += vau_endpoint.HANDSHAKE_TTL
    assert (await setup.enclave.vau_finish(reply.cid, m3)).status == 404


async def test_channel_ids_are_random_and_64_hex_digits(setup: Setup) -> None:
    cids = {(await open_channel(setup))[0] for _ in range(3)}
    assert len(cids) == 3
    assert all(len(c) == 64 and int(c, 16) >= 0 for c in cids)


async def test_malformed_handshakes_are_refused_with_the_error_body(setup: Setup) -> None:
    reply = await setup.enclave.vau_handshake(b"\xa0")
    assert reply.status == 400 and reply.cid is None
    assert cbor2.loads(reply.body)["MessageType"] == "Error"
    cid = (await setup.enclave.vau_handshake(client.start(setup.config())[0])).cid
    assert cid is not None
    assert (await setup.enclave.vau_finish(cid, b"junk")).status == 400


@pytest.mark.parametrize(
    ("plaintext", "context"),
    [
        # the inner session differs from the outer header's
        (lambda token: inner("me", "b" * 32 + "." + "S" * 43), {}),
        # the inner op differs from the outer one
        (lambda token: inner("history", token), {}),
        # routing arguments differ
        (
            lambda token: inner("me", token, enrolment_id="x"),
            {"op": "egk_prove", "args": (("enrolment_id", "y"),)},
        ),
        # an op the enclave does not know
        (lambda token: inner("export_all", token), {"op": "export_all"}),
    ],
)
async def test_a_request_that_does_not_match_its_outer_context_is_refused(
    setup: Setup, plaintext: Callable[[str], bytes], context: dict[str, object]
) -> None:
    cid, session = await open_channel(setup)
    _, reply, answer = await call(
        setup,
        cid,
        session,
        plaintext(setup.token(0)),
        context_for(setup, **({"op": "me"} | context)),
    )
    assert reply.status == 200 and reply.outcome == "context_mismatch"
    assert answer["error"]["status"] == 400  # type: ignore[index]


@pytest.mark.parametrize(
    ("ticket_of", "outcome", "status"),
    [
        (None, "session_refused", 401),  # no ticket: the host's word only
        (1, "session_refused", 401),  # another person's (valid) ticket: not this token's
        ("forged", "session_refused", 401),  # a ticket the enclave did not issue
    ],
)
async def test_a_session_the_enclave_did_not_issue_for_this_token_is_refused(
    setup: Setup, ticket_of: int | str | None, outcome: str, status: int
) -> None:
    """Person 0's token, person 0's records: the ticket decides whose session it is."""
    ticket = {
        None: None,
        1: setup.ticket(1),
        "forged": setup.ticket(0)[:-1] + b"\x00",
    }[ticket_of]
    cid, session = await open_channel(setup)
    context = context_for(setup, "me", 0, ticket=ticket)
    _, reply, answer = await call(setup, cid, session, inner("me", setup.token(0)), context)
    assert reply.outcome == outcome and "ok" not in answer
    assert answer["error"]["status"] == status  # type: ignore[index]


async def test_a_valid_session_cannot_open_another_persons_records(setup: Setup) -> None:
    """Person 1's own token and ticket, with person 0's pseudonym and records."""
    cid, session = await open_channel(setup)
    context = context_for(
        setup, "me", 0, session=session_bearer(setup.token(1)), ticket=setup.ticket(1)
    )
    _, reply, answer = await call(setup, cid, session, inner("me", setup.token(1)), context)
    assert reply.outcome == "foreign_data" and "ok" not in answer


async def test_a_copied_ticket_does_not_make_another_token_a_session(setup: Setup) -> None:
    """The host pairs person 1's ticket (and records) with a token of its own making."""
    cid, session = await open_channel(setup)
    made_up = setup.token(1)[:-4] + "AAAA"
    context = replace(context_for(setup, "me", 1), session=session_bearer(made_up))
    _, reply, answer = await call(setup, cid, session, inner("me", made_up), context)
    assert reply.outcome == "session_refused" and "ok" not in answer


async def test_a_login_through_the_channel_gives_the_host_the_bearer_not_the_token(
    setup: Setup,
) -> None:
    token, reply = await channel_login(setup, setup.logins[0])
    assert reply.outcome == api.VAU_OK and reply.login is not None
    assert reply.login.session == session_bearer(token) != token
    assert token.partition(".")[2].encode() not in reply.body  # the answer is encrypted
    ticket = api.read_session_ticket(reply.login.ticket)
    assert ticket.channel and ticket.pseudonym == setup.people[0].pseudonym


async def test_a_channel_login_with_a_wrong_signature_is_refused(setup: Setup) -> None:
    token, reply = await channel_login(setup, setup.logins[0], signature=bytes(64))
    assert token == "" and reply.login is None and reply.outcome == "login_refused"


async def test_a_plain_login_cannot_read_through_the_channel(setup: Setup) -> None:
    """The token of a plain login passed through the host: it opens no personal data."""
    plain = setup.logins[0].grant
    cid, session = await open_channel(setup)
    context = context_for(
        setup, "me", 0, session=session_bearer(plain.session), ticket=plain.ticket
    )
    _, reply, answer = await call(setup, cid, session, inner("me", plain.session), context)
    assert reply.outcome == "session_refused" and "ok" not in answer


async def test_records_of_another_pseudonym_are_refused(setup: Setup) -> None:
    cid, session = await open_channel(setup)
    foreign = context_for(setup, "me", 0, sealed=setup.people[1])
    session, reply, answer = await call(setup, cid, session, inner("me", setup.token(0)), foreign)
    assert reply.outcome == "foreign_data" and "ok" not in answer
    # the right pseudonym on another person's (renamed) records: the vault refuses them
    renamed = replace(setup.people[1], pseudonym=setup.people[0].pseudonym)
    moved = context_for(setup, "me", 0, sealed=renamed)
    _, reply, answer = await call(setup, cid, session, inner("me", setup.token(0)), moved)
    assert reply.outcome == "foreign_data" and "ok" not in answer


async def test_a_channel_serves_one_person_only(setup: Setup) -> None:
    cid, session = await open_channel(setup)
    session, reply, _ = await call(
        setup, cid, session, inner("me", setup.token(0)), context_for(setup, "me", 0)
    )
    assert reply.outcome == api.VAU_OK
    _, reply, answer = await call(
        setup, cid, session, inner("me", setup.token(2)), context_for(setup, "me", 2)
    )
    assert reply.outcome == "channel_bound" and "ok" not in answer


async def test_history_events_of_another_person_are_refused(setup: Setup) -> None:
    event = api.HistoryEvent(kind="login", at=5, device_id="d")
    theirs = await setup.enclave.seal_history(setup.people[1], event)
    mine = await setup.enclave.seal_history(setup.people[0], event)
    cid, session = await open_channel(setup)
    session, reply, answer = await call(
        setup,
        cid,
        session,
        inner("history", setup.token(0)),
        context_for(setup, "history", 0, history=(mine,)),
    )
    assert answer["ok"] == {  # type: ignore[comparison-overlap]
        "events": [{"kind": "login", "at": 5, "device_id": "d", "detail": None}]
    }
    _, reply, _ = await call(
        setup,
        cid,
        session,
        inner("history", setup.token(0)),
        context_for(setup, "history", 0, history=(mine, theirs)),
    )
    assert reply.outcome == "foreign_data"


async def test_consent_claims_show_the_values_of_the_requested_claims(setup: Setup) -> None:
    cid, session = await open_channel(setup)
    claims = api.RequestedClaims(
        essential=("urn:telematik:claims:id",),
        optional=("urn:telematik:claims:display_name", "urn:telematik:claims:email"),
    )
    args = (("client_id", "https://rp.example"), ("request_uri", "urn:r"))
    context = context_for(setup, "consent_claims", 2, args=args, claims=claims)
    plaintext = inner(
        "consent_claims", setup.token(2), client_id="https://rp.example", request_uri="urn:r"
    )
    _, _, answer = await call(setup, cid, session, plaintext, context)
    row = ROWS[2]
    assert answer["ok"] == {  # type: ignore[comparison-overlap]
        "client_id": "https://rp.example",
        "essential": [{"claim": "urn:telematik:claims:id", "value": row["kvnr"]}],
        "optional": [
            {
                "claim": "urn:telematik:claims:display_name",
                "value": f"{row['given_name']} {row['family_name']}",
            },
            {"claim": "urn:telematik:claims:email", "value": None},
        ],
    }


async def test_egk_prove_verifies_the_card_inside_and_tells_the_host_the_lookup(
    setup: Setup,
) -> None:
    row = ROWS[0]
    card = setup.ca.issue_card(row["kvnr"], row["ik"], row["given_name"], row["family_name"])
    challenge = os.urandom(32)
    context = api.VauContext(op="egk_prove", args=(("enrolment_id", "e1"),), challenge=challenge)
    cid, session = await open_channel(setup)
    plaintext = vau_cbor.encode(
        {
            "op": "egk_prove",
            "session": "",
            "args": {
                "enrolment_id": "e1",
                "certificate": card.certificate_der,
                "signature": card.sign(challenge),
            },
        }
    )
    session, reply, answer = await call(setup, cid, session, plaintext, context)
    assert reply.lookup is not None and reply.lookup.method == "egk"
    assert answer == {"ok": {"certificate": "verified", "method": "egk"}}
    match = await setup.enclave.match_identity(reply.lookup.proof_id, setup.people)
    assert match.pseudonym == setup.people[0].pseudonym
    # a signature over another challenge: refused inside, the host learns only the outcome
    wrong = vau_cbor.encode(
        {
            "op": "egk_prove",
            "session": "",
            "args": {
                "enrolment_id": "e1",
                "certificate": card.certificate_der,
                "signature": card.sign(os.urandom(32)),
            },
        }
    )
    _, reply, answer = await call(setup, cid, session, wrong, context)
    assert reply.outcome == "proof_rejected" and reply.lookup is None
    assert answer["error"]["status"] == 403  # type: ignore[index]


async def test_the_number_of_channels_is_bounded(setup: Setup) -> None:
    endpoint = setup.enclave._channel()
    endpoint._max_channels = 2
    first = await open_channel(setup)
    await open_channel(setup)
    await open_channel(setup)
    assert endpoint.open_channels == 2
    _, message = client.encrypt_request(setup.config(), first[1], inner("status"))
    gone = await setup.enclave.vau_request(first[0], message, api.VauContext(op="status"))
    assert gone.status == 404  # the oldest gave way


async def test_keys_rotate_and_an_open_handshake_still_finishes(setup: Setup) -> None:
    before = await setup.enclave.vau_public_keys()
    setup.clock.now += vau_endpoint.KEY_ROTATION - 5
    config = setup.config()
    m1, handshake = client.start(config)
    reply = await setup.enclave.vau_handshake(m1)  # with the old keys
    assert reply.cid is not None
    m3, confirmation = client.receive_m2(config, handshake, reply.body)
    setup.clock.now += 10
    after = await setup.enclave.vau_public_keys()
    assert after != before
    finished = await setup.enclave.vau_finish(reply.cid, m3)
    assert finished.status == 200
    client.receive_m4(config, confirmation, finished.body)


async def test_an_enclave_without_an_identity_key_has_no_channel() -> None:
    enclave = Enclave(Vault(RootKey.from_secret(os.urandom(32))))
    with pytest.raises(api.EnclaveError, match="not configured"):
        await enclave.vau_handshake(b"")
