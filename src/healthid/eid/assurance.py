"""Level of assurance and eID types: which eID type a useID request accepts.

TR-03130-1 v2.4.0 §3.3.12: if a minimum LoA is requested, the eID-Server MUST NOT accept an
eID type with a lower or undefined LoA unless the eService explicitly ALLOWED it; an eID type
matching or surpassing the LoA SHALL be accepted unless explicitly DENIED (§3.3.23).
§3.2.2.2: LevelOfAssuranceResult MUST be present if a LoA was requested, EIDTypeResponse if
eID types were allowed or denied.

The same rule decides in the stand-in (deniedDocument) and re-checks the real eID-Server's
answer in the client (a weaker result is refused even when ResultMajor is ok).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from healthid.eid.errors import AssuranceNotMetError, EidProtocolError
from healthid.eid.model import (
    NATIONAL_LEVELS,
    AssurancePolicy,
    EidType,
    EidTypeSelection,
    LevelOfAssurance,
)

# Order of the levels (TR-03107-1 normal < substantiell < hoch; the eIDAS levels align).
LOA_RANK: Mapping[LevelOfAssurance, int] = MappingProxyType(
    {
        LevelOfAssurance.UNDEFINED: 0,
        LevelOfAssurance.NORMAL: 1,
        LevelOfAssurance.EIDAS_LOW: 1,
        LevelOfAssurance.SUBSTANTIELL: 2,
        LevelOfAssurance.EIDAS_SUBSTANTIAL: 2,
        LevelOfAssurance.HOCH: 3,
        LevelOfAssurance.EIDAS_HIGH: 3,
    }
)

# The LoA each eID type reaches (spec §1.1 [inf]: the physical card and the Smart-eID in a
# certified secure element are *hoch*; an endorsed SE and the OS key store *substantiell*).
EID_TYPE_LEVEL: Mapping[EidType, LevelOfAssurance] = MappingProxyType(
    {
        EidType.CARD_CERTIFIED: LevelOfAssurance.HOCH,
        EidType.SE_CERTIFIED: LevelOfAssurance.HOCH,
        EidType.SE_ENDORSED: LevelOfAssurance.SUBSTANTIELL,
        EidType.HW_KEY_STORE: LevelOfAssurance.SUBSTANTIELL,
    }
)


def eid_type_accepted(policy: AssurancePolicy, used: EidType) -> bool:
    """Whether ``policy`` accepts an authentication with ``used`` (§3.3.12, §3.3.23)."""
    selection = policy.eid_types.get(used)
    if selection is EidTypeSelection.DENIED:
        return False
    if selection is EidTypeSelection.ALLOWED:
        return True
    if policy.level_of_assurance is None:
        return True
    return LOA_RANK[EID_TYPE_LEVEL[used]] >= LOA_RANK[policy.level_of_assurance]


def check_assurance(
    policy: AssurancePolicy,
    *,
    level_of_assurance: LevelOfAssurance | None,
    eid_type: EidType | None,
) -> None:
    """Refuse a successful getResult whose LoA or eID type is weaker than ``policy`` asked.

    Raises :class:`EidProtocolError` for a missing or non-national element and
    :class:`AssuranceNotMetError` for a weaker one. Nothing personal is in the messages.
    """
    if policy.eid_types and eid_type is None:
        raise EidProtocolError("TR-03130-1 §3.2.2.2: EIDTypeResponse is missing")
    if policy.level_of_assurance is not None:
        if level_of_assurance is None:
            raise EidProtocolError("TR-03130-1 §3.2.2.2: LevelOfAssuranceResult is missing")
        if level_of_assurance not in NATIONAL_LEVELS:
            raise EidProtocolError(
                "TR-03130-1 §3.3.12: only bsi.bund.de LoA values are used in a national context"
            )
    if eid_type is not None and not eid_type_accepted(policy, eid_type):
        raise AssuranceNotMetError(f"the eID type {eid_type} does not meet the requested policy")
    if policy.level_of_assurance is None or level_of_assurance is None:
        return
    wanted = LOA_RANK[policy.level_of_assurance]
    if LOA_RANK[level_of_assurance] >= wanted:
        return
    # A lower LoA is only acceptable for an eID type the caller deliberately opted into: one
    # explicitly ALLOWED whose own level is below the requested one. A card reported with a
    # lower LoA than a card reaches is a contradiction, and refused.
    opted_in = (
        eid_type is not None
        and policy.eid_types.get(eid_type) is EidTypeSelection.ALLOWED
        and LOA_RANK[EID_TYPE_LEVEL[eid_type]] < wanted
    )
    if not opted_in:
        raise AssuranceNotMetError("the level of assurance is below the requested minimum")
