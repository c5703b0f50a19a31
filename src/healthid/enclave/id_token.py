"""ID tokens are built inside the enclave (issue #4 item 5): the claim values come from the
policyholder's decrypted master data, the token is signed with the token key (through the key
store: the HSM in production) and encrypted to the relying party; the host forwards the JWE.

Claims per scope (gematik-sectoral-idp.md §5): birthdate, alter, display_name, given_name,
family_name, geschlecht, email, and for urn:telematik:versicherter the profession OID of an
insured person, the KVNR (id) and the IK (organization). ``sub`` is a pairwise pseudonym per
relying party: HMAC of the policyholder's pseudonym and the client_id under a key derived from
the root key — opaque, stable per RP, unlinkable across RPs, not derived visibly from the KVNR.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from datetime import date

from healthid.enclave.registry.model import Policyholder
from healthid.protocol.jose import encrypt_id_token, sign_compact
from healthid.protocol.jose.jws import TYP_ID_TOKEN
from healthid.protocol.oauth.token import TokenGrant, id_token_claims
from healthid.protocol.oidc.loa import Assurance

VERSICHERTER_OID = "1.2.276.0.76.4.49"
PAIRWISE_INDEX = "pairwise-sub"


def age_on(birth_date: str, today: date) -> int:
    """Age in whole years; partial birth dates count from the earliest possible day."""
    parts = [int(p) for p in birth_date.split("-")]
    year, month, day = (
        parts[0],
        parts[1] if len(parts) > 1 else 1,
        parts[2] if len(parts) > 2 else 1,
    )
    return today.year - year - ((today.month, today.day) < (month, day))


def claim_values(holder: Policyholder, today: date) -> dict[str, str]:
    """Every telematik claim the IdP can release for this policyholder."""
    values = {
        "urn:telematik:claims:given_name": holder.given_name,
        "urn:telematik:claims:family_name": holder.family_name,
        "urn:telematik:claims:display_name": f"{holder.given_name} {holder.family_name}",
        "urn:telematik:claims:geschlecht": holder.sex,
        "urn:telematik:claims:alter": str(age_on(holder.birth_date, today)),
        "urn:telematik:claims:profession": VERSICHERTER_OID,
        "urn:telematik:claims:id": holder.kvnr,
        "urn:telematik:claims:organization": holder.ik,
        "birthdate": holder.birth_date,
    }
    if holder.email:
        values["urn:telematik:claims:email"] = holder.email
    return values


def pairwise_sub(blind_index: Callable[[str, str], bytes], pseudonym: str, client_id: str) -> str:
    digest = blind_index(PAIRWISE_INDEX, f"{pseudonym}\x1f{client_id}")
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def mint(
    *,
    holder: Policyholder,
    pseudonym: str,
    issuer: str,
    grant: TokenGrant,
    assurance: Assurance,
    auth_time: int,
    now: int,
    today: date,
    kid: str,
    x5c: list[str],
    signer: Callable[[str, bytes], bytes],
    rp_encryption_jwk: Mapping[str, object],
    blind_index: Callable[[str, str], bytes],
) -> str:
    """The encrypted ID token (JWE around the signed JWS, spec §5)."""
    claims = id_token_claims(
        issuer=issuer,
        grant=grant,
        sub=pairwise_sub(blind_index, pseudonym, grant.client_id),
        assurance=assurance,
        auth_time=auth_time,
        claim_values=claim_values(holder, today),
        iat=now,
    )
    signed = sign_compact(
        claims, kid=kid, typ=TYP_ID_TOKEN, signer=signer, extra_header={"x5c": x5c}
    )
    return encrypt_id_token(signed, recipient_jwk=rp_encryption_jwk)
