"""The enclave encrypts an ID token only to a relying party it verified itself: the trust
chain from the federation master pinned in the enclave's own configuration, not the host's
word on the RP's key (issue #5: a host with root must not be able to read a token)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from federation_testlib import MASTER, NOW, RP, Key, new_key, rp_configuration
from healthid.demo.egk_test_ca import TestEgkCa
from healthid.demo.synthetic import synthetic_rows
from healthid.enclave import api
from healthid.enclave.key_release import MeasuredSimulatedEvidence, simulated_body
from healthid.enclave.registry.model import Policyholder
from healthid.enclave.relying_parties import (
    FederationAnchor,
    RelyingPartyRefused,
    TrustedRelyingParties,
)
from healthid.enclave.service import Enclave
from healthid.enclave.vault import RootKey, Vault
from healthid.keys.file import FileKeyStore
from healthid.protocol.federation import sign_subordinate_statement
from healthid.protocol.jose import decrypt_id_token, public_jwk
from healthid.protocol.jose.errors import JoseError
from healthid.protocol.oauth.token import TokenGrant
from healthid.protocol.tee import TeePolicy, verify_attestation_document
from session_testlib import log_in_with_card

MASTER_KEY = new_key("puk_fedmaster_sig")
RP_KEY = new_key("puk_fd_sig")
ENC_KEY = new_key("puk_fd_enc")
ROW = dict(next(iter(synthetic_rows(1, seed=5))))


def chain(*, sub: str = RP, master: Key = MASTER_KEY, enc: Key = ENC_KEY) -> tuple[str, str]:
    """The master's subordinate statement about ``sub`` and ``sub``'s entity configuration."""
    subordinate = sign_subordinate_statement(
        master_entity_id=MASTER,
        subject=sub,
        subject_jwks=RP_KEY.jwks,
        metadata={"openid_relying_party": {"client_registration_types": ["automatic"]}},
        now=NOW,
        signer=master.sign,
        kid=master.kid,
        lifetime=86400,
    )
    configuration = rp_configuration(
        RP_KEY,
        iss=sub,
        metadata={
            "redirect_uris": [f"{sub}/cb"],
            "scope": "openid urn:telematik:versicherter",
            "jwks": {"keys": [enc.jwk("enc")]},
        },
    )
    return subordinate, configuration


@pytest.fixture
def enclave(tmp_path: Path) -> Iterator[tuple[Enclave, TestEgkCa, FileKeyStore]]:
    ca = TestEgkCa.create(tmp_path / "ca")
    keys = FileKeyStore(tmp_path / "keys")
    enclave = Enclave(
        Vault(RootKey.from_secret(os.urandom(32))),
        allow_test_kvnr=True,
        egk_cas=[ca.certificate],
        token_signer=keys.sign,
        federation=FederationAnchor(entity_id=MASTER, jwks=MASTER_KEY.jwks),
        wall=lambda: NOW,  # the statements' time
    )
    yield enclave, ca, keys
    enclave.close()


async def request_for(
    enclave: Enclave, ca: TestEgkCa, keys: FileKeyStore, statements: tuple[str, ...]
) -> api.IdTokenRequest:
    """A logged-in person's token request; the host claims the RP's key is its own key."""
    sealed = enclave.seal_policyholder(
        Policyholder(
            **{k: ROW[k] for k in ("kvnr", "ik", "given_name", "family_name", "birth_date")},
            sex=ROW["sex"],
            insured_type=ROW["insured_type"],
            valid_from=ROW["valid_from"],
        )
    )
    card = ca.issue_card(ROW["kvnr"], ROW["ik"], ROW["given_name"], ROW["family_name"])
    done = await log_in_with_card(enclave, sealed, card)
    return api.IdTokenRequest(
        sealed=sealed,
        issuer="https://idp.example",
        grant=TokenGrant(
            client_id=RP,
            nonce="n",
            id_token_version="1.0.0",
            consented_claims=("urn:telematik:claims:id",),
        ),
        ticket=done.grant.ticket,
        single_sign_on=False,
        kid=keys.generate("token").kid,
        x5c=(),
        rp_statements=statements,
        rp_encryption_jwk=dict(public_jwk(HOST_KEY.public_key(), kid="host", use="enc")),
    )


HOST_KEY = ec.generate_private_key(ec.SECP256R1())


async def test_the_token_goes_to_the_verified_key_not_the_one_the_host_names(
    enclave: tuple[Enclave, TestEgkCa, FileKeyStore],
) -> None:
    request = await request_for(*enclave, statements=chain())
    jwe = await enclave[0].mint_id_token(request)
    assert decrypt_id_token(jwe, private_key=ENC_KEY.private)  # the RP reads it
    with pytest.raises(JoseError):
        decrypt_id_token(jwe, private_key=HOST_KEY)  # the host does not


@pytest.mark.parametrize(
    ("statements", "reason"),
    [
        ((), "trust chain is missing"),
        (chain(sub="https://other.example"), "trust chain is refused"),
        (chain(master=new_key("puk_fedmaster_sig")), "trust chain is refused"),
        (chain()[:1], "trust chain is missing"),
    ],
    ids=["none", "another RP's chain", "not signed by the master", "half a chain"],
)
async def test_a_chain_the_enclave_cannot_verify_gets_no_token(
    enclave: tuple[Enclave, TestEgkCa, FileKeyStore], statements: tuple[str, ...], reason: str
) -> None:
    request = await request_for(*enclave, statements=statements)
    with pytest.raises(RelyingPartyRefused, match=reason):
        await enclave[0].mint_id_token(request)


def test_verified_chains_are_cached_per_chain_and_expire() -> None:
    trusted = TrustedRelyingParties(FederationAnchor(entity_id=MASTER, jwks=MASTER_KEY.jwks))
    first = trusted.encryption_key(RP, chain(), now=NOW)
    assert first["kid"] == ENC_KEY.kid
    rotated = new_key("puk_fd_enc_2")
    # a new chain (the RP rotated its encryption key) is verified, not served from the cache
    assert trusted.encryption_key(RP, chain(enc=rotated), now=NOW)["kid"] == rotated.kid
    # an expired chain is verified again, and refused
    with pytest.raises(RelyingPartyRefused):
        trusted.encryption_key(RP, chain(), now=NOW + 2 * 86400)


async def test_without_an_anchor_the_development_enclave_takes_the_hosts_key(
    enclave: tuple[Enclave, TestEgkCa, FileKeyStore], tmp_path: Path
) -> None:
    """The embedded default without a federation master: the host's key (development only;
    runtime.build_enclave refuses to start an SGX enclave without an anchor)."""
    _, ca, keys = enclave
    plain = Enclave(
        Vault(RootKey.from_secret(os.urandom(32))),
        allow_test_kvnr=True,
        egk_cas=[ca.certificate],
        token_signer=keys.sign,
    )
    try:
        request = await request_for(plain, ca, keys, statements=())
        jwe = await plain.mint_id_token(replace(request, rp_statements=chain()))
        assert decrypt_id_token(jwe, private_key=HOST_KEY)
    finally:
        plain.close()


async def test_the_attestation_names_the_federation_master_keys_the_enclave_trusts() -> None:
    """An operator who pinned a master key of their own would show it here."""

    async def attested(federation: FederationAnchor | None) -> dict[str, dict[str, str]]:
        enclave = Enclave(
            Vault(RootKey.from_secret(os.urandom(32))),
            identity_key=ec.generate_private_key(ec.SECP256R1()),
            evidence=MeasuredSimulatedEvidence(body=simulated_body(None)),
            federation=federation,
        )
        nonce = os.urandom(32)
        try:
            raw = await enclave.attest(nonce)
        finally:
            enclave.close()
        verified = verify_attestation_document(
            raw,
            nonce=nonce,
            policy=TeePolicy(mrsigners=frozenset({b"\x00" * 32}), isv_prod_id=0),
            collateral=None,
            now=datetime.now(UTC),
            allow_simulated=True,
        )
        return {k.role: dict(k.jwk) for k in verified.keys}

    with_anchor = await attested(FederationAnchor(entity_id=MASTER, jwks=MASTER_KEY.jwks))
    assert with_anchor["fedmaster-0"]["x"] == MASTER_KEY.jwk()["x"]
    assert with_anchor["fedmaster-0"]["kid"] == MASTER_KEY.kid
    assert not any(role.startswith("fedmaster") for role in await attested(None))
