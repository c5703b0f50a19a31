"""Scopes, claims and the OIDC ``claims`` parameter as profiled by gematik.

Sources: gematik-sectoral-idp.md §5 (scope → claim map from gsi ``ClaimHelper``, claim names
from ``ClaimName``; the ``claims`` parameter rules of gsi ``ClaimsInfo``), gemSpec_IDP_Sek
A_22989-01 (claims per scope), A_24547 (the RP may ask for acr/amr via ``claims``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from healthid.protocol.oauth.errors import InvalidRequestError

SCOPE_OPENID = "openid"
CLAIM_BIRTHDATE = "birthdate"
CLAIM_ALTER = "urn:telematik:claims:alter"
CLAIM_DISPLAY_NAME = "urn:telematik:claims:display_name"
CLAIM_GIVEN_NAME = "urn:telematik:claims:given_name"
CLAIM_FAMILY_NAME = "urn:telematik:claims:family_name"
CLAIM_GESCHLECHT = "urn:telematik:claims:geschlecht"
CLAIM_EMAIL = "urn:telematik:claims:email"
CLAIM_PROFESSION = "urn:telematik:claims:profession"
CLAIM_ID = "urn:telematik:claims:id"
CLAIM_ORGANIZATION = "urn:telematik:claims:organization"

# gemSpec_IDP_Sek A_22989-01: the claims each scope grants (gsi ClaimHelper)
SCOPE_CLAIMS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        SCOPE_OPENID: (),
        "urn:telematik:geburtsdatum": (CLAIM_BIRTHDATE,),
        "urn:telematik:alter": (CLAIM_ALTER,),
        "urn:telematik:display_name": (CLAIM_DISPLAY_NAME,),
        "urn:telematik:given_name": (CLAIM_GIVEN_NAME,),
        "urn:telematik:family_name": (CLAIM_FAMILY_NAME,),
        "urn:telematik:geschlecht": (CLAIM_GESCHLECHT,),
        "urn:telematik:email": (CLAIM_EMAIL,),
        "urn:telematik:versicherter": (CLAIM_PROFESSION, CLAIM_ID, CLAIM_ORGANIZATION),
    }
)
SCOPES_SUPPORTED = frozenset(SCOPE_CLAIMS)

# Names the ``claims`` parameter may carry besides acr/amr (gsi GsiConstants.VALID_CLAIMS:
# the nine telematik claims; ``birthdate`` is only reachable through its scope).
REQUESTABLE_CLAIMS = frozenset(
    {
        CLAIM_ALTER,
        CLAIM_DISPLAY_NAME,
        CLAIM_GIVEN_NAME,
        CLAIM_FAMILY_NAME,
        CLAIM_GESCHLECHT,
        CLAIM_EMAIL,
        CLAIM_PROFESSION,
        CLAIM_ID,
        CLAIM_ORGANIZATION,
    }
)
CLAIM_ACR = "acr"
CLAIM_AMR = "amr"
MAX_CLAIMS_NESTING = 4  # {"id_token": {"amr": {"values": [...]}}} needs 3


@dataclass(frozen=True, kw_only=True)
class ClaimsRequest:
    """What the ``claims`` parameter asks for (names sorted, for a stable serialisation)."""

    essential: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    essential_acr: tuple[str, ...] = ()
    essential_amr: tuple[str, ...] = ()


def claims_for_scopes(scopes: Iterable[str]) -> frozenset[str]:
    """The claims implied by ``scopes`` (unknown scopes imply none; they are refused elsewhere)."""
    return frozenset(c for s in scopes for c in SCOPE_CLAIMS.get(s, ()))


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise InvalidRequestError("parameter claims has a duplicate member")
        out[key] = value
    return out


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _load(raw: str) -> dict[str, Any]:
    try:
        parsed = json.loads(raw, object_pairs_hook=_no_duplicate_keys)
    except (ValueError, RecursionError):
        raise InvalidRequestError("parameter claims is not a JSON object") from None
    if not isinstance(parsed, dict):
        raise InvalidRequestError("parameter claims is not a JSON object")
    if _depth(parsed) > MAX_CLAIMS_NESTING:
        raise InvalidRequestError("parameter claims is nested too deeply")
    return parsed


def _is_essential(name: str, spec: dict[str, Any]) -> bool:
    essential = spec.get("essential", False)
    if not isinstance(essential, bool):
        raise InvalidRequestError(f"claim {name}: essential must be a boolean")
    return essential


def _requested_values(name: str, spec: dict[str, Any]) -> tuple[str, ...]:
    """OIDC Core §5.5.1: ``value`` (a string) or ``values`` (an array of strings)."""
    if "value" in spec and "values" in spec:
        raise InvalidRequestError(f"{name}: value and values must not both be set")
    if "value" in spec:
        value = spec["value"]
        if not isinstance(value, str):
            raise InvalidRequestError(f"{name}: value must be a string")
        return (value,)
    values = spec.get("values")
    if values is None:
        return ()
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise InvalidRequestError(f"{name}: values must be an array of strings")
    return tuple(values)


def _member(name: str, spec: object) -> dict[str, Any]:
    if spec is None:  # OIDC Core §5.5: null requests the claim in the default manner
        return {}
    if not isinstance(spec, dict):
        raise InvalidRequestError(f"claim {name} must be null or a JSON object")
    return spec


def parse_claims(raw: str | None) -> ClaimsRequest:
    """Parse the ``claims`` parameter (gematik-sectoral-idp.md §5, gsi ``ClaimsInfo``).

    Only ``{"id_token": {...}}``. acr/amr are evaluated only when essential (their values are
    checked against the negotiated ID-token version later, :mod:`par`); every other name must
    be a requestable telematik claim and must not carry ``value``/``values``.
    """
    if not raw:
        return ClaimsRequest()
    top = _load(raw)
    if set(top) != {"id_token"}:
        raise InvalidRequestError("parameter claims has invalid structure")
    id_token = top["id_token"]
    if not isinstance(id_token, dict):
        raise InvalidRequestError("parameter claims is not a JSON object")
    acr: tuple[str, ...] = ()
    amr: tuple[str, ...] = ()
    # gsi ClaimsInfo: acr and amr first (setAmrAcrSets), then the other names in order
    for name in (CLAIM_AMR, CLAIM_ACR):
        if name not in id_token:
            continue
        spec = _member(name, id_token[name])
        if not _is_essential(name, spec):
            continue  # a non-essential acr/amr is a hint and ignored (PAR TC 018)
        values = _requested_values(name, spec)
        if name == CLAIM_AMR:
            amr = values
        else:
            acr = values
    essential: set[str] = set()
    optional: set[str] = set()
    for name, raw_spec in id_token.items():
        if name in (CLAIM_ACR, CLAIM_AMR):
            continue
        if name not in REQUESTABLE_CLAIMS:
            raise InvalidRequestError(f"claim {name} is not supported")
        spec = _member(name, raw_spec)
        if "value" in spec or "values" in spec:
            raise InvalidRequestError(f"claim {name} should not have value or values set")
        (essential if _is_essential(name, spec) else optional).add(name)
    return ClaimsRequest(
        essential=tuple(sorted(essential)),
        optional=tuple(sorted(optional)),
        essential_acr=tuple(sorted(set(acr))),
        essential_amr=tuple(sorted(set(amr))),
    )
