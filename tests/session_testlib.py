"""Enclave-vouched sessions for tests that talk to the enclave directly: a person proven with
their eGK, a bound device and a login, exactly as the wallet service drives the enclave."""

from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from healthid.demo.egk_test_ca import TestCard
from healthid.enclave.api import (
    BoundDeviceKey,
    DeviceBindingRequest,
    EnclaveClient,
    LoginGrant,
    LoginRequest,
    SealedPolicyholder,
)
from healthid.protocol import device_auth

SOFTWARE = "healthid-software"  # host/attestation.py FORMAT_SOFTWARE


@dataclass
class LoggedIn:
    """A person proven with their eGK, with a bound device and a session the enclave issued."""

    sealed: SealedPolicyholder
    device_key: ec.EllipticCurvePrivateKey
    device_id: str
    binding: BoundDeviceKey
    grant: LoginGrant


def spki(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def device_signature(key: ec.EllipticCurvePrivateKey, signed: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(signed, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def login_request(
    done: LoggedIn, challenge: bytes, *, counter: int, session_ttl: int = 300
) -> LoginRequest:
    """The host's login request for ``done``'s device over ``challenge`` (signed now)."""
    signed = device_auth.message(challenge, done.device_id, counter)
    return LoginRequest(
        device_id=done.device_id,
        pseudonym=done.binding.pseudonym,
        public_key=spki(done.device_key),
        key_class="software",
        attestation_format=SOFTWARE,
        proofing_method=done.binding.proofing_method,
        proofed_at=done.binding.proofed_at,
        sign_count=0,
        binding=done.binding.binding,
        challenge=challenge,
        counter=counter,
        signature=device_signature(done.device_key, signed),
        session_ttl=session_ttl,
        owner=done.sealed,
    )


async def log_in_with_card(
    enclave: EnclaveClient, sealed: SealedPolicyholder, card: TestCard
) -> LoggedIn:
    """eGK proof of ``card``, the match to ``sealed``, a new device bound, one login."""
    challenge = os.urandom(32)
    lookup = await enclave.egk_prove(
        certificate=card.certificate_der, signature=card.sign(challenge), challenge=challenge
    )
    match = await enclave.match_identity(lookup.proof_id, [sealed])
    key = ec.generate_private_key(ec.SECP256R1())
    device_id = os.urandom(16).hex()
    binding = await enclave.bind_device(
        DeviceBindingRequest(
            proof_ticket=match.proof_ticket,
            device_id=device_id,
            public_key=spki(key),
            key_class="software",
            attestation_format=SOFTWARE,
        )
    )
    done = LoggedIn(
        sealed=sealed,
        device_key=key,
        device_id=device_id,
        binding=binding,
        grant=LoginGrant(session="", ticket=b"", history=None),
    )
    (login_challenge,) = await enclave.login_challenges(1)
    done.grant = await enclave.login(login_request(done, login_challenge, counter=1))
    return done
