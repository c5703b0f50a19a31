# ruff: noqa: N802 - tests are named after gematik's test case ids (IDPSEKTORAL_<CASE>_<NNN>)
"""gsi-testsuite ``idToken.feature``: IDPSEKTORAL_ID_TOKEN_001-005.

gematik checks an ID token the IdP under test supplies (``gsi.idToken``,
``gsi.encryptedIdToken``, ``gsi.idTokenVersion2``); ours are issued here through the whole
flow and verified with the keys of our signed JWKS before their claims are checked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conformance_testlib import (
    IDP,
    IGNORE,
    ROWS,
    FakeRp,
    assert_matches_json,
    b64url_json,
    enrolled_wallet,
    issued_id_token,
    jws_parts,
)
from starlette.testclient import TestClient

from healthid.protocol.jose import verify_compact
from healthid.protocol.jose.jws import TYP_ID_TOKEN, TYP_SIGNED_JWKS
from healthid.runtime import build_app
from healthid.settings import Settings
from rp_testlib import StubResolver

OPTIONAL_USER_CLAIMS = {
    "____urn:telematik:claims:profession": ".*",
    "____urn:telematik:claims:given_name": ".*",
    "____urn:telematik:claims:organization": ".*",
    "____urn:telematik:claims:id": ".*",
    "____at_hash": IGNORE,
    "____rat": IGNORE,
    "____sid": IGNORE,
    "____auth_time": IGNORE,
    "____jti": IGNORE,
    "____birthdate": IGNORE,
    "____urn:barmer:benutzer_id": IGNORE,
    "____urn:telematik:claims:email": IGNORE,
    "____urn:telematik:claims:alter": IGNORE,
    "____urn:telematik:claims:geschlecht": IGNORE,
    "____urn:telematik:claims:display_name": IGNORE,
}


def verified(client: TestClient, inner: str) -> tuple[dict[str, Any], dict[str, Any]]:
    es_body = jws_parts(client.get(f"{IDP}/.well-known/openid-federation").text)[1]
    signed = verify_compact(
        client.get(es_body["metadata"]["openid_provider"]["signed_jwks_uri"]).text,
        jwks=es_body["jwks"],
        typ=TYP_SIGNED_JWKS,
    )
    token = verify_compact(inner, jwks={"keys": signed.claims["keys"]}, typ=TYP_ID_TOKEN)
    return dict(token.header), dict(token.claims)


def id_token_for(
    settings: Settings, tmp_path: Path, rp: FakeRp, row: int
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """An ID token for ``rp``: (encrypted, verified header, verified body)."""
    from conformance_testlib import import_synthetic_registry

    import_synthetic_registry(settings)
    with TestClient(build_app(settings, resolver=StubResolver(rp)), base_url=IDP) as client:
        wallet = enrolled_wallet(client, settings, tmp_path, ROWS[row])
        encrypted, inner = issued_id_token(client, rp, wallet)
        header, body = verified(client, inner)
    return encrypted, header, body


def test_ID_TOKEN_001_signature_header(settings: Settings, tmp_path: Path) -> None:
    """IdpSektoral ID Token - Gutfall - validiere Signatur Header Claims"""
    _, header, _ = id_token_for(settings, tmp_path, FakeRp(), 0)
    assert_matches_json(header, {"alg": "ES256", "____typ": ".*", "kid": ".*", "x5c": IGNORE})


def test_ID_TOKEN_002_body_claims_version_1(settings: Settings, tmp_path: Path) -> None:
    """IdpSektoral ID Token - Gutfall - validiere Body Claims eines Token der Version 1.0.0"""
    _, _, body = id_token_for(settings, tmp_path, FakeRp(id_token_versions=("1.0.0",)), 1)
    assert_matches_json(
        body,
        {
            "iss": "http.*",
            "sub": ".*",
            "iat": IGNORE,
            "exp": IGNORE,
            "aud": ".*",
            "nonce": ".*",
            "acr": "(gematik-ehealth-loa-substantial)|(gematik-ehealth-loa-high)",
            "amr": IGNORE,
            **OPTIONAL_USER_CLAIMS,
        },
    )
    assert_matches_json(
        body["amr"][0],
        "(urn:telematik:auth:eGK)|(urn:telematik:auth:eID)|(urn:telematik:auth:other)"
        "|(urn:telematik:auth:mEW)",
    )
    assert "urn:telematik:auth:consent" not in body  # a 2.0.0 claim


def test_ID_TOKEN_003_lifetime_300s(settings: Settings, tmp_path: Path) -> None:
    """IdpSektoral ID Token - Gutfall - validiere zeitliche Gültigkeit"""
    _, _, body = id_token_for(settings, tmp_path, FakeRp(), 2)
    assert 299 < body["exp"] - body["iat"] < 301


def test_ID_TOKEN_004_jwe_protected_header(settings: Settings, tmp_path: Path) -> None:
    """IdpSektoral ID Token - Gutfall - validiere JWE proteted Header Claims"""
    encrypted, _, _ = id_token_for(settings, tmp_path, FakeRp(), 3)
    assert_matches_json(
        b64url_json(encrypted.split(".")[0]),
        {
            "alg": "ECDH-ES",
            "enc": "A256GCM",
            "cty": "JWT",
            "kid": ".*",
            "version": "2.0.0",
            "epk": {"kty": "EC", "x": IGNORE, "y": IGNORE, "crv": "P-256"},
        },
    )


def test_ID_TOKEN_005_body_claims_version_2_substantial(settings: Settings, tmp_path: Path) -> None:
    """IdpSektoral ID Token - Gutfall - validiere Body Claims eines substantial Token der
    Version 2.0.0"""
    # the test wallet's software key carries loa-substantial (our policy)
    _, _, body = id_token_for(settings, tmp_path, FakeRp(id_token_versions=("2.0.0",)), 4)
    assert_matches_json(
        body,
        {
            "iss": "http.*",
            "sub": ".*",
            "iat": IGNORE,
            "exp": IGNORE,
            "aud": ".*",
            "nonce": ".*",
            "acr": "gematik-ehealth-loa-substantial",
            "amr": IGNORE,
            "urn:telematik:auth:consent": ["loa-substantial"],
            **OPTIONAL_USER_CLAIMS,
        },
    )
    assert body["amr"][0] == "urn:telematik:auth:other"
