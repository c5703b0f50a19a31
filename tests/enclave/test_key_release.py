"""The attested key release, in one process: the wrap of the root key to the joining enclave's
transport key, the releasing side's challenge and policy, the joining side's checks (spec
vau-and-tee.md §4.3). Two real enclave processes: tests/enclave/rpc/test_key_release_process.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from healthid.enclave.attestation import (
    SimulatedEvidence,
    enclave_jwk,
    make_attestation_document,
)
from healthid.enclave.key_release import (
    CHALLENGE_TTL,
    KEY_RELEASE_ROLE,
    MAX_OPEN_CHALLENGES,
    WRAPPED_BYTES,
    JoinedRootKey,
    KeyReleaseError,
    KeyReleaseRefused,
    KeyReleaseService,
    KeyReleaseSource,
    MeasuredSimulatedEvidence,
    ReleasedRootKey,
    ReleasingEnclave,
    default_simulated_body,
    evidence_identity,
    join_root_key,
    same_enclave_policy,
    simulated_body,
    simulated_code_measurement,
    unwrap_root_key,
    wrap_context,
    wrap_root_key,
)
from healthid.enclave.vault import RootKey
from healthid.protocol.jose.keys import b64url_encode
from healthid.protocol.tee import SimulatedReportBody, TeeKind, TeePolicy

BODY = SimulatedReportBody(
    mr_enclave=bytes.fromhex("a1" * 32),
    mr_signer=bytes.fromhex("b2" * 32),
    isv_prod_id=1,
    isv_svn=2,
    debug=False,
)
EVIDENCE = MeasuredSimulatedEvidence(body=BODY)


def p256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Releaser:
    """Enclave A in this process, reached like the RPC reaches it (KeyReleaseSource)."""

    def __init__(self, evidence: MeasuredSimulatedEvidence = EVIDENCE, **kwargs: object) -> None:
        self.root = RootKey.from_secret(os.urandom(32))
        self.clock = Clock()
        self.service = KeyReleaseService(
            root=self.root,
            identity=p256().public_key(),
            evidence=evidence,
            clock=self.clock,
            **kwargs,  # type: ignore[arg-type]
        )
        self.seen: list[tuple[bytes, bytes, bytes]] = []  # what crossed: challenge, nonce, doc

    async def key_release_challenge(self) -> bytes:
        return self.service.challenge()

    async def release_root_key(
        self, *, challenge: bytes, nonce: bytes, attestation: bytes
    ) -> ReleasedRootKey:
        self.seen.append((challenge, nonce, attestation))
        return self.service.release(challenge=challenge, nonce=nonce, attestation=attestation)


class Relay:
    """A host between B and A that may alter what B sends or what A answers."""

    def __init__(
        self,
        releaser: KeyReleaseSource,
        *,
        request: Callable[[bytes], bytes] = lambda doc: doc,
        answer: Callable[[ReleasedRootKey], ReleasedRootKey] = lambda r: r,
    ) -> None:
        self.releaser = releaser
        self.request = request
        self.answer = answer

    async def key_release_challenge(self) -> bytes:
        return await self.releaser.key_release_challenge()

    async def release_root_key(
        self, *, challenge: bytes, nonce: bytes, attestation: bytes
    ) -> ReleasedRootKey:
        released = await self.releaser.release_root_key(
            challenge=challenge, nonce=nonce, attestation=self.request(attestation)
        )
        return self.answer(released)


async def join(
    peer: KeyReleaseSource,
    evidence: MeasuredSimulatedEvidence | SimulatedEvidence = EVIDENCE,
    policy: TeePolicy | None = None,
) -> JoinedRootKey:
    return await join_root_key(peer, identity=p256().public_key(), evidence=evidence, policy=policy)


def measured(**change: object) -> MeasuredSimulatedEvidence:
    return MeasuredSimulatedEvidence(body=dataclasses.replace(BODY, **change))  # type: ignore[arg-type]


# -- wrap and unwrap ------------------------------------------------------------------------
def test_the_root_key_unwraps_only_with_the_transport_key() -> None:
    root, recipient, sender = RootKey.from_secret(os.urandom(32)), p256(), p256()
    challenge = os.urandom(32)
    blob = wrap_root_key(root, recipient=recipient.public_key(), sender=sender, challenge=challenge)
    assert len(blob) == WRAPPED_BYTES and blob[0] == 1
    assert root.secret not in blob
    back = unwrap_root_key(
        blob,
        recipient=recipient,
        sender=sender.public_key(),
        root_key_id=root.key_id,
        challenge=challenge,
    )
    assert back.secret == root.secret and back.key_id == root.key_id
    with pytest.raises(KeyReleaseError, match="does not open"):
        unwrap_root_key(
            blob,
            recipient=p256(),
            sender=sender.public_key(),
            root_key_id=root.key_id,
            challenge=challenge,
        )


@pytest.mark.parametrize("what", ["sender", "root_key_id", "challenge", "bit", "format"])
def test_the_wrap_is_bound_to_both_keys_the_root_key_id_and_the_challenge(what: str) -> None:
    root, recipient, sender = RootKey.from_secret(os.urandom(32)), p256(), p256()
    challenge = os.urandom(32)
    blob = wrap_root_key(root, recipient=recipient.public_key(), sender=sender, challenge=challenge)
    args: dict[str, object] = {
        "recipient": recipient,
        "sender": sender.public_key(),
        "root_key_id": root.key_id,
        "challenge": challenge,
    }
    if what == "sender":
        args["sender"] = p256().public_key()
    elif what == "root_key_id":
        args["root_key_id"] = "0" * 16
    elif what == "challenge":
        args["challenge"] = os.urandom(32)
    elif what == "bit":
        blob = blob[:-1] + bytes([blob[-1] ^ 1])
    else:
        blob = b"\x02" + blob[1:]
    with pytest.raises(KeyReleaseError):
        unwrap_root_key(blob, **args)  # type: ignore[arg-type]


def test_the_context_encodes_each_part_unambiguously() -> None:
    a, b = p256().public_key(), p256().public_key()
    one = wrap_context(recipient=a, sender=b, root_key_id="ab", challenge=b"c" * 32)
    swapped = wrap_context(recipient=b, sender=a, root_key_id="ab", challenge=b"c" * 32)
    assert one != swapped and one.startswith(b"healthid/v1/key-release")


# -- the whole exchange -----------------------------------------------------------------------
async def test_a_joining_enclave_receives_the_root_key() -> None:
    releaser = Releaser()
    joined = await join(releaser)
    assert joined.root.key_id == releaser.root.key_id
    assert joined.root.secret == releaser.root.secret
    assert joined.releaser.simulated_body == BODY
    assert joined.releaser_measurement == f"{'a1' * 32} (SIMULATED)"
    ((challenge, nonce, attestation),) = releaser.seen
    assert releaser.root.secret not in attestation + nonce + challenge
    claims = json.loads(attestation)["claims"]
    assert claims["nonce"] == b64url_encode(challenge)
    assert claims["keys"][KEY_RELEASE_ROLE]["use"] == "enc"


@pytest.mark.parametrize(
    ("joiner", "rule"),
    [
        (measured(mr_enclave=bytes(32)), "mrenclave_not_allowed"),
        (measured(mr_signer=bytes(32)), "mrsigner_not_allowed"),
        (measured(isv_prod_id=7), "isv_prod_id_mismatch"),
        (measured(isv_svn=1), "isv_svn_too_low"),
        (measured(debug=True), "debug_enclave"),
        (SimulatedEvidence(), "simulated_measurement_missing"),
    ],
    ids=["mrenclave", "mrsigner", "product", "older-svn", "debug", "no-measurement"],
)
async def test_the_releaser_refuses_an_enclave_its_policy_does_not_name(
    joiner: MeasuredSimulatedEvidence | SimulatedEvidence, rule: str
) -> None:
    releaser = Releaser()
    policy_for_a = same_enclave_policy(BODY)  # B would trust A; A must not trust B
    with pytest.raises(KeyReleaseRefused, match=rf"^key release refused \({rule}\)") as info:
        await join(releaser, joiner, policy_for_a)
    assert releaser.root.secret.hex() not in str(info.value)


async def test_a_newer_security_version_may_join() -> None:
    joined = await join(Releaser(), measured(isv_svn=3), same_enclave_policy(BODY))
    assert joined.root.secret is not None


async def test_a_configured_policy_admits_another_build() -> None:
    upgrade = measured(mr_enclave=bytes.fromhex("c3" * 32), isv_svn=3)
    by_signer = TeePolicy(mrsigners=frozenset({BODY.mr_signer}), isv_prod_id=1, min_isv_svn=2)
    releaser = Releaser(policy=by_signer)
    joined = await join(releaser, upgrade, by_signer)
    assert joined.root.key_id == releaser.root.key_id


async def test_an_sgx_releaser_never_accepts_simulated_evidence() -> None:
    class SgxLike(MeasuredSimulatedEvidence):
        @property
        def tee(self) -> TeeKind:
            return TeeKind.SGX

    releaser = Releaser(evidence=SgxLike(body=BODY), policy=same_enclave_policy(BODY))
    with pytest.raises(KeyReleaseRefused, match="simulated_rejected"):
        await join(releaser)


# -- challenges ---------------------------------------------------------------------------------
async def test_a_replayed_release_request_is_refused() -> None:
    releaser = Releaser()
    await join(releaser)
    challenge, nonce, attestation = releaser.seen[0]
    with pytest.raises(KeyReleaseRefused, match=r"\(challenge\): unknown, expired or already"):
        releaser.service.release(challenge=challenge, nonce=nonce, attestation=attestation)


async def test_an_unknown_challenge_is_refused() -> None:
    releaser = Releaser()
    await join(releaser)
    _, nonce, attestation = releaser.seen[0]
    with pytest.raises(KeyReleaseRefused, match="challenge"):
        releaser.service.release(challenge=os.urandom(32), nonce=nonce, attestation=attestation)


async def test_an_expired_challenge_is_refused() -> None:
    releaser = Releaser()

    async def late_release(
        *, challenge: bytes, nonce: bytes, attestation: bytes
    ) -> ReleasedRootKey:
        releaser.clock.t += CHALLENGE_TTL + 1
        return releaser.service.release(challenge=challenge, nonce=nonce, attestation=attestation)

    releaser.release_root_key = late_release  # type: ignore[method-assign]
    with pytest.raises(KeyReleaseRefused, match="expired"):
        await join(releaser)


async def test_a_challenge_is_used_up_even_by_a_refused_attempt() -> None:
    releaser = Releaser()
    with pytest.raises(KeyReleaseRefused, match="debug_enclave"):
        await join(releaser, measured(debug=True))
    challenge, nonce, _ = releaser.seen[0]
    good = make_attestation_document(
        keys={"identity": p256().public_key(), KEY_RELEASE_ROLE: transport_jwk()},
        nonce=challenge,
        provider=EVIDENCE,
        now=datetime.now(UTC),
    )
    with pytest.raises(KeyReleaseRefused, match="challenge"):
        releaser.service.release(challenge=challenge, nonce=nonce, attestation=good.to_json())


def test_open_challenges_are_bounded() -> None:
    service = Releaser().service
    first = service.challenge()
    for _ in range(MAX_OPEN_CHALLENGES):
        service.challenge()
    with pytest.raises(KeyReleaseRefused, match="challenge"):
        service.release(challenge=first, nonce=os.urandom(32), attestation=b"{}")


# -- the joining enclave's document ---------------------------------------------------------------
def transport_jwk(use: str = "enc") -> dict[str, str]:
    return enclave_jwk(KEY_RELEASE_ROLE, p256().public_key(), use=use)


def document(nonce: bytes, keys: dict[str, object]) -> bytes:
    return make_attestation_document(
        keys=keys,  # type: ignore[arg-type]
        nonce=nonce,
        provider=EVIDENCE,
        now=datetime.now(UTC),
    ).to_json()


async def test_a_document_for_another_nonce_is_refused() -> None:
    service = Releaser().service
    challenge = service.challenge()
    doc = document(
        os.urandom(32), {"identity": p256().public_key(), KEY_RELEASE_ROLE: transport_jwk()}
    )
    with pytest.raises(KeyReleaseRefused, match="nonce_mismatch"):
        service.release(challenge=challenge, nonce=os.urandom(32), attestation=doc)


async def test_a_tampered_document_is_refused() -> None:
    """The relay swaps in its own transport key: the claims no longer match the evidence."""

    def swap_transport_key(doc: bytes) -> bytes:
        obj = json.loads(doc)
        obj["claims"]["keys"][KEY_RELEASE_ROLE] = transport_jwk()
        return json.dumps(obj).encode()

    releaser = Releaser()
    with pytest.raises(KeyReleaseRefused, match="report_data_mismatch"):
        await join(Relay(releaser, request=swap_transport_key))


@pytest.mark.parametrize("use", [None, "sig"])
async def test_a_document_without_an_enc_transport_key_is_refused(use: str | None) -> None:
    service = Releaser().service
    challenge = service.challenge()
    keys: dict[str, object] = {"identity": p256().public_key()}
    if use is not None:
        keys[KEY_RELEASE_ROLE] = transport_jwk(use)
    with pytest.raises(KeyReleaseRefused, match="no_transport_key"):
        service.release(
            challenge=challenge, nonce=os.urandom(32), attestation=document(challenge, keys)
        )


async def test_a_stale_document_is_refused() -> None:
    service = Releaser().service
    challenge = service.challenge()
    old = make_attestation_document(
        keys={"identity": p256().public_key(), KEY_RELEASE_ROLE: transport_jwk()},
        nonce=challenge,
        provider=EVIDENCE,
        now=datetime.now(UTC) - timedelta(hours=1),
    )
    with pytest.raises(KeyReleaseRefused, match="stale"):
        service.release(challenge=challenge, nonce=os.urandom(32), attestation=old.to_json())


async def test_a_short_nonce_for_the_releasers_document_is_refused() -> None:
    releaser = Releaser()
    with pytest.raises(KeyReleaseRefused, match="nonce"):
        releaser.service.release(
            challenge=releaser.service.challenge(), nonce=b"x", attestation=b"{}"
        )


# -- the joining enclave checks the releaser -------------------------------------------------------
async def test_the_joiner_refuses_a_releaser_its_policy_does_not_name() -> None:
    other_build = measured(mr_enclave=bytes.fromhex("d4" * 32))
    releaser = Releaser(evidence=other_build, policy=same_enclave_policy(BODY))
    with pytest.raises(KeyReleaseError, match=r"not trusted \(mrenclave_not_allowed\)"):
        await join(releaser)


async def test_the_joiner_refuses_a_root_key_planted_by_the_relay() -> None:
    """The relay wraps a root key of its own: its ECDH key is not the attested one."""

    def plant(released: ReleasedRootKey) -> ReleasedRootKey:
        return dataclasses.replace(released, wrapped=b"\x01" + os.urandom(WRAPPED_BYTES - 1))

    with pytest.raises(KeyReleaseError, match="does not open"):
        await join(Relay(Releaser(), answer=plant))


async def test_the_joiner_refuses_a_wrong_root_key_id() -> None:
    def rename(released: ReleasedRootKey) -> ReleasedRootKey:
        return dataclasses.replace(released, root_key_id="0123456789abcdef")

    with pytest.raises(KeyReleaseError, match="does not open"):
        await join(Relay(Releaser(), answer=rename))


async def test_the_joiner_refuses_a_replayed_releaser_document() -> None:
    releaser, recorded = Releaser(), []

    def record(released: ReleasedRootKey) -> ReleasedRootKey:
        recorded.append(released)
        return released

    def replay(released: ReleasedRootKey) -> ReleasedRootKey:
        return dataclasses.replace(released, attestation=recorded[0].attestation)

    await join(Relay(releaser, answer=record))
    with pytest.raises(KeyReleaseError, match=r"not trusted \(nonce_mismatch\)"):
        await join(Relay(releaser, answer=replay))


async def test_a_refusal_travels_as_a_refusal() -> None:
    class Refusing:
        async def key_release_challenge(self) -> bytes:
            return os.urandom(32)

        async def release_root_key(
            self, *, challenge: bytes, nonce: bytes, attestation: bytes
        ) -> ReleasedRootKey:
            raise KeyReleaseRefused("key release refused (debug_enclave): the enclave is debug")

    assert isinstance(Refusing(), KeyReleaseSource)
    with pytest.raises(KeyReleaseRefused, match="debug_enclave"):
        await join(Refusing())


# -- measurements and the default policy -----------------------------------------------------------
def test_the_default_policy_is_the_same_enclave_with_debug_off() -> None:
    policy = same_enclave_policy(dataclasses.replace(BODY, debug=True))
    assert policy.mrenclaves == {BODY.mr_enclave} and policy.mrsigners == {BODY.mr_signer}
    assert policy.isv_prod_id == 1 and policy.min_isv_svn == 2
    assert policy.allow_debug is False


def test_the_own_measurement_comes_from_the_own_evidence() -> None:
    assert evidence_identity(EVIDENCE) == BODY
    with pytest.raises(KeyReleaseError, match="HEALTHID_KEY_RELEASE_POLICY"):
        evidence_identity(SimulatedEvidence())


def test_the_simulated_measurement_is_a_hash_of_the_code(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    before = simulated_code_measurement(tmp_path / "pkg")
    assert simulated_code_measurement(tmp_path / "pkg") == before
    (tmp_path / "pkg" / "a.py").write_text("x = 2\n")
    assert simulated_code_measurement(tmp_path / "pkg") != before
    default = default_simulated_body()
    assert len(default.mr_enclave) == 32 and default.debug is False
    assert default.isv_prod_id == 1 and default.isv_svn == 1


def test_configured_members_override_the_simulated_body() -> None:
    body = simulated_body({"debug": True, "isv_svn": 4})
    assert body.debug and body.isv_svn == 4
    assert body.mr_enclave == default_simulated_body().mr_enclave
    with pytest.raises(ValueError, match="unknown"):
        simulated_body({"mr_enclave": "ab" * 32})


def test_the_releasing_enclave_speaks_the_key_release_group() -> None:
    assert issubclass(ReleasingEnclave, KeyReleaseSource)
