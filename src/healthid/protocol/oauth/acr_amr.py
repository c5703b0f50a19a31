"""acr/amr value sets per ID-token version, and the ID-token version negotiation.

Sources: gematik-sectoral-idp.md §6.2 (gsi ``GsiConstants``; gemSpec_IDP_Sek A_23129-03, amr;
A_24547, amr requested by the RP) and §6.3 (gsi
``RequestValidator.validateAndSelectCompatibleIdTokenVersion``). The acr values and the amr
values of :mod:`healthid.protocol.oidc.loa` are reused; the two amr values that module does not
define (``sso``, ``guest:eGK``) are defined here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

from healthid.protocol.oauth.errors import InvalidRequestError
from healthid.protocol.oidc.loa import (
    ACR_HIGH,
    ACR_SUBSTANTIAL,
    AMR_EGK,
    AMR_EID,
    AMR_GUEST_EGK,
    AMR_MEW,
    AMR_OTHER,
    AMR_SSO,
    Assurance,
)

ID_TOKEN_VERSION_1 = "1.0.0"  # noqa: S105 - a version, not a secret
ID_TOKEN_VERSION_2 = "2.0.0"  # noqa: S105 - a version, not a secret
ID_TOKEN_VERSIONS_SUPPORTED = (ID_TOKEN_VERSION_1, ID_TOKEN_VERSION_2)
# gematik-sectoral-idp.md §6.3: an RP without id_token_version_supported speaks 1.0.0
DEFAULT_RP_ID_TOKEN_VERSIONS = (ID_TOKEN_VERSION_1,)

ACR_VALUES = frozenset({ACR_HIGH, ACR_SUBSTANTIAL})
# The top-level PAR ``amr`` parameter (gsi FedIdpController @Pattern): any of the six values
AMR_PARAMETER_VALUES = frozenset({AMR_EGK, AMR_EID, AMR_SSO, AMR_MEW, AMR_GUEST_EGK, AMR_OTHER})

# gemSpec_IDP_Sek A_23129-03: amr allowed with each acr, per ID-token version
AMR_HIGH: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        ID_TOKEN_VERSION_1: frozenset({AMR_EGK, AMR_EID, AMR_SSO, AMR_GUEST_EGK, AMR_OTHER}),
        ID_TOKEN_VERSION_2: frozenset({AMR_EGK, AMR_EID, AMR_GUEST_EGK, AMR_OTHER}),
    }
)
AMR_SUBSTANTIAL: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        ID_TOKEN_VERSION_1: frozenset({AMR_MEW}),
        ID_TOKEN_VERSION_2: frozenset({AMR_OTHER}),
    }
)


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def negotiate_id_token_version(rp_versions: Iterable[str]) -> str:
    """The highest version both sides support, else 400 (gematik-sectoral-idp.md §6.3)."""
    common = set(rp_versions) & set(ID_TOKEN_VERSIONS_SUPPORTED)
    if not common:
        raise InvalidRequestError(
            "Invalid metadata: incompatible versions for id_token_version_supported"
        )
    return max(common, key=_version_key)


def check_essential_acr_amr(
    acr: Iterable[str], amr: Iterable[str], *, id_token_version: str
) -> None:
    """Validate acr/amr requested as essential in ``claims`` (gsi validateAmrAcrCombination).

    Unknown values are refused (PAR TC 017); a description about amr contains ``amr: ``
    (PAR TC 012). A high-only acr with a substantial-only amr, or the reverse, is refused.
    """
    acr_set, amr_set = frozenset(acr), frozenset(amr)
    high, substantial = AMR_HIGH[id_token_version], AMR_SUBSTANTIAL[id_token_version]
    if not acr_set <= ACR_VALUES:
        raise InvalidRequestError("acr: unsupported value requested as essential")
    if not amr_set <= high | substantial:
        raise InvalidRequestError(
            f"amr: unsupported value requested as essential for id token {id_token_version}"
        )
    if not acr_set or not amr_set:
        return
    if acr_set == {ACR_HIGH} and not amr_set <= high:
        raise InvalidRequestError("amr: invalid combination of essential values acr and amr")
    if acr_set == {ACR_SUBSTANTIAL} and not amr_set <= substantial:
        raise InvalidRequestError("amr: invalid combination of essential values acr and amr")


# v2 reports sso and mEW as "other" (gsi IdTokenBuilder.modifyUserDataForIdTokenVersion)
_V2_AMR_MAPPING: Mapping[str, str] = MappingProxyType({AMR_SSO: AMR_OTHER, AMR_MEW: AMR_OTHER})


def id_token_amr(assurance: Assurance, id_token_version: str) -> tuple[str, ...]:
    """The amr of the ID token in ``id_token_version`` (gemSpec_IDP_Sek A_23129-03)."""
    if id_token_version == ID_TOKEN_VERSION_1:
        return tuple(assurance.amr_v1)
    if id_token_version == ID_TOKEN_VERSION_2:
        mapped = (_V2_AMR_MAPPING.get(value, value) for value in assurance.amr_v2)
        return tuple(dict.fromkeys(mapped))
    raise ValueError("unsupported ID-token version")


def was_sso(assurance: Assurance) -> bool:
    """Whether the login was a silent single sign-on (v2: ``interactive: silent``)."""
    return AMR_SSO in assurance.amr_v1 or AMR_SSO in assurance.amr_v2
