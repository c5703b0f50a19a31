"""The pure pieces of a development federation master (spec §1.2, §4, §9).

A subordinate statement about a member (what the master's fetch endpoint returns: ``iss`` =
master, ``sub`` = member, the member's federation ``jwks`` and metadata the master imposes) and
the ``idp-list+jwt`` of spec §9. For local federations and tests only; production trusts
gematik's master.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from healthid.protocol.federation.statements import sign_entity_statement
from healthid.protocol.jose.jws import TYP_IDP_LIST, Signer, sign_compact
from healthid.protocol.jose.keys import jwks_keys, p256_public_key

# spec §8: the real TU master issues statements about members for 1 day (ref: 7 days).
SUBORDINATE_STATEMENT_LIFETIME_SECONDS: Final = 24 * 60 * 60
# spec §8/§9: idp_list lives 1 day.
IDP_LIST_LIFETIME_SECONDS: Final = 24 * 60 * 60
# spec §1.2: gematik masters sign with this kid.
MASTER_KID: Final = "puk_fedmaster_sig"


@dataclass(frozen=True, kw_only=True)
class IdpListEntry:
    """One ``idp_entity`` (spec §9); ``user_type_supported`` is a string here, not an array."""

    iss: str
    organization_name: str
    logo_uri: str
    user_type_supported: str = "IP"
    pkv: bool = False


def subordinate_statement_claims(
    *,
    master_entity_id: str,
    subject: str,
    subject_jwks: Mapping[str, Any],
    metadata: Mapping[str, Mapping[str, Any]],
    now: int,
    lifetime: int = SUBORDINATE_STATEMENT_LIFETIME_SECONDS,
) -> dict[str, Any]:
    """``{iss, sub, iat, exp, jwks, metadata}`` of a statement about ``subject`` (spec §4)."""
    for key in jwks_keys(subject_jwks):
        p256_public_key(key, use="sig")  # spec §7: members' federation keys are P-256
    return {
        "iss": master_entity_id,
        "sub": subject,
        "iat": now,
        "exp": now + lifetime,
        "jwks": {"keys": [dict(k) for k in jwks_keys(subject_jwks)]},
        "metadata": {name: dict(values) for name, values in metadata.items()},
    }


def sign_subordinate_statement(
    *,
    master_entity_id: str,
    subject: str,
    subject_jwks: Mapping[str, Any],
    metadata: Mapping[str, Mapping[str, Any]],
    now: int,
    signer: Signer,
    kid: str = MASTER_KID,
    lifetime: int = SUBORDINATE_STATEMENT_LIFETIME_SECONDS,
) -> str:
    """The signed subordinate statement the fetch endpoint serves (OpenID Federation §8.1)."""
    claims = subordinate_statement_claims(
        master_entity_id=master_entity_id,
        subject=subject,
        subject_jwks=subject_jwks,
        metadata=metadata,
        now=now,
        lifetime=lifetime,
    )
    return sign_entity_statement(claims, kid=kid, signer=signer)


def idp_list_claims(
    *, master_entity_id: str, entries: Sequence[IdpListEntry], now: int
) -> dict[str, Any]:
    """``{iss, iat, exp, idp_entity: [...]}`` of spec §9."""
    return {
        "iss": master_entity_id,
        "iat": now,
        "exp": now + IDP_LIST_LIFETIME_SECONDS,
        "idp_entity": [
            {
                "iss": e.iss,
                "organization_name": e.organization_name,
                "logo_uri": e.logo_uri,
                "user_type_supported": e.user_type_supported,
                "pkv": e.pkv,
            }
            for e in entries
        ],
    }


def sign_idp_list(
    *,
    master_entity_id: str,
    entries: Sequence[IdpListEntry],
    now: int,
    signer: Signer,
    kid: str = MASTER_KID,
) -> str:
    """The ``idp-list+jwt`` JWS of the master's ``idp_list_endpoint`` (spec §9)."""
    claims = idp_list_claims(master_entity_id=master_entity_id, entries=entries, now=now)
    return sign_compact(claims, kid=kid, typ=TYP_IDP_LIST, signer=signer)
