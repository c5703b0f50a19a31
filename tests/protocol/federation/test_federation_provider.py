"""The IdP's entity configuration and signed JWKS against spec §3 / §3.1 (vector file)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from federation_testlib import NOW, new_key, self_signed_cert_b64, unverified_claims
from healthid.protocol.federation import (
    InvalidStatement,
    ProviderConfiguration,
    sign_entity_configuration,
    sign_signed_jwks,
    verify_entity_statement,
)
from healthid.protocol.jose import TYP_SIGNED_JWKS, verify_compact
from healthid.protocol.jose.jws import read_header

VECTOR = json.loads(
    (Path(__file__).parents[2] / "vectors/federation/idp_entity_configuration.json").read_text()
)
ES_KEY = new_key("puk_idp_sig")
TOKEN_KEY = new_key("puk_fed_idp_token")
CONFIG = ProviderConfiguration(
    issuer="https://idp.example",
    authorization_endpoint="https://idp.example/auth",
    token_endpoint="https://mtls.idp.example/token",
    pushed_authorization_request_endpoint="https://mtls.idp.example/PAR_Auth",
    signed_jwks_uri="https://idp.example/jws.json",
    organization_name="Test-Kasse",
    logo_uri="https://idp.example/logo.png",
    authority_hints=("https://app-test.federationmaster.de",),
    federation_name="Test-Kasse IdP",
    federation_organization_name="Test-Kasse",
    contacts=("support@idp.example",),
    homepage_uri="https://idp.example",
)


def configuration() -> str:
    return sign_entity_configuration(
        CONFIG, federation_keys=[ES_KEY.jwk()], kid=ES_KEY.kid, signer=ES_KEY.sign, now=NOW
    )


def test_entity_configuration_fields_equal_spec_section_3() -> None:
    token = configuration()
    header = read_header(token)
    assert {k: header[k] for k in VECTOR["header"]} == VECTOR["header"]
    assert header["kid"] == ES_KEY.kid and "x5c" not in header
    statement = verify_entity_statement(token, jwks=ES_KEY.jwks, now=NOW)
    claims = unverified_claims(token)
    assert set(VECTOR["required_claims"]) <= claims.keys()
    assert statement.iss == statement.sub == CONFIG.issuer
    assert statement.exp - statement.iat == VECTOR["lifetime_seconds"]
    assert list(claims["metadata"]) == VECTOR["metadata_types"]
    provider = claims["metadata"]["openid_provider"]
    for name, value in VECTOR["openid_provider_exact"].items():
        assert provider[name] == value, name
    for name in VECTOR["openid_provider_https_fields"]:
        assert provider[name].startswith("https://"), name
    assert set(VECTOR["response_types_contains"]) <= set(provider["response_types_supported"])
    assert set(VECTOR["scopes_supported_contains"]) <= set(provider["scopes_supported"])
    entity = claims["metadata"]["federation_entity"]
    assert set(VECTOR["federation_entity_required"]) <= entity.keys()
    assert entity["contacts"][0]
    key = claims["jwks"]["keys"][0]
    assert (key["kty"], key["crv"], key["use"], key["kid"]) == ("EC", "P-256", "sig", ES_KEY.kid)


def test_entity_configuration_refuses_unpublished_signing_kid() -> None:
    with pytest.raises(Exception, match="kid"):
        sign_entity_configuration(
            CONFIG, federation_keys=[TOKEN_KEY.jwk()], kid=ES_KEY.kid, signer=ES_KEY.sign, now=NOW
        )


def test_provider_configuration_refuses_http_urls() -> None:
    with pytest.raises(ValueError, match="https"):
        ProviderConfiguration(**{**CONFIG.__dict__, "token_endpoint": "http://idp/token"})


def test_signed_jwks_carries_token_key_with_x5c() -> None:
    x5c = [self_signed_cert_b64(TOKEN_KEY.private)]
    token = sign_signed_jwks(
        issuer=CONFIG.issuer,
        federation_key=ES_KEY.jwk(),
        token_key=TOKEN_KEY.jwk(),
        token_x5c=x5c,
        signer=ES_KEY.sign,
        now=NOW,
    )
    header = read_header(token)
    assert {k: header[k] for k in VECTOR["signed_jwks_header"]} == VECTOR["signed_jwks_header"]
    claims = verify_compact(token, jwks=ES_KEY.jwks, typ=TYP_SIGNED_JWKS).claims
    assert claims["iss"] == CONFIG.issuer and claims["iat"] == NOW
    assert [k["kid"] for k in claims["keys"]] == [ES_KEY.kid, TOKEN_KEY.kid]
    assert all(k["use"] == "sig" and k["crv"] == "P-256" for k in claims["keys"])
    assert claims["keys"][1]["x5c"] == x5c


def test_signed_jwks_refuses_x5c_for_another_key() -> None:
    with pytest.raises(InvalidStatement):
        sign_signed_jwks(
            issuer=CONFIG.issuer,
            federation_key=ES_KEY.jwk(),
            token_key=TOKEN_KEY.jwk(),
            token_x5c=[self_signed_cert_b64(ES_KEY.private)],
            signer=ES_KEY.sign,
            now=NOW,
        )
