"""The VAU channel through the enclave process (``python -m healthid.enclave_cli``) reached by
RemoteEnclave: the handshake, an encrypted request with its context, and refusals, all across
the RPC's explicit codecs. The channel state lives in that process."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import cbor2
import pytest
from rpc_testlib import (
    EnclaveProcess,
    enclave_settings,
    import_people,
    log_in,
    people,
    short_socket_dir,
)

from healthid.enclave.api import VauContext
from healthid.enclave.rpc import RemoteEnclave
from healthid.protocol.device_auth import session_bearer
from healthid.protocol.tee import TeePolicy, verify_attestation_document
from healthid.protocol.vau import (
    ClientConfig,
    Environment,
    client,
    es256_verifier,
    parse_signed_public_keys,
)
from healthid.protocol.vau import cbor as vau_cbor
from healthid.settings import Settings
from session_testlib import login_request

POLICY = TeePolicy(mrsigners=frozenset({b"\x01" * 32}), isv_prod_id=1)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("enclave-vau")


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


@pytest.fixture
async def remote(enclave_process: EnclaveProcess) -> AsyncIterator[RemoteEnclave]:
    enclave = RemoteEnclave(enclave_process.socket_path)
    yield enclave
    await enclave.aclose()


async def attested_config(enclave: RemoteEnclave) -> ClientConfig:
    nonce = os.urandom(32)
    verified = verify_attestation_document(
        await enclave.attest(nonce),
        nonce=nonce,
        policy=POLICY,
        collateral=None,
        now=datetime.now(UTC),
        allow_simulated=True,
    )
    return ClientConfig(
        environment=Environment.TEST,
        verifier=es256_verifier(verified.identity_key),
        clock=lambda: int(time.time()),
        rng=secrets.token_bytes,
    )


async def test_the_channel_runs_through_the_enclave_process(
    remote: RemoteEnclave, settings: Settings
) -> None:
    config = await attested_config(remote)
    assert config.verifier(parse_signed_public_keys(await remote.vau_public_keys()))
    m1, handshake = client.start(config)
    reply = await remote.vau_handshake(m1)
    assert reply.status == 200 and reply.cid is not None
    m3, confirmation = client.receive_m2(config, handshake, reply.body)
    finished = await remote.vau_finish(reply.cid, m3)
    session = client.receive_m4(config, confirmation, finished.body)

    sealed = (await import_people(remote, 1, seed=71))[0]
    done = await log_in(remote, settings, sealed, people(1, seed=71)[0])  # the device bound

    def exchange(plaintext: bytes) -> bytes:
        nonlocal session
        session, message = client.encrypt_request(config, session, plaintext)
        return message

    def answer(body: bytes) -> dict[str, object]:
        nonlocal session
        session, raw = client.decrypt_response(config, session, body)
        decoded = cbor2.loads(raw)
        assert isinstance(decoded, dict)
        return decoded

    # a login through the channel: the token comes back inside, the host gets its bearer
    (challenge,) = await remote.login_challenges(1)
    signed = login_request(done, challenge, counter=2)
    args = {"challenge_id": "c" * 24, "counter": "2", "device_id": done.device_id}
    plaintext = vau_cbor.encode(
        {"op": "login", "session": "", "args": {**args, "signature": signed.signature}}
    )
    login_context = VauContext(
        op="login", args=tuple(sorted(args.items())), login=replace(signed, signature=b"")
    )
    logged_in = await remote.vau_request(reply.cid, exchange(plaintext), login_context)
    assert logged_in.outcome == "ok" and logged_in.login is not None
    token = answer(logged_in.body)["ok"]["session"]  # type: ignore[index]
    assert logged_in.login.session == session_bearer(token)

    plaintext = vau_cbor.encode({"op": "me", "session": token, "args": {}})
    context = VauContext(
        op="me", session=session_bearer(token), pseudonym=sealed.pseudonym, sealed=sealed
    )
    # without the enclave's session ticket, the host's word on whose session it is is not enough
    answered = await remote.vau_request(reply.cid, exchange(plaintext), context)
    assert answered.status == 200 and answered.outcome == "session_refused"
    assert answer(answered.body)["error"]["status"] == 401  # type: ignore[index]
    message = exchange(plaintext)
    context = replace(context, ticket=logged_in.login.ticket)
    answered = await remote.vau_request(reply.cid, message, context)
    assert answered.status == 200 and answered.outcome == "ok"
    me = answer(answered.body)["ok"]
    assert isinstance(me, dict) and len(me["kvnr"]) == 10 and me["given_name"]

    replayed = await remote.vau_request(reply.cid, message, context)
    assert replayed.status == 403 and replayed.outcome == "bad_counter"
    unknown = await remote.vau_request("f" * 64, message, context)
    assert unknown.status == 404 and cbor2.loads(unknown.body)["ErrorCode"] == 9
