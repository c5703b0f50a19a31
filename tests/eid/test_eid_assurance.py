"""LoA and eID types (TR-03130-1 §3.3.12, §3.3.23), as the stand-in and the client apply them."""

from __future__ import annotations

import pytest

from healthid.eid.assurance import check_assurance, eid_type_accepted
from healthid.eid.errors import AssuranceNotMetError, EidProtocolError
from healthid.eid.model import AssurancePolicy, EidType, EidTypeSelection, LevelOfAssurance

ALLOWED, DENIED = EidTypeSelection.ALLOWED, EidTypeSelection.DENIED
HOCH_ONLY = AssurancePolicy(level_of_assurance=LevelOfAssurance.HOCH, eid_types={})
SUBSTANTIELL_ONLY = AssurancePolicy(level_of_assurance=LevelOfAssurance.SUBSTANTIELL, eid_types={})


@pytest.mark.parametrize(
    ("policy", "used", "accepted"),
    [
        (AssurancePolicy(), EidType.CARD_CERTIFIED, True),
        (AssurancePolicy(), EidType.SE_CERTIFIED, True),
        (AssurancePolicy(), EidType.SE_ENDORSED, False),
        (AssurancePolicy(), EidType.HW_KEY_STORE, False),
        (HOCH_ONLY, EidType.CARD_CERTIFIED, True),
        (HOCH_ONLY, EidType.SE_ENDORSED, False),
        (HOCH_ONLY, EidType.HW_KEY_STORE, False),
        (SUBSTANTIELL_ONLY, EidType.SE_ENDORSED, True),
        (SUBSTANTIELL_ONLY, EidType.CARD_CERTIFIED, True),
        # explicitly ALLOWED is accepted regardless of the LoA ...
        (AssurancePolicy(eid_types={EidType.SE_ENDORSED: ALLOWED}), EidType.SE_ENDORSED, True),
        # ... and explicitly DENIED refused regardless of the LoA
        (
            AssurancePolicy(level_of_assurance=None, eid_types={EidType.CARD_CERTIFIED: DENIED}),
            EidType.CARD_CERTIFIED,
            False,
        ),
        (AssurancePolicy(level_of_assurance=None, eid_types={}), EidType.HW_KEY_STORE, True),
    ],
)
def test_eid_type_acceptance(policy: AssurancePolicy, used: EidType, accepted: bool) -> None:
    assert eid_type_accepted(policy, used) is accepted


def test_check_refuses_a_weaker_eid_type_even_if_the_server_said_ok() -> None:
    with pytest.raises(AssuranceNotMetError):
        check_assurance(
            AssurancePolicy(),
            level_of_assurance=LevelOfAssurance.HOCH,
            eid_type=EidType.SE_ENDORSED,
        )


def test_check_refuses_a_lower_level_of_assurance() -> None:
    with pytest.raises(AssuranceNotMetError):
        check_assurance(
            AssurancePolicy(),
            level_of_assurance=LevelOfAssurance.SUBSTANTIELL,
            eid_type=EidType.CARD_CERTIFIED,
        )


def test_check_accepts_a_lower_level_for_an_explicitly_allowed_eid_type() -> None:
    check_assurance(
        AssurancePolicy(eid_types={EidType.SE_ENDORSED: ALLOWED}),
        level_of_assurance=LevelOfAssurance.SUBSTANTIELL,
        eid_type=EidType.SE_ENDORSED,
    )


@pytest.mark.parametrize(
    ("loa", "eid_type", "match"),
    [
        (LevelOfAssurance.HOCH, None, "EIDTypeResponse"),
        (None, EidType.CARD_CERTIFIED, "LevelOfAssuranceResult"),
        (LevelOfAssurance.EIDAS_HIGH, EidType.CARD_CERTIFIED, "national"),
    ],
)
def test_check_refuses_missing_or_foreign_assurance_elements(
    loa: LevelOfAssurance | None, eid_type: EidType | None, match: str
) -> None:
    with pytest.raises(EidProtocolError, match=match):
        check_assurance(AssurancePolicy(), level_of_assurance=loa, eid_type=eid_type)


def test_check_needs_nothing_when_nothing_was_requested() -> None:
    check_assurance(
        AssurancePolicy(level_of_assurance=None, eid_types={}),
        level_of_assurance=None,
        eid_type=None,
    )
