# ruff: noqa: N802 - tests are named after gematik's test case ids (IDPSEKTORAL_<CASE>_<NNN>)
"""gsi-testsuite ``idpsektoralPushedAuthorizationEndpoint.feature``:
IDPSEKTORAL_PUSHED_AUTH_ENDPOINT_001-019 (there is no 011), run against our ``/PAR_Auth``.

Every PAR carries the RP's TLS client certificate, as the testsuite's Tiger proxy does
(``forwardMutualTlsIdentity``); the example rows are the feature file's.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from conformance_testlib import (
    ACR_HIGH,
    ACR_SUBSTANTIAL,
    IDP,
    IGNORE,
    FakeRp,
    assert_matches_json,
    cert_header,
    par_form,
    self_signed_tls_certificate,
)
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.testclient import TestClient

from healthid.runtime import build_app
from healthid.settings import Settings
from rp_testlib import StubResolver

CHALLENGE = "9tI-0CQIkUYaGQOVR1emznlDFjlX0kVY1yd3oiMtGUI"  # the feature file's code_challenge
ERROR_BODY = {"error": ".*", "____error_description": ".*", "____error_uri": ".*"}
REMOVE = None  # the feature file's $REMOVE


def post_par(client: TestClient, rp: FakeRp, **changes: str | None) -> httpx.Response:
    form: dict[str, Any] = par_form(CHALLENGE)
    for name, value in changes.items():
        if value is REMOVE:
            form.pop(name)
        else:
            form[name] = value
    return client.post(f"{IDP}/PAR_Auth", data=form, headers=rp.cert_header())


@pytest.mark.parametrize("acr_values", [ACR_HIGH, ACR_SUBSTANTIAL])
def test_PAR_001_response(client: TestClient, rp: FakeRp, acr_values: str) -> None:
    """IdpSektoral Pushed Auth Endpoint - Gutfall - Validiere Response"""
    resp = post_par(client, rp, acr_values=acr_values)
    assert resp.status_code == 201, resp.text
    assert resp.headers["content-type"].startswith("application/json")


def test_PAR_002_response_body(client: TestClient, rp: FakeRp) -> None:
    """IdpSektoral Pushed Auth Endpoint - Gutfall - Validiere Response Body"""
    resp = post_par(client, rp)
    assert resp.status_code == 201, resp.text
    assert_matches_json(resp.json(), {"request_uri": ".*", "expires_in": IGNORE})
    # ours (RFC 9126 §2.2, spec §8): a URN request_uri living 90 s, not cached
    assert resp.json()["request_uri"].startswith("urn:ietf:params:oauth:request_uri:")
    assert resp.json()["expires_in"] == 90
    assert resp.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    ("changes", "error", "status"),
    [
        pytest.param({"client_id": "notUrl"}, "invalid_.*", "40.", id="client_id-notUrl"),
        pytest.param({"code_challenge_method": "plain"}, "invalid_request", "400", id="pkce-plain"),
        pytest.param({"response_type": "token"}, ".*", "400", id="response_type-token"),
        pytest.param({"acr_values": "invalidAcr"}, "invalid_request", "400", id="invalidAcr"),
        pytest.param(
            {"redirect_uri": "https://invalidRedirect"},
            "invalid_request",
            "400",
            id="invalidRedirect",
        ),
    ],
)
def test_PAR_003_invalid_parameters(
    client: TestClient, rp: FakeRp, changes: dict[str, str], error: str, status: str
) -> None:
    """IdpSektoral Pushed Auth Endpoint - Negativfall - fehlerhaft befüllte Parameter"""
    resp = post_par(client, rp, **changes)
    assert_matches_json(
        {"code": resp.status_code, "body": resp.json()},
        {"code": status, "body": {**ERROR_BODY, "error": error}},
    )


def test_PAR_003_invalid_scope(client: TestClient, rp: FakeRp) -> None:
    """IdpSektoral Pushed Auth Endpoint - Negativfall - fehlerhaft befüllte Parameter
    (row scope=invalidScope: 400 invalid_scope)"""
    resp = post_par(client, rp, scope="invalidScope")
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_scope"


def test_PAR_004_wrong_http_method(client: TestClient, rp: FakeRp) -> None:
    """IdpSektoral Pushed Auth Endpoint - Negativfall - falsche HTTP Methode"""
    resp = client.get(f"{IDP}/PAR_Auth", params=par_form(CHALLENGE), headers=rp.cert_header())
    assert str(resp.status_code).startswith("40"), resp.status_code
    assert resp.headers["content-type"].startswith("application/json"), resp.text
    assert_matches_json(
        resp.json(), {"error": "(not_found|invalid_request)", "____error_description": ".*"}
    )


@pytest.mark.parametrize(
    "removed", ["client_id", "redirect_uri", "code_challenge_method", "response_type", "scope"]
)
def test_PAR_005_missing_required_parameter(client: TestClient, rp: FakeRp, removed: str) -> None:
    """IdpSektoral Pushed Auth Endpoint - Negativfall - fehlende verpflichtende Parameter"""
    resp = post_par(client, rp, **{removed: REMOVE})
    assert resp.status_code == 400, resp.text
    assert_matches_json(
        resp.json(),
        {**ERROR_BODY, "error": "(invalid_request|invalid_scope|unsupported_response_type)"},
    )


def test_PAR_006_invalid_tls_client_cert(client: TestClient, rp: FakeRp) -> None:
    """IdpSektoral Pushed Auth Endpoint - Negativfall - invalid TLS Client Cert"""
    assert post_par(client, rp).status_code == 201  # automatic registration done
    stranger = self_signed_tls_certificate(ec.generate_private_key(ec.SECP256R1()), "rp.example")
    resp = client.post(f"{IDP}/PAR_Auth", data=par_form(CHALLENGE), headers=cert_header(stranger))
    assert resp.status_code == 401, resp.text
    assert_matches_json(
        resp.json(),
        {
            "error": "(invalid_request|invalid_client|unauthorized_client)",
            "____error_description": ".*",
        },
    )


@pytest.mark.parametrize("variant", ["expired", "invalidSignature"])
def test_PAR_007_invalid_entity_statements(variant: str) -> None:
    """IdpSektoral Pushed Auth Endpoint - Negativfall - invalide Entity Statements"""
    pytest.skip(
        f"needs gematik's RPs gsi.clientid.{variant} (an {variant} entity statement) in their "
        "reference federation; our registry's refusals are tested in tests/host/"
        "test_relying_parties.py"
    )


@pytest.mark.parametrize(
    ("scope", "status"),
    [
        pytest.param(None, "201", id="gsi.scope"),
        pytest.param("urn:telematik:geburtsdatum openid", "40.", id="unregistered-scope"),
    ],
)
def test_PAR_008_scopes(client: TestClient, rp: FakeRp, scope: str | None, status: str) -> None:
    """IdpSektoral Pushed Auth Endpoint - Negativfall - Scopes"""
    resp = post_par(client, rp) if scope is None else post_par(client, rp, scope=scope)
    assert_matches_json(resp.status_code, status)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:self_signed_tls_client_auth",
        ),
        ("unknown_parameter", "parameter_value"),
    ],
)
def test_PAR_009_additional_parameters(
    client: TestClient, rp: FakeRp, name: str, value: str
) -> None:
    """IdpSektoral Pushed Auth Endpoint - Positivfall - Zusätzliche Parameter"""
    resp = post_par(client, rp, **{name: value})
    assert resp.status_code == 201, resp.text


@pytest.mark.parametrize(
    ("acr_values", "amr"),
    [
        (ACR_HIGH, "urn:telematik:auth:eGK"),
        (ACR_HIGH, "urn:telematik:auth:eID"),
        (ACR_HIGH, "urn:telematik:auth:sso"),
        (ACR_SUBSTANTIAL, "urn:telematik:auth:mEW"),
        (ACR_HIGH, "urn:telematik:auth:guest:eGK"),
        (ACR_SUBSTANTIAL, "urn:telematik:auth:other"),
        (ACR_HIGH, "urn:telematik:auth:other"),
        (ACR_SUBSTANTIAL, "urn:telematik:auth:eGK"),
        (ACR_SUBSTANTIAL, "urn:telematik:auth:eID"),
        (ACR_SUBSTANTIAL, "urn:telematik:auth:sso"),
        (ACR_HIGH, "urn:telematik:auth:mEW"),
        (ACR_SUBSTANTIAL, "urn:telematik:auth:guest:eGK"),
    ],
)
def test_PAR_010_amr_acr_combinations(
    client: TestClient, rp: FakeRp, acr_values: str, amr: str
) -> None:
    """IdpSektoral Pushed Auth Endpoint - Positivfall - Amr/Acr Kombinationen"""
    resp = post_par(client, rp, acr_values=acr_values, amr=amr)
    assert resp.status_code == 201, resp.text


@pytest.mark.parametrize("amr", ["urn:telematik:auth:nPA", "urn:gematik:auth:eID", "any"])
def test_PAR_012_invalid_amr(client: TestClient, rp: FakeRp, amr: str) -> None:
    """IdpSektoral Pushed Auth Endpoint - Negativfall - Amr Parameter"""
    resp = post_par(client, rp, amr=amr)
    assert resp.status_code == 400, resp.text
    assert_matches_json(
        resp.json(), {"error": "invalid_request", "____error_description": ".*amr: .*"}
    )


@pytest.mark.parametrize("prompt", ["login", "none", "consent", "select_account"])
def test_PAR_013_prompt(client: TestClient, rp: FakeRp, prompt: str) -> None:
    """IdpSektoral Pushed Auth Endpoint - Gutfall - Prompt Parameter"""
    resp = post_par(client, rp, prompt=prompt)
    assert resp.status_code == 201, resp.text


def test_PAR_014_invalid_prompt(client: TestClient, rp: FakeRp) -> None:
    """IdpSektoral Pushed Auth Endpoint - Negativfall - Prompt Parameter"""
    resp = post_par(client, rp, prompt="invalid_prompt")
    assert resp.status_code in (201, 400), resp.text


@pytest.mark.parametrize("max_age", ["0", "12334"])
def test_PAR_015_max_age(client: TestClient, rp: FakeRp, max_age: str) -> None:
    """IdpSektoral Pushed Auth Endpoint - Positivfall - max_age Parameter"""
    resp = post_par(client, rp, max_age=max_age)
    assert resp.status_code == 201, resp.text


def test_PAR_016_invalid_max_age(client: TestClient, rp: FakeRp) -> None:
    """IdpSektoral Pushed Auth Endpoint - Negativfall - max_age Parameter"""
    resp = post_par(client, rp, max_age="-123")
    assert resp.status_code in (201, 400), resp.text


@pytest.mark.parametrize(
    "claims",
    [
        {"id_token": {"acr": {"essential": True, "values": ["gematik-ehealth-loa-invalid"]}}},
        {"id_token": {"amr": {"essential": True, "value": "invalidAmr"}}},
        {"id_token": {"invalid_claim": {"essential": True}}},
    ],
    ids=["essential-acr-invalid", "essential-amr-invalid", "essential-invalid_claim"],
)
def test_PAR_017_invalid_claims(client: TestClient, rp: FakeRp, claims: dict[str, Any]) -> None:
    """IdpSektoral Pushed Auth Endpoint - Negativfall - claims Parameter"""
    resp = post_par(client, rp, claims=json.dumps(claims))
    assert resp.status_code == 400, resp.text


GUEST = "urn:telematik:auth:guest:eGK"


@pytest.mark.parametrize(
    "claims",
    [
        {
            "id_token": {
                "acr": {"essential": True, "value": ACR_HIGH},
                "amr": {"essential": True, "value": GUEST},
            }
        },
        {
            "id_token": {
                "acr": {"essential": True, "values": [ACR_HIGH]},
                "amr": {"essential": True, "values": [GUEST]},
            }
        },
        {"id_token": {"acr": {"essential": True, "value": ACR_HIGH}}},
        {"id_token": {"acr": {"essential": True, "values": [ACR_HIGH]}}},
        {"id_token": {"acr": {"value": "gematik-ehealth-loa-invalid"}}},
    ],
    ids=["guest-value", "guest-values", "acr-value", "acr-values", "non-essential-invalid"],
)
def test_PAR_018_valid_claims(client: TestClient, rp: FakeRp, claims: dict[str, Any]) -> None:
    """IdpSektoral Pushed Auth Endpoint - Positivfall - claims Parameter"""
    resp = post_par(client, rp, claims=json.dumps(claims))
    assert resp.status_code == 201, resp.text


def test_PAR_019_cert_rotation(settings: Settings) -> None:
    """IdpSektoral Pushed Auth Endpoint - Positivfall - cert rotation"""
    from conformance_testlib import import_synthetic_registry

    rotating = FakeRp(tls_certificates=2)  # both certificates are in its entity statement
    import_synthetic_registry(settings)
    app = build_app(settings, resolver=StubResolver(rotating))
    with TestClient(app, base_url=IDP) as client:
        for cert in rotating.tls_certs:
            resp = client.post(
                f"{IDP}/PAR_Auth", data=par_form(CHALLENGE), headers=cert_header(cert)
            )
            assert resp.status_code == 201, resp.text
