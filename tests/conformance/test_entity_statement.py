# ruff: noqa: N802 - tests are named after gematik's test case ids (IDPSEKTORAL_<CASE>_<NNN>)
"""gsi-testsuite ``idpsektoralEntityStatement.feature``: IDPSEKTORAL_ENTITY_STATEMENT_001-008,
run against our ``/.well-known/openid-federation``."""

from __future__ import annotations

from typing import Any

import pytest
from conformance_testlib import IDP, IGNORE, assert_matches_json, jws_parts
from starlette.testclient import TestClient

from healthid.protocol.jose import verify_compact
from healthid.protocol.jose.jws import TYP_ENTITY_STATEMENT

ENTITY_STATEMENT_PATH = "/.well-known/openid-federation"
GEMATIK_SCOPES = (
    "urn:telematik:given_name",
    "urn:telematik:geburtsdatum",
    "urn:telematik:alter",
    "urn:telematik:display_name",
    "urn:telematik:geschlecht",
    "urn:telematik:email",
    "urn:telematik:versicherter",
    "openid",
    "urn:telematik:family_name",
)


def fetch(client: TestClient) -> tuple[str, dict[str, Any], dict[str, Any]]:
    resp = client.get(f"{IDP}{ENTITY_STATEMENT_PATH}")
    assert resp.status_code == 200, resp.text
    header, body = jws_parts(resp.text)
    return resp.text, header, body


def test_ENTITY_STATEMENT_001_signature(client: TestClient) -> None:
    """IdpSektoral Signature - Check Entity Statement"""
    token, header, body = fetch(client)
    verified = verify_compact(token, jwks=body["jwks"], typ=TYP_ENTITY_STATEMENT)
    assert verified.kid == header["kid"]
    # the signature covers the body: a statement with another payload does not verify
    h, _, s = token.split(".")
    forged = f"{h}.{token.split('.')[1][:-4]}AAAA.{s}"
    with pytest.raises(Exception):  # noqa: B017 - any verification failure
        verify_compact(forged, jwks=body["jwks"], typ=TYP_ENTITY_STATEMENT)


def test_ENTITY_STATEMENT_002_response(client: TestClient) -> None:
    """IdpSektoral EntityStatement - Gutfall - Validiere Response"""
    resp = client.get(f"{IDP}{ENTITY_STATEMENT_PATH}")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/entity-statement+jwt")
    assert resp.text.count(".") == 2  # a compact JWS


def test_ENTITY_STATEMENT_003_header_claims(client: TestClient) -> None:
    """IdpSektoral EntityStatement - Gutfall - Validiere Response Header Claims"""
    _, header, _ = fetch(client)
    assert_matches_json(header, {"alg": "ES256", "kid": ".*", "typ": "entity-statement\\+jwt"})


def test_ENTITY_STATEMENT_004_body_claims(client: TestClient) -> None:
    """IdpSektoral EntityStatement - Gutfall - Validiere Response Body Claims"""
    _, _, body = fetch(client)
    assert_matches_json(
        body,
        {
            "iss": "http.*",
            "sub": "http.*",
            "iat": IGNORE,
            "exp": IGNORE,
            "jwks": IGNORE,
            "authority_hints": IGNORE,
            "metadata": IGNORE,
        },
    )


def test_ENTITY_STATEMENT_005_metadata_openid_provider_values(client: TestClient) -> None:
    """IdpSektoral EntityStatement - Gutfall - Validiere Metadata Body Claim"""
    _, _, body = fetch(client)
    metadata = body["metadata"]
    assert_matches_json(metadata, {"openid_provider": IGNORE, "federation_entity": IGNORE})
    assert_matches_json(
        metadata["openid_provider"],
        {
            "issuer": "http.*",
            "signed_jwks_uri": "http.*",
            "____organization_name": ".*",
            "logo_uri": "http.*",
            "authorization_endpoint": "http.*",
            "token_endpoint": "http.*",
            "pushed_authorization_request_endpoint": "http.*",
            "client_registration_types_supported": ["automatic"],
            "subject_types_supported": ["pairwise"],
            "response_types_supported": IGNORE,
            "scopes_supported": IGNORE,
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code"],
            "require_pushed_authorization_requests": True,
            "id_token_signing_alg_values_supported": ["ES256"],
            "id_token_encryption_alg_values_supported": ["ECDH-ES"],
            "id_token_encryption_enc_values_supported": ["A256GCM"],
            "token_endpoint_auth_methods_supported": ["self_signed_tls_client_auth"],
            "user_type_supported": ["IP"],
            "____federation_registration_endpoint": ".*",
            "ti_features_supported": IGNORE,
        },
    )
    assert_matches_json(
        metadata["federation_entity"],
        {
            "____name": ".*",
            "organization_name": ".*",
            "____contacts": IGNORE,
            "____homepage_uri": "http.*",
        },
    )
    assert_matches_json(
        metadata["openid_provider"]["ti_features_supported"],
        {"id_token_version_supported": ["1.0.0", "2.0.0"]},
    )
    contacts = metadata["federation_entity"]["contacts"]
    assert isinstance(contacts, list) and isinstance(contacts[0], str)


def test_ENTITY_STATEMENT_006_jwks_sig_key(client: TestClient) -> None:
    """IdpSektoral EntityStatement - Gutfall - Validiere JWKS in Body Claims"""
    _, header, body = fetch(client)
    # gsi.sigKeyKid: the kid the statement is signed with
    keys = [k for k in body["jwks"]["keys"] if k.get("kid") == header["kid"]]
    assert len(keys) == 1
    assert_matches_json(
        keys[0],
        {"use": "sig", "kid": ".*", "kty": "EC", "crv": "P-256", "x": IGNORE, "y": IGNORE},
    )


def test_ENTITY_STATEMENT_007_scopes_supported(client: TestClient) -> None:
    """IdpSektoral EntityStatement - Gutfall - Validiere scopes_supported"""
    _, _, body = fetch(client)
    supported = body["metadata"]["openid_provider"]["scopes_supported"]
    missing = [s for s in GEMATIK_SCOPES if s not in supported]
    assert not missing, missing


def test_ENTITY_STATEMENT_008_response_types_supported(client: TestClient) -> None:
    """IdpSektoral EntityStatement - Gutfall - Validiere response_types_supported"""
    _, _, body = fetch(client)
    assert "code" in body["metadata"]["openid_provider"]["response_types_supported"]
