# ruff: noqa: N802 - tests are named after gematik's test case ids (IDPSEKTORAL_<CASE>_<NNN>)
"""gsi-testsuite ``idpsektoralAuthorizationEndpoint.feature``: IDPSEKTORAL_AUTH_ENDPOINT_001-004,
run against our ``/auth`` after a PAR."""

from __future__ import annotations

import time

import pytest
from conformance_testlib import IDP, RP, FakeRp, assert_matches_json, pkce, push
from starlette.testclient import TestClient

ERROR_BODY = {"error": ".*", "____error_description": ".*", "____error_uri": ".*"}
UNKNOWN_REQUEST_URI = "urn:ietf:params:oauth:request_uri:ZoWuCxe9C8-uW8T3ngvqoYN-stzw"


def test_AUTH_001_response(client: TestClient, rp: FakeRp) -> None:
    """IdpSektoral Auth Endpoint - Gutfall - Validiere Response"""
    request_uri = push(client, rp, pkce()[1])
    resp = client.get(
        f"{IDP}/auth", params={"request_uri": request_uri, "client_id": RP}, follow_redirects=False
    )
    assert resp.status_code in (200, 302), resp.text


@pytest.mark.parametrize(
    ("use_par_request_uri", "client_id", "error"),
    [
        pytest.param(False, RP, "invalid_request.*", id="unknown-request_uri"),
        pytest.param(True, "invalidClient", "invalid_request", id="invalidClient"),
    ],
)
def test_AUTH_002_invalid_parameters(
    client: TestClient, rp: FakeRp, use_par_request_uri: bool, client_id: str, error: str
) -> None:
    """IdpSektoral Auth Endpoint - Negativfall - fehlerhaft befüllte Parameter"""
    request_uri = push(client, rp, pkce()[1])
    resp = client.get(
        f"{IDP}/auth",
        params={
            "request_uri": request_uri if use_par_request_uri else UNKNOWN_REQUEST_URI,
            "client_id": client_id,
        },
        follow_redirects=False,
    )
    assert resp.status_code == 400, resp.text
    assert_matches_json(resp.json(), {**ERROR_BODY, "error": error})


@pytest.mark.parametrize("removed", ["request_uri", "client_id"])
def test_AUTH_003_missing_required_parameter(client: TestClient, rp: FakeRp, removed: str) -> None:
    """IdpSektoral Auth Endpoint - Negativfall - fehlende verpflichtende Parameter"""
    params = {"request_uri": push(client, rp, pkce()[1]), "client_id": RP}
    del params[removed]
    resp = client.get(f"{IDP}/auth", params=params, follow_redirects=False)
    assert resp.status_code == 400, resp.text
    assert_matches_json(resp.json(), {**ERROR_BODY, "error": "invalid_request.*"})


def test_AUTH_004_expired_request_uri(
    client: TestClient, rp: FakeRp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """IdpSektoral Auth Endpoint - Negativfall - abgelaufene request_uri

    gematik waits ``tiger.gsi.requestUriTTL`` (90 s); we shorten the request_uri lifetime to
    one second for this test (the 90 s announced in ``expires_in`` is PAR_002's check).
    """
    import healthid.protocol.oauth.par as par

    monkeypatch.setattr(par, "REQUEST_URI_TTL", 1)
    request_uri = push(client, rp, pkce()[1])
    fresh = client.get(f"{IDP}/auth", params={"request_uri": request_uri, "client_id": RP})
    assert fresh.status_code == 200, fresh.text  # valid before it expires
    time.sleep(2.1)
    resp = client.get(
        f"{IDP}/auth", params={"request_uri": request_uri, "client_id": RP}, follow_redirects=False
    )
    assert resp.status_code == 400, resp.text
    assert_matches_json(
        resp.json(), {**ERROR_BODY, "error": "(invalid_request|invalid_request_uri)"}
    )
