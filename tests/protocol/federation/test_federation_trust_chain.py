"""Resolving an RP through the pinned federation master (spec §4; OpenID Federation §4, §10)."""

from __future__ import annotations

import base64

import pytest

from federation_testlib import (
    MASTER,
    NOW,
    RP,
    new_key,
    rp_configuration,
    self_signed_cert_b64,
)
from healthid.protocol.federation import (
    IdpListEntry,
    IssuerMismatch,
    KeyNotVouched,
    MissingAuthorityHint,
    SubjectMismatch,
    resolve_relying_party,
    sign_idp_list,
    sign_subordinate_statement,
)
from healthid.protocol.federation.errors import InvalidMetadata
from healthid.protocol.jose import (
    TYP_IDP_LIST,
    BadSignature,
    Expired,
    UnknownKey,
    WrongType,
    sign_compact,
    verify_compact,
)

MASTER_KEY = new_key("puk_fedmaster_sig")
RP_KEY = new_key("puk_fd_sig")
TLS_KEY = new_key("puk_tls_sig")
ENC_KEY = new_key("puk_fd_enc")
TLS_CERT = self_signed_cert_b64(TLS_KEY.private, "rp-tls")
RP_METADATA = {
    "redirect_uris": ["https://rp.example/cb"],
    "scope": "openid urn:telematik:versicherter",
    "jwks": {"keys": [{**TLS_KEY.jwk(), "x5c": [TLS_CERT]}, ENC_KEY.jwk("enc")]},
    "token_endpoint_auth_method": "self_signed_tls_client_auth",
}


def subordinate(
    *,
    sub: str = RP,
    jwks: dict[str, object] | None = None,
    metadata: dict[str, dict[str, object]] | None = None,
    key: object = None,
    exp_lifetime: int = 86400,
) -> str:
    signer = key or MASTER_KEY
    return sign_subordinate_statement(
        master_entity_id=MASTER,
        subject=sub,
        subject_jwks=jwks or RP_KEY.jwks,
        metadata=metadata or {"openid_relying_party": {"client_registration_types": ["automatic"]}},
        now=NOW,
        signer=signer.sign,  # type: ignore[attr-defined]
        kid=signer.kid,  # type: ignore[attr-defined]
        lifetime=exp_lifetime,
    )


def resolve(config: str, sub_statement: str, *, now: int = NOW, client_id: str = RP) -> object:
    return resolve_relying_party(
        client_id=client_id,
        entity_configuration=config,
        subordinate_statement=sub_statement,
        master_entity_id=MASTER,
        master_jwks=MASTER_KEY.jwks,
        now=now,
    )


def test_resolves_rp_with_keys_versions_and_min_expiry() -> None:
    rp = resolve_relying_party(
        client_id=RP,
        entity_configuration=rp_configuration(RP_KEY, metadata=RP_METADATA, exp=NOW + 600),
        subordinate_statement=subordinate(),
        master_entity_id=MASTER,
        master_jwks=MASTER_KEY.jwks,
        now=NOW,
    )
    assert rp.client_id == RP
    assert rp.expires_at == NOW + 600
    assert rp.redirect_uris == ("https://rp.example/cb",)
    assert rp.scopes == ("openid", "urn:telematik:versicherter")
    assert rp.keys.tls_certificates == (base64.b64decode(TLS_CERT),)
    assert rp.keys.encryption_jwk is not None and rp.keys.encryption_jwk["kid"] == "puk_fd_enc"
    assert rp.id_token_versions_supported == ("1.0.0",)
    assert rp.metadata["client_registration_types"] == ["automatic"]


def test_metadata_override_applied_superior_wins() -> None:
    superior = {
        "openid_relying_party": {
            "redirect_uris": ["https://redirect.testsuite.gsi"],
            "ti_features_supported": {"id_token_version_supported": ["1.0.0", "2.0.0"]},
        }
    }
    rp = resolve(rp_configuration(RP_KEY, metadata=RP_METADATA), subordinate(metadata=superior))
    assert rp.redirect_uris == ("https://redirect.testsuite.gsi",)  # type: ignore[attr-defined]
    assert rp.id_token_versions_supported == ("1.0.0", "2.0.0")  # type: ignore[attr-defined]
    assert rp.scopes == ("openid", "urn:telematik:versicherter")  # type: ignore[attr-defined]


def test_refuses_rp_self_signed_with_key_master_did_not_vouch_for() -> None:
    rogue = new_key("rogue")
    config = rp_configuration(RP_KEY, metadata=RP_METADATA, signing_key=rogue, jwks=rogue.jwks)
    with pytest.raises(UnknownKey):
        resolve(config, subordinate())


def test_refuses_rp_key_swapped_under_the_vouched_kid() -> None:
    impostor = new_key(RP_KEY.kid)
    config = rp_configuration(impostor, metadata=RP_METADATA)
    with pytest.raises(BadSignature):
        resolve(config, subordinate())


def test_refuses_rp_whose_own_jwks_lacks_the_vouched_key() -> None:
    other = new_key("other")
    config = rp_configuration(RP_KEY, metadata=RP_METADATA, jwks=other.jwks)
    with pytest.raises(KeyNotVouched):
        resolve(config, subordinate())


def test_refuses_chain_whose_master_signature_is_by_unpinned_key() -> None:
    fake_master = new_key(MASTER_KEY.kid)
    with pytest.raises(BadSignature):
        resolve(rp_configuration(RP_KEY, metadata=RP_METADATA), subordinate(key=fake_master))
    unknown_kid = new_key("other_master")
    with pytest.raises(UnknownKey):
        resolve(rp_configuration(RP_KEY, metadata=RP_METADATA), subordinate(key=unknown_kid))


def test_refuses_subordinate_statement_for_another_sub() -> None:
    with pytest.raises(SubjectMismatch):
        resolve(
            rp_configuration(RP_KEY, metadata=RP_METADATA), subordinate(sub="https://x.example")
        )


def test_refuses_subordinate_statement_not_issued_by_master() -> None:
    claims = {
        "iss": "https://other.example",
        "sub": RP,
        "iat": NOW,
        "exp": NOW + 60,
        "jwks": RP_KEY.jwks,
    }
    token = sign_compact(
        claims, kid=MASTER_KEY.kid, typ="entity-statement+jwt", signer=MASTER_KEY.sign
    )
    with pytest.raises(IssuerMismatch):
        resolve(rp_configuration(RP_KEY, metadata=RP_METADATA), token)


def test_refuses_rp_configuration_issued_for_another_entity() -> None:
    config = rp_configuration(RP_KEY, metadata=RP_METADATA, iss="https://x.example")
    with pytest.raises(SubjectMismatch):
        resolve(config, subordinate())


def test_refuses_rp_without_authority_hint_to_master() -> None:
    config = rp_configuration(RP_KEY, metadata=RP_METADATA, authority_hints=["https://x.example"])
    with pytest.raises(MissingAuthorityHint):
        resolve(config, subordinate())


def test_refuses_expired_rp_configuration_and_subordinate_statement() -> None:
    with pytest.raises(Expired):
        resolve(rp_configuration(RP_KEY, metadata=RP_METADATA, exp=NOW - 3600), subordinate())
    with pytest.raises(Expired):
        resolve(rp_configuration(RP_KEY, metadata=RP_METADATA), subordinate(exp_lifetime=-3600))


def test_refuses_statement_with_wrong_typ() -> None:
    claims = {"iss": MASTER, "sub": RP, "iat": NOW, "exp": NOW + 60, "jwks": RP_KEY.jwks}
    token = sign_compact(claims, kid=MASTER_KEY.kid, typ="JWT", signer=MASTER_KEY.sign)
    with pytest.raises(WrongType):
        resolve(rp_configuration(RP_KEY, metadata=RP_METADATA), token)


def test_refuses_rp_without_redirect_uris_or_keys() -> None:
    with pytest.raises(InvalidMetadata):
        resolve(rp_configuration(RP_KEY, metadata={"jwks": RP_METADATA["jwks"]}), subordinate())
    with pytest.raises(InvalidMetadata):
        resolve(rp_configuration(RP_KEY, metadata={"redirect_uris": ["https://a"]}), subordinate())


def test_idp_list_is_signed_by_master_with_idp_list_typ() -> None:
    entry = IdpListEntry(iss="https://idp.example", organization_name="K", logo_uri="https://l")
    token = sign_idp_list(
        master_entity_id=MASTER,
        entries=[entry],
        now=NOW,
        signer=MASTER_KEY.sign,
        kid=MASTER_KEY.kid,
    )
    claims = verify_compact(token, jwks=MASTER_KEY.jwks, typ=TYP_IDP_LIST).claims
    assert claims["exp"] - claims["iat"] == 86400
    assert claims["idp_entity"] == [
        {
            "iss": "https://idp.example",
            "organization_name": "K",
            "logo_uri": "https://l",
            "user_type_supported": "IP",
            "pkv": False,
        }
    ]


def test_rp_signed_jwks_verified_with_vouched_keys_only() -> None:
    from healthid.protocol.federation import verify_rp_signed_jwks

    metadata = {"redirect_uris": ["https://rp.example/cb"], "signed_jwks_uri": "https://rp/j"}
    rp = resolve(rp_configuration(RP_KEY, metadata=metadata), subordinate())
    assert rp.keys.encryption_jwk is None  # type: ignore[attr-defined]
    body = {"iss": RP, "iat": NOW, "keys": RP_METADATA["jwks"]["keys"]}  # type: ignore[index]
    token = sign_compact(body, kid=RP_KEY.kid, typ="jwk-set+json", signer=RP_KEY.sign)
    keys = verify_rp_signed_jwks(token, relying_party=rp, now=NOW)  # type: ignore[arg-type]
    assert keys.tls_certificates == (base64.b64decode(TLS_CERT),)
    rogue = new_key(RP_KEY.kid)
    forged = sign_compact(body, kid=rogue.kid, typ="jwk-set+json", signer=rogue.sign)
    with pytest.raises(BadSignature):
        verify_rp_signed_jwks(forged, relying_party=rp, now=NOW)  # type: ignore[arg-type]
