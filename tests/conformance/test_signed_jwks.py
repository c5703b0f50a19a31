# ruff: noqa: N802 - tests are named after gematik's test case ids (IDPSEKTORAL_<CASE>_<NNN>)
"""gsi-testsuite ``idpsektoralSignedJwks.feature``: IDPSEKTORAL_SIGNED_JWKS_001-004, run
against the ``signed_jwks_uri`` our entity statement announces."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from conformance_testlib import IDP, IGNORE, assert_matches_json, jws_parts
from cryptography import x509
from cryptography.x509.oid import NameOID
from starlette.testclient import TestClient

from healthid.protocol.jose import verify_compact
from healthid.protocol.jose.jws import TYP_SIGNED_JWKS


def fetch(client: TestClient) -> tuple[Any, str, dict[str, Any], dict[str, Any]]:
    """Background: the entity statement, then its ``signed_jwks_uri``."""
    statement = client.get(f"{IDP}/.well-known/openid-federation").text
    es_header, es_body = jws_parts(statement)
    uri = es_body["metadata"]["openid_provider"]["signed_jwks_uri"]
    resp = client.get(uri)
    header, body = jws_parts(resp.text) if resp.status_code == 200 else ({}, {})
    return resp, es_header["kid"], header, body


def test_SIGNED_JWKS_001_response(client: TestClient) -> None:
    """IdpSektoral signedJwks - Gutfall - Validiere Response"""
    resp, _, _, _ = fetch(client)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/jwk-set")
    assert resp.text.count(".") == 2  # a compact JWS


def test_SIGNED_JWKS_002_header_claims(client: TestClient) -> None:
    """IdpSektoral signedJwks - Gutfall - Validiere Response Header Claims"""
    resp, es_kid, header, _ = fetch(client)
    assert_matches_json(header, {"alg": "ES256", "kid": ".*", "____typ": "jwk-set\\+json"})
    # ours, beyond the case: signed with the entity-statement key (spec §3.1)
    es_body = jws_parts(client.get(f"{IDP}/.well-known/openid-federation").text)[1]
    assert header["kid"] == es_kid
    verify_compact(resp.text, jwks=es_body["jwks"], typ=TYP_SIGNED_JWKS)


def test_SIGNED_JWKS_003_body_claims(client: TestClient) -> None:
    """IdpSektoral signedJwks - Gutfall - Validiere Response Body Claims"""
    _, _, _, body = fetch(client)
    assert_matches_json(body, {"iss": ".*", "iat": IGNORE, "keys": IGNORE})
    assert_matches_json(
        body["keys"][0],
        {"use": "sig", "kid": ".*", "kty": "EC", "crv": "P-256", "x": IGNORE, "y": IGNORE},
    )


def test_SIGNED_JWKS_004_id_token_key_from_komp_pki(client: TestClient) -> None:
    """IdpSektoral signedJwks - Gutfall - ID Token Signing Key aus Komp-PKI"""
    _, _, _, body = fetch(client)
    with_chain = [k for k in body["keys"] if k.get("x5c")]
    assert with_chain, "no key carries an x5c chain"
    leaf = x509.load_der_x509_certificate(base64.b64decode(with_chain[0]["x5c"][0]))
    issuer_cn = leaf.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert issuer_cn  # the chain is a real certificate with an issuer
    pytest.skip(
        f"the issuer CN must match GEM.KOMP-CA.*: needs a TI component-PKI certificate for the "
        f"token key (HEALTHID_TOKEN_CERTIFICATES_DIR); development issues from {issuer_cn!r}"
    )
