"""Attested key release: a new enclave instance receives the root key from a running one.

Source: ../shared/spec/vau-and-tee.md §4.3 ("K_root exists only inside the TEE ... delivered
... from a key-release service that checks the quote against a policy of MRSIGNER, ISVPRODID,
minimum ISVSVN and debug off"; sealing is a same-host restart cache, not the way the key
moves), §3.1 (Gramine secret provisioning does the same after RA-TLS) and §3.5 (CCF: a node
joins only if its measurement is allowed). The sealing side is :mod:`healthid.enclave.sealing`.

The joining instance B has no root key; the releasing instance A has one. Two calls of the
enclave RPC, enclave to enclave (the untrusted hosts only relay the bytes)::

    B -> A  key_release_challenge()
    A -> B  challenge                      32 random bytes; A keeps it CHALLENGE_TTL seconds,
                                           for one use (consumed before anything is checked)
    B -> A  release_root_key(challenge, nonce, attestation)
            attestation = B's document for nonce = challenge, keys:
                          identity     B's identity key (kept: sealed under the root key later)
                          key-release  t_B, a fresh P-256 transport key (use "enc")
            nonce       = 32 random bytes of B's, for A's document
    A:      verifies B's document under its release policy (TeePolicy: measurement, signer,
            product, minimum security version, debug off; simulated evidence only when A is
            simulated itself, then judged by its simulated report body), then
    A -> B  {root_key_id, attestation, wrapped}
            attestation = A's document for B's nonce, keys:
                          identity     A's identity key
                          key-release  e_A, a fresh P-256 key for this one release ("enc")
            wrapped     = 0x01 ‖ iv(12) ‖ AES-256-GCM(KEK, iv, root secret, aad = info)
            KEK         = HKDF-SHA256(ECDH(e_A, t_B).x, salt = none, info, 32 bytes)
            info        = "healthid/v1/key-release" ‖ lp(SEC1 t_B) ‖ lp(SEC1 e_A)
                          ‖ lp(root_key_id) ‖ lp(challenge)          lp = u16 length prefix
    B:      verifies A's document under its own policy (does B trust A?), unwraps with t_B,
            checks the root key id, seals the root key locally and only then serves.

Both transport keys are attested: only the enclave A's policy accepts can open the wrapped key
(ECDH-ES to t_B), and only an enclave B's policy accepts can have made it (e_A), so a relaying
host can neither read the root key nor plant one of its own. A refusal names the failed rule
and carries no secret. The root key never crosses in plaintext.

Default policy (no ``HEALTHID_KEY_RELEASE_POLICY``): "the same enclave as I am", derived from
this enclave's own evidence: its MRENCLAVE and MRSIGNER, its ISVPRODID, ISVSVN at least its
own, debug off. A release across builds (an upgrade) needs a configured policy file naming
both, e.g. by MRSIGNER + ISVPRODID + minimum ISVSVN. The same policy answers both questions:
which enclaves may hold this deployment's root key.

Development (``tee: simulated``): evidence is simulated and carries a SIMULATED report body
(:class:`MeasuredSimulatedEvidence`; MRENCLAVE defaults to a hash of the healthid sources), so
the policy's rules are exercised exactly as in production. It protects nothing: the body is
self-reported, any process can claim any measurement.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

import healthid
from healthid.enclave import api
from healthid.enclave.attestation import EvidenceProvider, enclave_jwk, make_attestation_document
from healthid.enclave.service import Enclave
from healthid.enclave.vault import ROOT_KEY_LEN, RootKey, Vault
from healthid.protocol.tee import (
    IDENTITY_ROLE,
    EnclaveIdentity,
    SimulatedReportBody,
    TeeAttestationError,
    TeeKind,
    TeePolicy,
    VerifiedAttestation,
    make_simulated_evidence,
    parse_sgx_quote,
    parse_simulated,
    verify_attestation_document,
)
from healthid.protocol.tee.quote import REPORT_DATA_BYTES

KEY_RELEASE_ROLE: Final = "key-release"  # attested transport key of either side (use "enc")
CHALLENGE_BYTES: Final = 32
NONCE_BYTES: Final = 32
CHALLENGE_TTL: Final = 60.0  # seconds a challenge stays valid in the releasing enclave
MAX_OPEN_CHALLENGES: Final = 64  # the oldest is forgotten beyond this (bounded memory)
WRAP_FORMAT: Final = 1  # first byte of a wrapped root key
WRAP_LABEL: Final = b"healthid/v1/key-release"
GCM_IV_BYTES: Final = 12
GCM_TAG_BYTES: Final = 16
WRAPPED_BYTES: Final = 1 + GCM_IV_BYTES + ROOT_KEY_LEN + GCM_TAG_BYTES
# Development: the simulated report body (same numbers as the Gramine manifest's).
SIMULATED_MRSIGNER: Final = hashlib.sha256(
    b"healthid/v1/simulated-mrsigner: development only, signed by nobody"
).digest()
SIMULATED_ISV_PROD_ID: Final = 1
SIMULATED_ISV_SVN: Final = 1
_MEASUREMENT_LABEL: Final = b"healthid/v1/simulated-mrenclave"
_log = logging.getLogger(__name__)


class KeyReleaseError(api.EnclaveError):
    """The root key was not released (or not received). The message names the failed rule."""


class KeyReleaseRefused(KeyReleaseError):  # noqa: N818 - a refusal, named as it is reported
    """The releasing enclave refused the joining one (challenge, attestation or policy)."""


# -- the simulated report body (development) ---------------------------------------------------
def simulated_code_measurement(package_dir: Path | None = None) -> bytes:
    """A SIMULATED MRENCLAVE: SHA-256 over every healthid source file (path and content, in
    sorted order), so development enclaves running other code measure differently."""
    root = package_dir or Path(healthid.__file__).parent
    digest = hashlib.sha256(_MEASUREMENT_LABEL)
    for path in sorted(root.rglob("*.py")):
        for part in (path.relative_to(root).as_posix().encode("utf-8"), path.read_bytes()):
            digest.update(len(part).to_bytes(8, "big") + part)
    return digest.digest()


@functools.cache
def default_simulated_body() -> SimulatedReportBody:
    return SimulatedReportBody(
        mr_enclave=simulated_code_measurement(),
        mr_signer=SIMULATED_MRSIGNER,
        isv_prod_id=SIMULATED_ISV_PROD_ID,
        isv_svn=SIMULATED_ISV_SVN,
        debug=False,
    )


def simulated_body(overrides: Mapping[str, object] | None = None) -> SimulatedReportBody:
    """The default simulated body with ``overrides`` (members of its JSON form) applied;
    ValueError names an unknown member or a bad value."""
    base = default_simulated_body().to_dict()
    unknown = sorted(set(overrides or {}) - set(base))
    if unknown:
        raise ValueError(f"unknown simulated measurement member(s) {unknown}")
    return SimulatedReportBody.from_dict(base | dict(overrides or {}))


@dataclass(frozen=True, kw_only=True)
class MeasuredSimulatedEvidence:
    """Development only: simulated evidence with a SIMULATED report body. NO protection."""

    body: SimulatedReportBody

    @property
    def tee(self) -> TeeKind:
        return TeeKind.SIMULATED

    def evidence(self, report_data: bytes) -> bytes:
        return make_simulated_evidence(report_data, self.body)


def evidence_identity(provider: EvidenceProvider) -> EnclaveIdentity:
    """This enclave's own measurement, signer, product, security version and debug flag, as
    its evidence states them (an SGX quote's report body, or the simulated body)."""
    raw = provider.evidence(bytes(REPORT_DATA_BYTES))
    try:
        if provider.tee is TeeKind.SGX:
            return parse_sgx_quote(raw).body
        body = parse_simulated(raw).body
    except TeeAttestationError as exc:
        raise KeyReleaseError(f"this enclave's own evidence is unusable: {exc}") from None
    if body is None:
        raise KeyReleaseError(
            "this enclave's evidence names no measurement: configure HEALTHID_KEY_RELEASE_POLICY"
        )
    return body


def same_enclave_policy(identity: EnclaveIdentity) -> TeePolicy:
    """The default release policy: the same MRENCLAVE and MRSIGNER, the same product, an
    ISVSVN at least ours, debug off (even if we are a debug enclave ourselves)."""
    return TeePolicy(
        mrenclaves=frozenset({identity.mr_enclave}),
        mrsigners=frozenset({identity.mr_signer}),
        isv_prod_id=identity.isv_prod_id,
        min_isv_svn=identity.isv_svn,
        allow_debug=False,
    )


# -- wrapping the root key to the joining enclave's transport key -----------------------------
def _sec1(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def wrap_context(
    *,
    recipient: ec.EllipticCurvePublicKey,
    sender: ec.EllipticCurvePublicKey,
    root_key_id: str,
    challenge: bytes,
) -> bytes:
    """HKDF info and AEAD associated data: the label, both public keys, the root key id and
    the challenge, each length-prefixed (no two contexts share an encoding)."""
    parts = [WRAP_LABEL]
    for field in (_sec1(recipient), _sec1(sender), root_key_id.encode("utf-8"), challenge):
        parts += (len(field).to_bytes(2, "big"), field)
    return b"".join(parts)


def _kek(z: bytes, context: bytes) -> AESGCM:
    return AESGCM(HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=context).derive(z))


def wrap_root_key(
    root: RootKey,
    *,
    recipient: ec.EllipticCurvePublicKey,
    sender: ec.EllipticCurvePrivateKey,
    challenge: bytes,
    rng: Callable[[int], bytes] = os.urandom,
) -> bytes:
    """ECDH-ES P-256 -> HKDF-SHA256 -> AES-256-GCM of the root secret to ``recipient``."""
    context = wrap_context(
        recipient=recipient,
        sender=sender.public_key(),
        root_key_id=root.key_id,
        challenge=challenge,
    )
    iv = rng(GCM_IV_BYTES)
    kek = _kek(sender.exchange(ec.ECDH(), recipient), context)
    return bytes([WRAP_FORMAT]) + iv + kek.encrypt(iv, root.secret, context)


def unwrap_root_key(
    wrapped: bytes,
    *,
    recipient: ec.EllipticCurvePrivateKey,
    sender: ec.EllipticCurvePublicKey,
    root_key_id: str,
    challenge: bytes,
) -> RootKey:
    """The root key wrapped by :func:`wrap_root_key`, checked against ``root_key_id``."""
    if len(wrapped) != WRAPPED_BYTES or wrapped[0] != WRAP_FORMAT:
        raise KeyReleaseError("the wrapped root key has an unknown format")
    context = wrap_context(
        recipient=recipient.public_key(),
        sender=sender,
        root_key_id=root_key_id,
        challenge=challenge,
    )
    iv, body = wrapped[1 : 1 + GCM_IV_BYTES], wrapped[1 + GCM_IV_BYTES :]
    try:
        secret = _kek(recipient.exchange(ec.ECDH(), sender), context).decrypt(iv, body, context)
    except InvalidTag:
        raise KeyReleaseError("the wrapped root key does not open for this exchange") from None
    root = RootKey.from_secret(secret)
    if not hmac.compare_digest(root.key_id, root_key_id):
        raise KeyReleaseError("the released root key does not have the announced key id")
    return root


# -- the protocol's messages and the releasing side --------------------------------------------
@dataclass(frozen=True, kw_only=True)
class ReleasedRootKey:
    """A's answer: the root key id, A's attestation document for B's nonce, the wrapped key."""

    root_key_id: str
    attestation: bytes
    wrapped: bytes


@runtime_checkable
class KeyReleaseSource(Protocol):
    """The enclave-to-enclave key-release group of the enclave RPC (not host-facing)."""

    async def key_release_challenge(self) -> bytes: ...

    async def release_root_key(
        self, *, challenge: bytes, nonce: bytes, attestation: bytes
    ) -> ReleasedRootKey: ...


def _transport_key(
    verified: VerifiedAttestation, refuse: type[KeyReleaseError]
) -> ec.EllipticCurvePublicKey:
    try:
        key = verified.key(KEY_RELEASE_ROLE)
    except KeyError:
        raise refuse(f"no_transport_key: the document attests no {KEY_RELEASE_ROLE} key") from None
    if key.jwk.get("use") != "enc":
        raise refuse(f"no_transport_key: the {KEY_RELEASE_ROLE} key is not an enc key")
    return key.public_key


def _now() -> datetime:
    return datetime.now(UTC)


class KeyReleaseService:
    """The releasing side (A): challenges, the release policy, the wrapped root key.

    ``policy``: the release policy; None derives "the same enclave as I am" from this
    enclave's own evidence on first use. Simulated evidence is accepted exactly when this
    enclave's own evidence is simulated (and then judged by its simulated report body).
    """

    def __init__(
        self,
        *,
        root: RootKey,
        identity: ec.EllipticCurvePublicKey,
        evidence: EvidenceProvider,
        policy: TeePolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = _now,
        rng: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self._root = root
        self._identity = identity
        self._evidence = evidence
        self._policy = policy
        self._clock = clock
        self._now = now
        self._rng = rng
        self._challenges: OrderedDict[bytes, float] = OrderedDict()  # challenge -> issued at

    @property
    def policy(self) -> TeePolicy:
        if self._policy is None:
            self._policy = same_enclave_policy(evidence_identity(self._evidence))
        return self._policy

    def challenge(self) -> bytes:
        """A fresh challenge for one release attempt (single use, CHALLENGE_TTL seconds)."""
        self._expire()
        while len(self._challenges) >= MAX_OPEN_CHALLENGES:
            self._challenges.popitem(last=False)
        challenge = self._rng(CHALLENGE_BYTES)
        self._challenges[challenge] = self._clock()
        return challenge

    def _expire(self) -> None:
        limit = self._clock() - CHALLENGE_TTL
        while self._challenges and next(iter(self._challenges.values())) < limit:
            self._challenges.popitem(last=False)

    def _consume(self, challenge: bytes) -> None:
        """CONVENTIONS 14: taken out before anything else is looked at (one use, even a
        failed one)."""
        issued = self._challenges.pop(challenge, None)
        if issued is None or issued < self._clock() - CHALLENGE_TTL:
            raise KeyReleaseRefused(
                "key release refused (challenge): unknown, expired or already used challenge"
            )

    def release(self, *, challenge: bytes, nonce: bytes, attestation: bytes) -> ReleasedRootKey:
        """Check the joining enclave's document; wrap the root key to its transport key."""
        self._consume(challenge)
        if len(nonce) != NONCE_BYTES:
            raise KeyReleaseRefused(f"key release refused (nonce): a nonce has {NONCE_BYTES} bytes")
        try:
            verified = verify_attestation_document(
                attestation,
                nonce=challenge,
                policy=self.policy,
                collateral=None,
                now=self._now(),
                allow_simulated=self._evidence.tee is TeeKind.SIMULATED,
                apply_policy_to_simulated=True,
            )
        except TeeAttestationError as exc:
            raise KeyReleaseRefused(f"key release refused ({exc.reason}): {exc}") from None
        recipient = _transport_key(verified, KeyReleaseRefused)
        sender = ec.generate_private_key(ec.SECP256R1())
        document = make_attestation_document(
            keys={
                IDENTITY_ROLE: self._identity,
                KEY_RELEASE_ROLE: enclave_jwk(KEY_RELEASE_ROLE, sender.public_key(), use="enc"),
            },
            nonce=nonce,
            provider=self._evidence,
            now=self._now(),
        )
        wrapped = wrap_root_key(
            self._root, recipient=recipient, sender=sender, challenge=challenge, rng=self._rng
        )
        _log.info(
            "key release: root key %s released to an enclave with MRENCLAVE %s",
            self._root.key_id,
            _measurement_of(verified),
        )
        return ReleasedRootKey(
            root_key_id=self._root.key_id, attestation=document.to_json(), wrapped=wrapped
        )


def _measurement_of(verified: VerifiedAttestation) -> str:
    if verified.quote is not None:
        return verified.quote.body.mr_enclave.hex()
    body = verified.simulated_body
    return f"{body.mr_enclave.hex()} (SIMULATED)" if body is not None else "(none)"


# -- the joining side ----------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class JoinedRootKey:
    """What the joining enclave received: the root key and the releaser's verified document."""

    root: RootKey
    releaser: VerifiedAttestation

    @property
    def releaser_measurement(self) -> str:
        return _measurement_of(self.releaser)


async def join_root_key(
    peer: KeyReleaseSource,
    *,
    identity: ec.EllipticCurvePublicKey,
    evidence: EvidenceProvider,
    policy: TeePolicy | None = None,
    now: Callable[[], datetime] = _now,
    rng: Callable[[int], bytes] = os.urandom,
) -> JoinedRootKey:
    """The joining side (B): attest to ``peer``, check its attestation, unwrap the root key.

    ``identity`` is attested as this enclave's identity key (generate it now, seal it under
    the received root key afterwards). ``policy``: which enclaves this one accepts the root
    key from; None: the same enclave as this one (from ``evidence``).
    """
    if policy is None:
        policy = same_enclave_policy(evidence_identity(evidence))
    try:
        challenge = await peer.key_release_challenge()
    except api.EnclaveError as exc:
        raise KeyReleaseError(f"the releasing enclave gave no challenge: {exc}") from None
    if len(challenge) != CHALLENGE_BYTES:
        raise KeyReleaseError(f"the releasing enclave's challenge is not {CHALLENGE_BYTES} bytes")
    transport = ec.generate_private_key(ec.SECP256R1())
    nonce = rng(NONCE_BYTES)
    document = make_attestation_document(
        keys={
            IDENTITY_ROLE: identity,
            KEY_RELEASE_ROLE: enclave_jwk(KEY_RELEASE_ROLE, transport.public_key(), use="enc"),
        },
        nonce=challenge,
        provider=evidence,
        now=now(),
    )
    try:
        released = await peer.release_root_key(
            challenge=challenge, nonce=nonce, attestation=document.to_json()
        )
    except api.EnclaveUnavailable as exc:
        raise KeyReleaseError(f"the releasing enclave is unavailable: {exc}") from None
    except api.EnclaveError as exc:
        raise KeyReleaseRefused(str(exc)) from None
    try:
        releaser = verify_attestation_document(
            released.attestation,
            nonce=nonce,
            policy=policy,
            collateral=None,
            now=now(),
            allow_simulated=evidence.tee is TeeKind.SIMULATED,
            apply_policy_to_simulated=True,
        )
    except TeeAttestationError as exc:
        raise KeyReleaseError(
            f"the releasing enclave is not trusted ({exc.reason}): {exc}"
        ) from None
    root = unwrap_root_key(
        released.wrapped,
        recipient=transport,
        sender=_transport_key(releaser, KeyReleaseError),
        root_key_id=released.root_key_id,
        challenge=challenge,
    )
    return JoinedRootKey(root=root, releaser=releaser)


# -- the enclave service with the key-release group ----------------------------------------
class ReleasingEnclave(Enclave):
    """The enclave service plus the enclave-to-enclave key-release group
    (:class:`KeyReleaseSource`); the host-facing :class:`~healthid.enclave.api.EnclaveClient`
    is unchanged."""

    def __init__(self, vault: Vault, *, key_release: KeyReleaseService, **kwargs: Any) -> None:
        super().__init__(vault, **kwargs)
        self._key_release = key_release

    async def key_release_challenge(self) -> bytes:
        return self._key_release.challenge()

    async def release_root_key(
        self, *, challenge: bytes, nonce: bytes, attestation: bytes
    ) -> ReleasedRootKey:
        return self._key_release.release(challenge=challenge, nonce=nonce, attestation=attestation)
