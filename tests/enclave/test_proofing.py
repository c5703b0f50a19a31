"""Identity matching in the enclave: exactly one insured registry entry, or one refusal."""

from __future__ import annotations

import os
from datetime import date

import pytest

from healthid.enclave.api import IdentityNotConfirmed, SealedPolicyholder
from healthid.enclave.proofing import ProvenAttributes
from healthid.enclave.registry.model import Policyholder
from healthid.enclave.service import Enclave
from healthid.enclave.vault import RootKey, Vault

TODAY = date(2026, 11, 28)


def person(**kw: str) -> Policyholder:
    base = dict(
        kvnr="A123456780",
        ik="109500969",
        given_name="Erika",
        family_name="Mustermann",
        birth_date="1964-08-12",
        sex="W",
        insured_type="1",
        valid_from="2000-01-01",
        postal_code="51147",
        city="Köln",
    )
    return Policyholder(**(base | kw))


@pytest.fixture
def enclave() -> Enclave:
    return Enclave(Vault(RootKey.from_secret(os.urandom(32))), today=lambda: TODAY)


def eid(**kw: str) -> ProvenAttributes:
    base = dict(
        method="eid",
        given_names="ERIKA",
        family_names="MUSTERMANN",
        birth_date="1964-08-12",
        postal_code="51147",
        restricted_id="AB01",
    )
    return ProvenAttributes(**(base | kw))


def lookup_and_match(
    enclave: Enclave, attrs: ProvenAttributes, stored: list[SealedPolicyholder]
) -> str:
    lookup = enclave._proofing.begin(attrs)
    wanted = set(lookup.lookups)
    candidates = [
        s
        for s in stored
        if any((k, d) in wanted for k, d in [("kvnr", s.kvnr_index), *s.lookup_indexes])
    ]
    return enclave._proofing.match(lookup.proof_id, candidates).pseudonym


def test_eid_matches_by_normalised_names_and_birth_date(enclave: Enclave) -> None:
    erika = enclave.seal_policyholder(person())
    other = enclave.seal_policyholder(person(kvnr="F678901231", given_name="Max"))
    assert lookup_and_match(enclave, eid(), [erika, other]) == erika.pseudonym


def test_eid_twins_are_told_apart_by_postal_code_or_refused(enclave: Enclave) -> None:
    a = enclave.seal_policyholder(person())
    b = enclave.seal_policyholder(person(kvnr="F678901231", postal_code="10115", city="Berlin"))
    assert lookup_and_match(enclave, eid(), [a, b]) == a.pseudonym
    with pytest.raises(IdentityNotConfirmed):
        lookup_and_match(enclave, eid(postal_code="80331"), [a, b])


def test_eid_partial_birth_date_must_match_exactly(enclave: Enclave) -> None:
    partial = enclave.seal_policyholder(person(birth_date="1964"))
    assert lookup_and_match(enclave, eid(birth_date="1964"), [partial]) == partial.pseudonym
    with pytest.raises(IdentityNotConfirmed):
        lookup_and_match(enclave, eid(birth_date="1964-08-12"), [partial])


def test_eid_birth_name_matches_a_registry_entry_under_the_birth_name(enclave: Enclave) -> None:
    married = enclave.seal_policyholder(person(family_name="Gabler"))
    attrs = eid(family_names="MUSTERMANN", birth_name="GABLER")
    assert lookup_and_match(enclave, attrs, [married]) == married.pseudonym


def test_expired_coverage_is_not_confirmed(enclave: Enclave) -> None:
    ended = enclave.seal_policyholder(person(valid_until="2025-12-31"))
    with pytest.raises(IdentityNotConfirmed) as info:
        lookup_and_match(enclave, eid(), [ended])
    assert str(info.value) == "the identity could not be confirmed"


def test_egk_matches_the_kvnr_only(enclave: Enclave) -> None:
    erika = enclave.seal_policyholder(person())
    attrs = ProvenAttributes(method="egk", kvnr="A123456780")
    assert lookup_and_match(enclave, attrs, [erika]) == erika.pseudonym
    with pytest.raises(IdentityNotConfirmed):
        lookup_and_match(enclave, ProvenAttributes(method="egk", kvnr="F678901231"), [erika])


def test_a_proof_is_single_use(enclave: Enclave) -> None:
    erika = enclave.seal_policyholder(person())
    lookup = enclave._proofing.begin(eid())
    enclave._proofing.match(lookup.proof_id, [erika])
    with pytest.raises(IdentityNotConfirmed):
        enclave._proofing.match(lookup.proof_id, [erika])


def test_eid_match_returns_the_restricted_id_link_once(enclave: Enclave) -> None:
    erika = enclave.seal_policyholder(person())
    lookup = enclave._proofing.begin(eid())
    match = enclave._proofing.match(lookup.proof_id, [erika])
    assert [k for k, _ in match.new_lookup_indexes] == ["eid_rid"]
    linked = SealedPolicyholder(
        **{**erika.__dict__, "lookup_indexes": erika.lookup_indexes + match.new_lookup_indexes}
    )
    lookup = enclave._proofing.begin(eid())
    assert enclave._proofing.match(lookup.proof_id, [linked]).new_lookup_indexes == ()
