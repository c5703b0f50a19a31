"""The EnclaveClient contract, run against both transports: the in-process enclave and the
enclave process (``python -m healthid.enclave_cli``) reached through RemoteEnclave.

Both share one data directory (root key, key store, test eGK CA), so whatever one seals the
other opens, and each assertion holds for both.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from rpc_testlib import (
    RP,
    EnclaveProcess,
    egk_card,
    enclave_settings,
    id_token_request,
    import_people,
    in_process,
    log_in,
    people,
    registry_csv,
    short_socket_dir,
)

from healthid.enclave.api import (
    MAX_LOGIN_CHALLENGES,
    AuditCheckpointRequest,
    DeviceBindingRequest,
    EnclaveClient,
    EnclaveError,
    EnclaveStatus,
    HistoryEvent,
    IdentityNotConfirmed,
    ProofRejected,
    SealedPolicyholder,
    SessionRefused,
    UnknownImport,
    read_session_ticket,
)
from healthid.enclave.rpc import RemoteEnclave
from healthid.enclave.service import IMPORT_CHUNK
from healthid.enclave.vault import VaultError
from healthid.keys.file import FileKeyStore
from healthid.protocol.audit import GENESIS_HASH, AuditEvent, AuditKind, chain
from healthid.protocol.jose import decrypt_id_token, verify_compact
from healthid.protocol.jose.errors import UnsuitableKey
from healthid.protocol.jose.jws import TYP_ID_TOKEN
from healthid.protocol.oidc.loa import ACR_SUBSTANTIAL, AMR_MEW, AMR_SSO
from healthid.protocol.tee import (
    NonceMismatchError,
    SimulatedEvidenceRejectedError,
    TeePolicy,
    verify_attestation_document,
)
from healthid.settings import Settings
from session_testlib import login_request, spki

TRANSPORTS = ["in-process", "remote"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("enclave-data")


@pytest.fixture(scope="module")
def enclave_process(data_dir: Path) -> Iterator[EnclaveProcess]:
    with short_socket_dir() as directory:
        process = EnclaveProcess(data_dir=data_dir, socket_path=directory / "enclave.sock")
        process.start()
        try:
            yield process
        finally:
            process.close()


@pytest.fixture
def settings(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in list(os.environ):
        if name.startswith("HEALTHID_"):
            monkeypatch.delenv(name)
    return enclave_settings(data_dir)


@pytest.fixture(params=TRANSPORTS)
async def enclave(
    request: pytest.FixtureRequest, settings: Settings
) -> AsyncIterator[EnclaveClient]:
    if request.param == "in-process":
        local = in_process(settings)
        yield local
        local.close()
        return
    process: EnclaveProcess = request.getfixturevalue("enclave_process")
    remote = RemoteEnclave(process.socket_path)
    yield remote
    await remote.aclose()


# -- status -----------------------------------------------------------------------------------
async def test_status_reports_the_simulated_tee_and_root_key(
    enclave: EnclaveClient, settings: Settings
) -> None:
    status = await enclave.status()
    assert isinstance(status, EnclaveStatus)
    assert status.tee == "simulated" and status.warning and "INSECURE" in status.warning
    assert status.root_key_id == (await in_process(settings).status()).root_key_id


# -- registry import ----------------------------------------------------------------------
async def test_registry_import_prepares_and_seals_every_chunk_in_order(
    enclave: EnclaveClient,
) -> None:
    rows = IMPORT_CHUNK + 3
    data = registry_csv(rows, broken_rows=(1, IMPORT_CHUNK + 1))
    prepared = await enclave.prepare_import(
        data, filename="r.csv", fmt=None, accept_test_kvnr=False
    )
    try:
        assert (prepared.format, prepared.row_count, prepared.chunk_count) == ("csv", rows, 2)
        assert prepared.errors == ()
        with pytest.raises(Exception, match="chunks are delivered in order; expected 0"):
            await enclave.seal_import_chunk(prepared.import_id, 1)
        first = await enclave.seal_import_chunk(prepared.import_id, 0)
        second = await enclave.seal_import_chunk(prepared.import_id, 1)
    finally:
        await enclave.discard_import(prepared.import_id)
    assert len(first.sealed) == IMPORT_CHUNK - 1 and len(second.sealed) == 2
    assert [(e.row, e.field) for e in first.errors + second.errors] == [
        (3, "kvnr"),
        (IMPORT_CHUNK + 3, "kvnr"),
    ]
    assert "0000000000" not in str(first.errors[0])
    assert len(first.rows) == len(first.sealed) and first.rows[0] == 2
    holder = first.sealed[0]
    assert holder.wrapped_key and holder.records[0].ciphertext and holder.lookup_indexes


async def test_a_registry_with_a_bad_header_reports_file_errors(enclave: EnclaveClient) -> None:
    prepared = await enclave.prepare_import(
        b"name;kvnr\nx;y\n", filename="r.csv", fmt="csv", accept_test_kvnr=False
    )
    await enclave.discard_import(prepared.import_id)
    assert prepared.errors and prepared.errors[0].row in (0, 1)


async def test_unknown_import_id_raises_unknown_import(enclave: EnclaveClient) -> None:
    with pytest.raises(UnknownImport, match=r"^unknown or expired import id$"):
        await enclave.seal_import_chunk("no-such-import", 0)


async def test_unknown_format_raises_the_enclave_error(enclave: EnclaveClient) -> None:
    with pytest.raises(Exception, match="unknown format 'xls'") as info:
        await enclave.prepare_import(b"x", filename="r.xls", fmt="xls", accept_test_kvnr=False)
    assert type(info.value).__name__ == "EnclaveError"


# -- identity proofing with the eGK -------------------------------------------------------
async def test_egk_proof_matches_the_imported_policyholder(
    enclave: EnclaveClient, settings: Settings
) -> None:
    sealed = await import_people(enclave, 3)
    erika = people(3)[1]
    card = egk_card(settings, erika)
    challenge = os.urandom(32)
    lookup = await enclave.egk_prove(
        certificate=card.certificate_der, signature=card.sign(challenge), challenge=challenge
    )
    assert lookup.method == "egk" and lookup.proof_id
    kvnr_digests = {digest for kind, digest in lookup.lookups if kind == "kvnr"}
    candidates = [s for s in sealed if s.kvnr_index in kvnr_digests]
    assert len(candidates) == 1
    match = await enclave.match_identity(lookup.proof_id, candidates)
    assert match.pseudonym == sealed[1].pseudonym and match.method == "egk"
    with pytest.raises(IdentityNotConfirmed, match=r"^the proof expired or was already used$"):
        await enclave.match_identity(lookup.proof_id, candidates)


async def test_egk_signature_over_another_challenge_is_rejected(
    enclave: EnclaveClient, settings: Settings
) -> None:
    card = egk_card(settings, people(1)[0])
    with pytest.raises(ProofRejected, match=r"^eGK authentication refused: "):
        await enclave.egk_prove(
            certificate=card.certificate_der, signature=card.sign(b"a" * 32), challenge=b"b" * 32
        )


async def test_egk_garbage_certificate_is_rejected(enclave: EnclaveClient) -> None:
    with pytest.raises(ProofRejected):
        await enclave.egk_prove(certificate=b"\x30\x03junk", signature=b"", challenge=b"c" * 32)


async def test_match_without_a_fitting_candidate_is_not_confirmed(
    enclave: EnclaveClient, settings: Settings
) -> None:
    sealed = await import_people(enclave, 2)
    card = egk_card(settings, people(2)[0])
    lookup = await enclave.egk_prove(
        certificate=card.certificate_der, signature=card.sign(b"x" * 32), challenge=b"x" * 32
    )
    with pytest.raises(IdentityNotConfirmed, match=r"^the identity could not be confirmed$"):
        await enclave.match_identity(lookup.proof_id, [sealed[1]])


async def test_eid_without_an_eid_server_is_rejected(enclave: EnclaveClient) -> None:
    with pytest.raises(ProofRejected, match="no eID-Server is configured"):
        await enclave.eid_start()
    with pytest.raises(ProofRejected, match=r"^unknown or expired eID session$"):
        await enclave.eid_collect("no-such-handle")


# -- sealed history, integrity ------------------------------------------------------------
async def test_seal_history_is_opened_under_its_owner_only(
    enclave: EnclaveClient, settings: Settings
) -> None:
    erika, max_ = await import_people(enclave, 2)
    event = HistoryEvent(kind="login", at=1_764_000_000, device_id="dev-1", detail="rp.example")
    sealed_event = await enclave.seal_history(erika, event)
    assert sealed_event.created_at == event.at and b"rp.example" not in sealed_event.ciphertext
    inside = in_process(settings)
    assert inside.open_history(erika, sealed_event.event_id, sealed_event.ciphertext) == event
    with pytest.raises(VaultError):
        inside.open_history(max_, sealed_event.event_id, sealed_event.ciphertext)


async def test_seal_history_of_a_shredded_policyholder_raises_vault_error(
    enclave: EnclaveClient,
) -> None:
    (erika,) = await import_people(enclave, 1)
    shredded = SealedPolicyholder(
        pseudonym=erika.pseudonym,
        kvnr_index=erika.kvnr_index,
        root_key_id=erika.root_key_id,
        wrapped_key=None,
        records=erika.records,
    )
    with pytest.raises(VaultError, match=f"^policyholder {erika.pseudonym} was crypto-shredded$"):
        await enclave.seal_history(shredded, HistoryEvent(kind="login", at=1))


async def test_verify_policyholders_names_the_tampered_ones(enclave: EnclaveClient) -> None:
    erika, max_ = await import_people(enclave, 2)
    moved = SealedPolicyholder(
        pseudonym=max_.pseudonym,
        kvnr_index=max_.kvnr_index,
        root_key_id=max_.root_key_id,
        wrapped_key=max_.wrapped_key,
        records=erika.records,
    )
    assert await enclave.verify_policyholders([erika, moved, max_]) == [max_.pseudonym]
    assert await enclave.verify_policyholders([]) == []


# -- ID tokens ----------------------------------------------------------------------------
async def test_mint_id_token_signs_and_encrypts_for_the_relying_party(
    enclave: EnclaveClient, settings: Settings
) -> None:
    (erika,) = await import_people(enclave, 1)
    done = await log_in(enclave, settings, erika, people(1)[0])
    keys = FileKeyStore(settings.data_dir / "keys")
    kid = keys.generate("token").kid
    rp_key = ec.generate_private_key(ec.SECP256R1())
    request = id_token_request(erika, ticket=done.grant.ticket, kid=kid, rp_key=rp_key, nonce="n-1")
    jwe = await enclave.mint_id_token(request)
    inner = decrypt_id_token(jwe, private_key=rp_key)
    claims = verify_compact(inner, jwks={"keys": [keys.public_jwk(kid)]}, typ=TYP_ID_TOKEN).claims
    assert claims["aud"] == RP and claims["nonce"] == "n-1"
    assert claims["urn:telematik:claims:id"] == people(1)[0].kvnr
    # whom and how strongly: the login's (eGK proof, software key: substantial)
    assert claims["auth_time"] == read_session_ticket(done.grant.ticket).auth_time
    assert claims["acr"] == ACR_SUBSTANTIAL and claims["amr"] == [AMR_MEW]
    header = json.loads(base64.urlsafe_b64decode(inner.split(".")[0] + "=="))
    assert header["kid"] == kid
    sso = await enclave.mint_id_token(replace(request, single_sign_on=True))
    sso_claims = verify_compact(
        decrypt_id_token(sso, private_key=rp_key),
        jwks={"keys": [keys.public_jwk(kid)]},
        typ=TYP_ID_TOKEN,
    ).claims
    assert sso_claims["amr"] == [AMR_SSO]


async def test_mint_id_token_refuses_an_unsuitable_rp_key(
    enclave: EnclaveClient, settings: Settings
) -> None:
    (erika,) = await import_people(enclave, 1)
    done = await log_in(enclave, settings, erika, people(1)[0])
    kid = FileKeyStore(settings.data_dir / "keys").generate("token").kid
    request = id_token_request(
        erika,
        ticket=done.grant.ticket,
        kid=kid,
        rp_key=ec.generate_private_key(ec.SECP256R1()),
        nonce="n",
    )
    jwk = dict(request.rp_encryption_jwk)
    del jwk["kid"]
    with pytest.raises(UnsuitableKey, match=r"^the RP's encryption key has no kid$"):
        await enclave.mint_id_token(replace(request, rp_encryption_jwk=jwk))


# -- a host with root: what it cannot make the enclave do ---------------------------------------
async def test_a_token_for_another_persons_records_is_refused(
    enclave: EnclaveClient, settings: Settings
) -> None:
    """The host holds Erika's session ticket and Max's sealed records: no token for Max."""
    erika, max_ = await import_people(enclave, 2)
    done = await log_in(enclave, settings, erika, people(2)[0])
    kid = FileKeyStore(settings.data_dir / "keys").generate("token").kid
    rp_key = ec.generate_private_key(ec.SECP256R1())
    request = id_token_request(max_, ticket=done.grant.ticket, kid=kid, rp_key=rp_key, nonce="n")
    with pytest.raises(SessionRefused, match=r"^the records are not the logged-in person's$"):
        await enclave.mint_id_token(request)


@pytest.mark.parametrize("forgery", ["made up", "altered", "truncated", "another purpose"])
async def test_a_session_ticket_the_enclave_did_not_issue_is_refused(
    enclave: EnclaveClient, settings: Settings, forgery: str
) -> None:
    (erika,) = await import_people(enclave, 1)
    done = await log_in(enclave, settings, erika, people(1)[0])
    ticket = done.grant.ticket
    forged = {
        "made up": b"\x89" + os.urandom(120),
        # the same fields with a later expiry: the MAC no longer fits
        "altered": ticket.replace(
            read_session_ticket(ticket).expires_at.to_bytes(4, "big"),
            (read_session_ticket(ticket).expires_at + 86400).to_bytes(4, "big"),
        ),
        "truncated": ticket[:-1],
        "another purpose": done.binding.binding * 3,
    }[forgery]
    assert forged != ticket
    kid = FileKeyStore(settings.data_dir / "keys").generate("token").kid
    request = id_token_request(
        erika, ticket=forged, kid=kid, rp_key=ec.generate_private_key(ec.SECP256R1()), nonce="n"
    )
    with pytest.raises(SessionRefused):
        await enclave.mint_id_token(request)


async def test_a_device_bound_to_another_person_cannot_log_in(
    enclave: EnclaveClient, settings: Settings
) -> None:
    """The host rewrites the device row to point at Max: the binding no longer fits."""
    erika, max_ = await import_people(enclave, 2)
    done = await log_in(enclave, settings, erika, people(2)[0])
    (challenge,) = await enclave.login_challenges(1)
    moved = replace(login_request(done, challenge, counter=2), pseudonym=max_.pseudonym, owner=max_)
    with pytest.raises(SessionRefused, match=r"^the device is not bound by this enclave$"):
        await enclave.login(moved)
    # nor with the host's own key in place of the device's
    other = ec.generate_private_key(ec.SECP256R1())
    swapped = replace(done, device_key=other)
    with pytest.raises(SessionRefused, match=r"^the device is not bound by this enclave$"):
        await enclave.login(login_request(swapped, challenge, counter=2))
    # the challenge was not spent by the refusals: the real device still logs in with it
    grant = await enclave.login(login_request(done, challenge, counter=2))
    assert read_session_ticket(grant.ticket).pseudonym == erika.pseudonym


async def test_a_login_signature_cannot_be_replayed_or_made_over_a_host_challenge(
    enclave: EnclaveClient, settings: Settings
) -> None:
    (erika,) = await import_people(enclave, 1)
    done = await log_in(enclave, settings, erika, people(1)[0])
    (challenge,) = await enclave.login_challenges(1)
    request = login_request(done, challenge, counter=2)
    await enclave.login(request)
    with pytest.raises(SessionRefused, match=r"^the challenge was already used$"):
        await enclave.login(request)
    host_made = os.urandom(32)  # a challenge the host chose (to have a signature over it later)
    with pytest.raises(SessionRefused, match=r"^the challenge was not issued by this enclave$"):
        await enclave.login(login_request(done, host_made, counter=3))
    bad = replace(login_request(done, (await enclave.login_challenges(1))[0], counter=3))
    with pytest.raises(SessionRefused, match=r"^device authentication failed$"):
        await enclave.login(replace(bad, signature=bytes(64)))


async def test_a_device_binding_needs_the_enclaves_own_proof(
    enclave: EnclaveClient, settings: Settings
) -> None:
    (erika,) = await import_people(enclave, 1)
    done = await log_in(enclave, settings, erika, people(1)[0])
    request = DeviceBindingRequest(
        proof_ticket=done.grant.ticket,  # a valid MAC, but for another purpose
        device_id="0" * 32,
        public_key=spki(ec.generate_private_key(ec.SECP256R1())),
        key_class="software",
        attestation_format="healthid-software",
    )
    with pytest.raises(SessionRefused, match=r"^the proof ticket was not issued by this enclave$"):
        await enclave.bind_device(request)


async def test_login_challenges_are_bounded(enclave: EnclaveClient) -> None:
    challenges = await enclave.login_challenges(MAX_LOGIN_CHALLENGES)
    assert len(set(challenges)) == MAX_LOGIN_CHALLENGES
    assert all(len(c) == 32 for c in challenges)
    with pytest.raises(EnclaveError):
        await enclave.login_challenges(MAX_LOGIN_CHALLENGES + 1)


# -- attestation and the audit witness --------------------------------------------------------
DEV_POLICY = TeePolicy(mrsigners=frozenset({b"\x00" * 32}), isv_prod_id=0)  # unused: simulated


async def test_attestation_binds_the_enclave_keys_and_the_nonce(enclave: EnclaveClient) -> None:
    nonce = os.urandom(32)
    document = await enclave.attest(nonce)
    verified = verify_attestation_document(
        document,
        nonce=nonce,
        policy=DEV_POLICY,
        collateral=None,
        now=datetime.now(UTC),
        allow_simulated=True,
    )
    assert verified.simulated and verified.identity_key is not None
    assert verified.key("audit") is not None  # the checkpoint key is attested too
    with pytest.raises(NonceMismatchError):  # a replayed document answers another nonce
        verify_attestation_document(
            document,
            nonce=os.urandom(32),
            policy=DEV_POLICY,
            collateral=None,
            now=datetime.now(UTC),
            allow_simulated=True,
        )
    with pytest.raises(SimulatedEvidenceRejectedError):  # outside development: refused
        verify_attestation_document(
            document, nonce=nonce, policy=DEV_POLICY, collateral=None, now=datetime.now(UTC)
        )


async def test_attestation_refuses_a_nonce_out_of_bounds(enclave: EnclaveClient) -> None:
    with pytest.raises(EnclaveError):
        await enclave.attest(b"short")


async def test_the_audit_witness_signs_only_continuations_of_its_head(
    enclave: EnclaveClient,
) -> None:
    head = await enclave.audit_head()
    seq, digest = (0, GENESIS_HASH) if head is None else (head.checkpoint.seq, head.checkpoint.head)
    events = [AuditEvent(time=1_700_000_000 + i, kind=AuditKind.LOGIN) for i in range(3)]
    entries = chain(seq, digest, events)
    signed = await enclave.sign_audit_checkpoint(AuditCheckpointRequest(entries=tuple(entries)))
    assert signed.checkpoint.seq == seq + 3 and signed.checkpoint.head == entries[-1].entry_hash
    assert await enclave.audit_head() == signed
    forged = chain(seq + 3, b"\x00" * 32, events[:1])  # does not link to the signed head
    with pytest.raises(EnclaveError):
        await enclave.sign_audit_checkpoint(AuditCheckpointRequest(entries=tuple(forged)))
