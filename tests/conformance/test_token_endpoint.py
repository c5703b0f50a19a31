# ruff: noqa: N802 - tests are named after gematik's test case ids (IDPSEKTORAL_<CASE>_<NNN>)
"""gsi-testsuite ``idpsektoralTokenEndpoint.feature``: IDPSEKTORAL_TOKEN_ENDPOINT_001-011, run
against our ``/token``.

gematik gets its codes through the GSI-only ``user_id`` shortcut of its own IdP; ours come
from the insurer app's consent (``POST /wallet/v1/authorizations`` with a device login), with
an identity from our synthetic registry in place of gematik's test identities.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conformance_testlib import (
    ACR_HIGH,
    ACR_SUBSTANTIAL,
    IDP,
    IGNORE,
    PROFESSION_VERSICHERTER,
    ROWS,
    FakeRp,
    assert_matches_json,
    authorization_code,
    b64url_json,
    cert_header,
    issued_id_token,
    jws_parts,
    self_signed_tls_certificate,
    token_form,
)
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.testclient import TestClient

from healthid.protocol.jose import verify_compact
from healthid.protocol.jose.jws import TYP_ID_TOKEN, TYP_SIGNED_JWKS
from healthid.settings import Settings
from healthid.wallet.client import WalletClient

ERROR_BODY = {"error": ".*", "____error_description": ".*", "____error_uri": ".*"}


@pytest.fixture
def wallet(client: TestClient, settings: Settings, tmp_path: Path) -> WalletClient:
    from conformance_testlib import enrolled_wallet

    return enrolled_wallet(client, settings, tmp_path, ROWS[0])


@pytest.mark.parametrize(
    ("changes", "status"),
    [
        pytest.param({"client_id": "notUrl"}, "40.", id="client_id-notUrl"),
        pytest.param({"redirect_uri": "https://invalidRedirect"}, "400", id="invalidRedirect"),
        pytest.param({"code_verifier": "dasddsad"}, "400", id="code_verifier"),
        pytest.param({"grant_type": "password"}, "400", id="grant_type-password"),
        pytest.param({"code": "eyfsfdsfsd"}, "400", id="unknown-code"),
    ],
)
def test_TOKEN_001_invalid_parameters(
    client: TestClient, rp: FakeRp, wallet: WalletClient, changes: dict[str, str], status: str
) -> None:
    """IdpSektoral Token Endpoint - Negativfall - fehlerhaft befüllte Parameter"""
    code, verifier = authorization_code(client, rp, wallet)  # a valid code, one field spoilt
    resp = client.post(
        f"{IDP}/token", data={**token_form(code, verifier), **changes}, headers=rp.cert_header()
    )
    assert_matches_json(resp.status_code, status)
    assert_matches_json(
        resp.json(),
        {
            **ERROR_BODY,
            "error": "(invalid_request)|(invalid_grant)|(invalid_client)|(unsupported_grant_type)",
        },
    )


def test_TOKEN_002_wrong_http_method(client: TestClient, rp: FakeRp) -> None:
    """IdpSektoral Token Endpoint - Negativfall - falsche HTTP Methode"""
    resp = client.get(
        f"{IDP}/token", params=token_form("eyfadsfds", "x" * 43), headers=rp.cert_header()
    )
    assert resp.status_code in (404, 405)
    assert resp.headers["content-type"].startswith("application/json"), resp.text
    assert_matches_json(resp.json(), {"error": ".*", "____error_description": ".*"})


@pytest.mark.parametrize(
    ("removed", "status"),
    [
        ("client_id", "40."),
        ("redirect_uri", "400"),
        ("code_verifier", "400"),
        ("grant_type", "400"),
        ("code", "400"),
    ],
)
def test_TOKEN_003_missing_required_parameter(
    client: TestClient, rp: FakeRp, wallet: WalletClient, removed: str, status: str
) -> None:
    """IdpSektoral Token Endpoint - Negativfall - fehlende verpflichtende Parameter"""
    code, verifier = authorization_code(client, rp, wallet)
    form = token_form(code, verifier)
    del form[removed]
    resp = client.post(f"{IDP}/token", data=form, headers=rp.cert_header())
    assert_matches_json(resp.status_code, status)
    assert_matches_json(resp.json(), {**ERROR_BODY, "error": "(invalid_request)|(invalid_grant)"})


def test_TOKEN_004_invalid_tls_client_cert_testsuite_request(
    client: TestClient, rp: FakeRp
) -> None:
    """IdpSektoral Token Endpoint - Negativfall - invalid TLS Client Cert

    As the testsuite sends it: a registered RP, then a token request with an unpublished
    certificate and the literal code ``code``."""
    pushed = client.post(f"{IDP}/PAR_Auth", data=_par(), headers=rp.cert_header())
    assert pushed.status_code == 201, pushed.text  # automatic registration done
    stranger = self_signed_tls_certificate(ec.generate_private_key(ec.SECP256R1()), "rp.example")
    resp = client.post(
        f"{IDP}/token", data=token_form("code", "x" * 43), headers=cert_header(stranger)
    )
    assert resp.status_code in (400, 401), resp.text
    assert_matches_json(resp.json(), {"error": "invalid_.*", "____error_description": ".*"})


def _par() -> dict[str, str]:
    from conformance_testlib import par_form, pkce

    return par_form(pkce()[1])


def test_TOKEN_004_invalid_tls_client_cert(
    client: TestClient, rp: FakeRp, wallet: WalletClient
) -> None:
    """IdpSektoral Token Endpoint - Negativfall - invalid TLS Client Cert

    With a valid code, so that only the certificate is wrong."""
    code, verifier = authorization_code(client, rp, wallet)
    stranger = self_signed_tls_certificate(ec.generate_private_key(ec.SECP256R1()), "rp.example")
    resp = client.post(
        f"{IDP}/token", data=token_form(code, verifier), headers=cert_header(stranger)
    )
    assert resp.status_code in (400, 401), resp.text
    assert_matches_json(resp.json(), {"error": "invalid_.*", "____error_description": ".*"})


def test_TOKEN_005_id_token_response(client: TestClient, rp: FakeRp, wallet: WalletClient) -> None:
    """IdpSektoral Token Endpoint - Gutfall - rufe ID_TOKEN ab"""
    code, verifier = authorization_code(client, rp, wallet)
    resp = client.post(f"{IDP}/token", data=token_form(code, verifier), headers=rp.cert_header())
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.json()["id_token"].count(".") == 4  # a compact JWE


def test_TOKEN_006_id_token_encryption_header(
    client: TestClient, rp: FakeRp, wallet: WalletClient
) -> None:
    """IdpSektoral Token Endpoint - Gutfall - validiere ID_TOKEN Header Claims"""
    encrypted, _ = issued_id_token(client, rp, wallet)
    header = b64url_json(encrypted.split(".")[0])
    assert_matches_json(
        header,
        {
            "alg": "ECDH-ES",
            "enc": "A256GCM",
            "cty": "JWT",
            "kid": "puk_fd_enc",  # the RP's encryption key
            "epk": {"kty": "EC", "x": ".*", "y": ".*", "crv": "P-256"},
        },
    )


def test_TOKEN_007_wrong_code_verifier(
    client: TestClient, rp: FakeRp, wallet: WalletClient
) -> None:
    """IdpSektoral Token Endpoint - Negativfall - Fehlerhafter code_verifier"""
    code, _ = authorization_code(client, rp, wallet)
    resp = client.post(
        f"{IDP}/token",
        data=token_form(code, "invalidverifier"),
        headers=rp.cert_header(),
    )
    assert resp.status_code == 400, resp.text
    assert_matches_json(resp.json(), {"error": "invalid_request", "____error_description": ".*"})


def _verified_id_token(client: TestClient, inner: str) -> tuple[dict[str, object], dict]:
    statement = client.get(f"{IDP}/.well-known/openid-federation").text
    es_body = jws_parts(statement)[1]
    signed = verify_compact(
        client.get(es_body["metadata"]["openid_provider"]["signed_jwks_uri"]).text,
        jwks=es_body["jwks"],
        typ=TYP_SIGNED_JWKS,
    )
    token = verify_compact(inner, jwks={"keys": signed.claims["keys"]}, typ=TYP_ID_TOKEN)
    return dict(token.header), dict(token.claims)


@pytest.mark.usefixtures("secure_element_devices")
@pytest.mark.parametrize("person", [0, 1])
def test_TOKEN_008_id_token_body_claims(
    client: TestClient, settings: Settings, rp: FakeRp, tmp_path: Path, person: int
) -> None:
    """IdpSektoral Token Endpoint - Gutfall ohne userConsent - validiere ID_TOKEN Body Claims"""
    from conformance_testlib import enrolled_wallet

    row = ROWS[person]
    wallet = enrolled_wallet(client, settings, tmp_path, row)
    _, inner = issued_id_token(client, rp, wallet)  # consent to every requested claim
    _, body = _verified_id_token(client, inner)
    assert_matches_json(
        body,
        {
            "sub": ".*",
            "aud": ".*",
            "acr": ACR_HIGH,
            "urn:telematik:claims:id": row["kvnr"],
            "urn:telematik:claims:organization": row["ik"],
            "urn:telematik:claims:profession": PROFESSION_VERSICHERTER.replace(".", r"\."),
            "urn:telematik:claims:display_name": f"{row['given_name']} {row['family_name']}",
            "amr": IGNORE,
            "iss": ".*",
            "exp": IGNORE,
            "iat": IGNORE,
            "nonce": ".*",
        },
    )


def test_TOKEN_009_id_token_signature_header(
    client: TestClient, rp: FakeRp, wallet: WalletClient
) -> None:
    """IdpSektoral Token Endpoint - Gutfall ohne userConsent - validiere ID_TOKEN Header Claims"""
    _, inner = issued_id_token(client, rp, wallet)
    header, _ = _verified_id_token(client, inner)  # signed by the signed JWKS's token key
    # gsi's own kid is puk_fed_idp_token (@GematikSekIdpOnly); ours is the key ring's kid
    assert_matches_json(header, {"alg": "ES256", "typ": "JWT", "kid": ".+", "x5c": IGNORE})


@pytest.mark.usefixtures("secure_element_devices")
def test_TOKEN_010_id_token_body_claims_with_user_consent(
    client: TestClient, settings: Settings, rp: FakeRp, tmp_path: Path
) -> None:
    """IdpSektoral Token Endpoint - Gutfall mit userConsent - validiere ID_TOKEN Body Claims"""
    from conformance_testlib import enrolled_wallet

    wallet = enrolled_wallet(client, settings, tmp_path, ROWS[2])
    _, inner = issued_id_token(
        client,
        rp,
        wallet,
        ["urn:telematik:claims:profession"],
        scope="urn:telematik:versicherter openid",
    )
    _, body = _verified_id_token(client, inner)
    assert_matches_json(
        body,
        {
            "sub": ".*",
            "aud": ".*",
            "acr": ACR_HIGH,
            "urn:telematik:claims:profession": PROFESSION_VERSICHERTER.replace(".", r"\."),
            "amr": IGNORE,
            "iss": ".*",
            "exp": IGNORE,
            "iat": IGNORE,
            "nonce": ".*",
        },
    )
    assert "urn:telematik:claims:id" not in body  # not selected, not released


@pytest.mark.parametrize(
    ("acr_values", "amr", "secure_element"),
    [
        pytest.param(ACR_HIGH, "urn:telematik:auth:eGK", True, id="high-eGK"),
        pytest.param(ACR_HIGH, "urn:telematik:auth:eID", True, id="high-eID"),
        pytest.param(ACR_SUBSTANTIAL, "urn:telematik:auth:other", False, id="substantial-other"),
        pytest.param(ACR_HIGH, "urn:telematik:auth:other", True, id="high-other"),
    ],
)
def test_TOKEN_011_acr_amr_in_id_token(
    request: pytest.FixtureRequest,
    client: TestClient,
    settings: Settings,
    rp: FakeRp,
    tmp_path: Path,
    acr_values: str,
    amr: str,
    secure_element: bool,
) -> None:
    """IdpSektoral Token Endpoint - Gutfall ohne userConsent - validiere acr/amr in ID_TOKEN
    Body Claims"""
    from conformance_testlib import enrolled_wallet

    if amr.endswith(":eID"):
        pytest.skip("needs a wallet proofed with the Online-Ausweis (eID-Server); ours use eGK")
    if acr_values == ACR_HIGH and amr.endswith(":other"):
        pytest.skip(
            "gsi's test identity G839948921 logs in silently (SSO) at LoA high; our SSO is "
            "covered by tests/host/test_oidc_flow.py::test_single_sign_on_is_reported_per_id_"
            "token_version"
        )
    if secure_element:
        request.getfixturevalue("secure_element_devices")
    row = ROWS[3]
    wallet = enrolled_wallet(client, settings, tmp_path, row)
    _, inner = issued_id_token(client, rp, wallet, acr_values=acr_values, amr=amr)
    _, body = _verified_id_token(client, inner)
    assert_matches_json(
        body,
        {
            "sub": ".*",
            "aud": ".*",
            "acr": acr_values,
            "urn:telematik:claims:id": row["kvnr"],
            "urn:telematik:claims:organization": row["ik"],
            "urn:telematik:claims:profession": PROFESSION_VERSICHERTER.replace(".", r"\."),
            "urn:telematik:claims:display_name": f"{row['given_name']} {row['family_name']}",
            "amr": IGNORE,
            "iss": ".*",
            "exp": IGNORE,
            "iat": IGNORE,
            "nonce": ".*",
        },
    )
    assert body["amr"][0] == amr  # type: ignore[index]
