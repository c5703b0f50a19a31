"""Level of assurance: acr and amr from how the identity was proven and the device's key class.

Sources: gematik-sectoral-idp.md §6.1 (acr values), §6.2 (amr per ID-token version, from
gematik's GsiConstants and gemSpec_IDP_Sek A_23129-03), eid-egk-wallet-device.md §4.4
(record the secure-element class per device, derive acr/amr from the initial proofing method
plus the key class, enforce a re-proofing interval per class: "every 24 h to 6 months").

Policy (ours, configurable): a device key in a secure element or a TEE carries LoA high for
as long as its identity proof is younger than the class's re-proofing interval; after that,
and always for software keys, it carries LoA substantial. Re-proofing with the eID or the
eGK + PIN restores high.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

ACR_HIGH = "gematik-ehealth-loa-high"
ACR_SUBSTANTIAL = "gematik-ehealth-loa-substantial"
AMR_EGK = "urn:telematik:auth:eGK"
AMR_EID = "urn:telematik:auth:eID"
AMR_MEW = "urn:telematik:auth:mEW"  # v1: the only amr allowed with loa-substantial
AMR_OTHER = "urn:telematik:auth:other"  # v2: substantial (and mEW/sso mapped here)
AMR_SSO = "urn:telematik:auth:sso"  # v1 only; v2 maps it to AMR_OTHER
AMR_GUEST_EGK = "urn:telematik:auth:guest:eGK"  # "Gastlogin" (PAR TC 018)
DAY = 24 * 60 * 60


class ProofingMethod(StrEnum):
    EID = "eid"  # Online-Ausweis (BSI TR-03130), A_22713
    EGK = "egk"  # eGK + PIN (C.CH.AUT), A_22712


class DeviceKeyClass(StrEnum):
    SECURE_ELEMENT = "secure_element"  # Secure Enclave, StrongBox, eSE
    TEE = "tee"  # Android TrustedEnvironment
    SOFTWARE = "software"  # reference client in development only


@dataclass(frozen=True, kw_only=True)
class KeyClassPolicy:
    max_acr: str
    reproof_interval: int  # seconds after the identity proof during which max_acr holds


DEFAULT_POLICY: Mapping[DeviceKeyClass, KeyClassPolicy] = MappingProxyType(
    {
        DeviceKeyClass.SECURE_ELEMENT: KeyClassPolicy(max_acr=ACR_HIGH, reproof_interval=180 * DAY),
        DeviceKeyClass.TEE: KeyClassPolicy(max_acr=ACR_HIGH, reproof_interval=30 * DAY),
        DeviceKeyClass.SOFTWARE: KeyClassPolicy(max_acr=ACR_SUBSTANTIAL, reproof_interval=DAY),
    }
)


@dataclass(frozen=True, kw_only=True)
class Assurance:
    acr: str
    amr_v1: tuple[str, ...]  # ID token version 1.0.0
    amr_v2: tuple[str, ...]  # ID token version 2.0.0
    reproof_due_at: int  # when LoA high lapses for this device (Unix seconds)
    extra_claims_v2: Mapping[str, object] = field(default_factory=dict)


def derive_assurance(
    *,
    method: ProofingMethod,
    key_class: DeviceKeyClass,
    proofed_at: int,
    now: int,
    policy: Mapping[DeviceKeyClass, KeyClassPolicy] = DEFAULT_POLICY,
) -> Assurance:
    """acr/amr for a device-key login (gematik-sectoral-idp.md §6)."""
    rule = policy[key_class]
    due = proofed_at + rule.reproof_interval
    if rule.max_acr == ACR_HIGH and now < due:
        amr = AMR_EID if method is ProofingMethod.EID else AMR_EGK
        # gemSpec_IDP_Sek A_23129-03: amr is a JSON array
        return Assurance(acr=ACR_HIGH, amr_v1=(amr,), amr_v2=(amr,), reproof_due_at=due)
    return Assurance(
        acr=ACR_SUBSTANTIAL,
        amr_v1=(AMR_MEW,),
        amr_v2=(AMR_OTHER,),
        reproof_due_at=due,
        # ref IdTokenBuilder (ID_TOKEN_005): v2 tokens at substantial carry this consent claim
        extra_claims_v2=MappingProxyType({"urn:telematik:auth:consent": ["loa-substantial"]}),
    )


def single_sign_on(assurance: Assurance) -> Assurance:
    """The assurance of a silent SSO login (spec §6.2: amr sso in v1; v2 maps it to other
    and adds interactive: silent)."""
    return Assurance(
        acr=assurance.acr,
        amr_v1=(AMR_SSO,),
        amr_v2=(AMR_SSO,),
        reproof_due_at=assurance.reproof_due_at,
        extra_claims_v2=assurance.extra_claims_v2,
    )
