"""OpenID Federation 1.0 as profiled by gematik for the TI federation (spec §3, §4, §9).

Pure: callers fetch statements and pass them in with the pinned master keys and ``now``.
"""

from healthid.protocol.federation.errors import (
    FederationError,
    InvalidMetadata,
    InvalidStatement,
    IssuerMismatch,
    KeyNotVouched,
    MissingAuthorityHint,
    SubjectMismatch,
)
from healthid.protocol.federation.master import (
    IdpListEntry,
    sign_idp_list,
    sign_subordinate_statement,
)
from healthid.protocol.federation.provider import (
    ProviderConfiguration,
    entity_configuration_claims,
    sign_entity_configuration,
    sign_signed_jwks,
)
from healthid.protocol.federation.statements import EntityStatement, verify_entity_statement
from healthid.protocol.federation.trust_chain import (
    RelyingPartyKeys,
    ResolvedRelyingParty,
    apply_metadata_rule,
    resolve_relying_party,
    verify_rp_signed_jwks,
)

__all__ = [
    "EntityStatement",
    "FederationError",
    "IdpListEntry",
    "InvalidMetadata",
    "InvalidStatement",
    "IssuerMismatch",
    "KeyNotVouched",
    "MissingAuthorityHint",
    "ProviderConfiguration",
    "RelyingPartyKeys",
    "ResolvedRelyingParty",
    "SubjectMismatch",
    "apply_metadata_rule",
    "entity_configuration_claims",
    "resolve_relying_party",
    "sign_entity_configuration",
    "sign_idp_list",
    "sign_signed_jwks",
    "sign_subordinate_statement",
    "verify_entity_statement",
    "verify_rp_signed_jwks",
]
