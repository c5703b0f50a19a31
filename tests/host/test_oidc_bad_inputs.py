"""security-checklist.md B4 rows 1-5, 7, 9-11: bad inputs to the IdP over HTTP.

Each is refused with the OAuth error and, where a redirect_uri is involved, never redirected
to an unvalidated URI. Runs against the real app (see test_oidc_flow.py for the fixtures).
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from starlette.testclient import TestClient
from test_oidc_flow import (  # the same fixtures: the real app and a fake relying party
    IDP,
    REDIRECT,
    RP,
    FakeRp,
    client,
    enrolled_wallet,
    par_form,
    pkce,
    rp,
    settings,
)

from healthid.settings import Settings

__all__ = ["client", "rp", "settings"]


def par(client: TestClient, rp: FakeRp, form: dict[str, str]) -> httpx.Response:
    return client.post(f"{IDP}/PAR_Auth", data=form, headers=rp.cert_header())


@pytest.mark.parametrize(
    "redirect_uri",
    [
        REDIRECT + "?x=1",
        REDIRECT + "/",
        REDIRECT.replace("callback", "Callback"),
        REDIRECT + "/..;/",
        REDIRECT.replace("callback", "%2e%2e/callback"),
        "https://user@rp.example/callback",
        REDIRECT + "#frag",
        REDIRECT.replace("https:", "http:"),
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        "data:text/html,x",
        "https://rp.example.evil/callback",
        "https://xn--rp-exmple-9ra.example/callback",
        "https://rp.example:8443/callback",
        "http://127.0.0.1:9999/callback",
    ],
)
def test_b4_1_par_rejects_redirect_uri_variants_without_redirecting(
    client: TestClient, rp: FakeRp, redirect_uri: str
) -> None:
    _, challenge = pkce()
    resp = par(client, rp, {**par_form(challenge), "redirect_uri": redirect_uri})
    assert resp.status_code == 400 and "location" not in resp.headers
    assert resp.json()["error"] in {"invalid_request", "invalid_redirect_uri"}


def test_b4_2_unknown_client_with_attacker_redirect_is_not_redirected(
    client: TestClient, rp: FakeRp
) -> None:
    _, challenge = pkce()
    form = {
        **par_form(challenge),
        "client_id": "https://evil.example",
        "redirect_uri": "https://evil.example/cb",
        "response_type": "token",
        "scope": "openid admin",
    }
    resp = par(client, rp, form)
    assert resp.status_code in (400, 401) and "location" not in resp.headers
    # and the authorization endpoint renders, never redirects, for a request_uri it does not know
    auth = client.get(
        f"{IDP}/auth",
        params={"client_id": "https://evil.example", "request_uri": "urn:x"},
        follow_redirects=False,
    )
    assert auth.status_code == 400 and "location" not in auth.headers


@pytest.mark.parametrize("response_type", ["token", "code id_token", None])
def test_b4_3_par_rejects_other_response_types(
    client: TestClient, rp: FakeRp, response_type: str | None
) -> None:
    _, challenge = pkce()
    form = par_form(challenge)
    if response_type is None:
        del form["response_type"]
    else:
        form["response_type"] = response_type
    resp = par(client, rp, form)
    assert resp.status_code == 400
    assert resp.json()["error"] in {"invalid_request", "unsupported_response_type"}


@pytest.mark.parametrize(
    "change",
    [
        {"code_challenge": None},
        {"code_challenge_method": "plain"},
        {"code_challenge": "a" * 42},
        {"code_challenge": "a" * 129},
        {"code_challenge": "a" * 42 + "!"},
    ],
)
def test_b4_4_par_rejects_bad_pkce(
    client: TestClient, rp: FakeRp, change: dict[str, str | None]
) -> None:
    _, challenge = pkce()
    form = par_form(challenge)
    for key, value in change.items():
        if value is None:
            del form[key]
        else:
            form[key] = value
    resp = par(client, rp, form)
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_request"


def test_b4_4_par_rejects_duplicated_pkce_parameters(client: TestClient, rp: FakeRp) -> None:
    _, challenge = pkce()
    body = str(httpx.QueryParams(par_form(challenge))) + "&code_challenge_method=S256"
    resp = client.post(
        f"{IDP}/PAR_Auth",
        content=body,
        headers={**rp.cert_header(), "content-type": "application/x-www-form-urlencoded"},
    )
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_request"


def test_b4_5_par_via_get_and_request_uri_of_another_client(client: TestClient, rp: FakeRp) -> None:
    assert client.get(f"{IDP}/PAR_Auth").status_code == 405
    _, challenge = pkce()
    request_uri = par(client, rp, par_form(challenge)).json()["request_uri"]
    other = client.get(
        f"{IDP}/auth",
        params={
            "client_id": "https://other.example",
            "request_uri": request_uri,
            "app_version": "1",
        },
    )
    assert other.status_code == 400 and other.json()["error"] == "invalid_request"


def test_b4_5_request_uri_is_single_use(
    client: TestClient, settings: Settings, rp: FakeRp, tmp_path: Path
) -> None:
    wallet = (
        enrolled_wallet(
            client, settings, tmp_path, {"kvnr": "", "ik": "", "given_name": "", "family_name": ""}
        )
        if False
        else None
    )
    del wallet
    _, challenge = pkce()
    request_uri = par(client, rp, par_form(challenge)).json()["request_uri"]
    body = {"client_id": RP, "request_uri": request_uri, "selected_claims": []}
    first = client.post(f"{IDP}/wallet/v1/authorizations", json=body)
    assert first.status_code == 200  # consumed (access_denied without a session)
    second = client.post(f"{IDP}/wallet/v1/authorizations", json=body)
    assert second.status_code == 400 and second.json()["error"] == "invalid_request_uri"


@pytest.mark.parametrize(
    "change",
    [
        {"state": "s" * 65536},
        {"nonce": "n" * 65536},
        {"scope": " ".join(["openid"] * 10_000)},
        {"claims": "{" * 5000},
        {"claims": json.dumps({"id_token": {"x": {"a": {"b": {"c": {"d": {"e": 1}}}}}}})},
    ],
)
def test_b4_7_oversized_or_deeply_nested_inputs_get_a_bounded_4xx(
    client: TestClient, rp: FakeRp, change: dict[str, str]
) -> None:
    _, challenge = pkce()
    resp = par(client, rp, {**par_form(challenge), **change})
    assert 400 <= resp.status_code < 500


def test_b4_7_an_oversized_query_is_refused(client: TestClient) -> None:
    # the HTTP client itself refuses URLs over 64 KiB; the IdP's bound is far below
    resp = client.get(f"{IDP}/auth?client_id={RP}&request_uri=" + "x" * 60_000)
    assert 400 <= resp.status_code < 500


def _code(
    client: TestClient, settings: Settings, rp: FakeRp, tmp_path: Path, row: dict[str, str]
) -> tuple[str, str]:
    wallet = enrolled_wallet(client, settings, tmp_path, row)
    verifier, challenge = pkce()
    request_uri = par(client, rp, par_form(challenge)).json()["request_uri"]
    session = wallet.login().session
    location = client.post(
        f"{IDP}/wallet/v1/authorizations",
        json={"client_id": RP, "request_uri": request_uri, "selected_claims": []},
        headers={"Authorization": f"Bearer {session}"},
    ).json()["redirect"]
    return parse_qs(urlsplit(location).query)["code"][0], verifier


def _token_form(code: str, verifier: str, **change: str) -> dict[str, str]:
    return {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": verifier,
        "client_id": RP,
        "redirect_uri": REDIRECT,
        **change,
    }


@pytest.mark.parametrize("settings", ["embedded"], indirect=True)
def test_b4_9_parallel_code_redemptions_exactly_one_succeeds(
    client: TestClient, settings: Settings, rp: FakeRp, tmp_path: Path
) -> None:
    from test_oidc_flow import ROWS

    code, verifier = _code(client, settings, rp, tmp_path, ROWS[0])
    # ten redemptions in parallel threads against the same app: consume() lets one win
    from concurrent.futures import ThreadPoolExecutor

    def redeem(_: int) -> int:
        form = _token_form(code, verifier)
        return client.post(f"{IDP}/token", data=form, headers=rp.cert_header()).status_code

    with ThreadPoolExecutor(max_workers=10) as pool:
        statuses = list(pool.map(redeem, range(10)))
    assert statuses.count(200) == 1 and statuses.count(400) == 9


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"redirect_uri": REDIRECT + "x"}, "invalid_grant"),
        ({"code_verifier": "w" * 43}, "invalid_request"),
        ({"client_id": "https://other.example"}, "invalid_client"),
        ({"grant_type": "password"}, "unsupported_grant_type"),
    ],
)
@pytest.mark.parametrize("settings", ["embedded"], indirect=True)
def test_b4_10_11_code_bound_to_client_redirect_and_verifier(
    client: TestClient,
    settings: Settings,
    rp: FakeRp,
    tmp_path: Path,
    change: dict[str, str],
    error: str,
) -> None:
    from test_oidc_flow import ROWS

    code, verifier = _code(client, settings, rp, tmp_path, ROWS[1])
    resp = client.post(
        f"{IDP}/token", data=_token_form(code, verifier, **change), headers=rp.cert_header()
    )
    assert resp.status_code in (400, 401) and resp.json()["error"] == error


@pytest.mark.parametrize("settings", ["embedded"], indirect=True)
def test_b4_10_code_without_its_mtls_binding_is_refused(
    client: TestClient, settings: Settings, rp: FakeRp, tmp_path: Path
) -> None:
    from test_oidc_flow import ROWS

    code, verifier = _code(client, settings, rp, tmp_path, ROWS[2])
    resp = client.post(
        f"{IDP}/token", data=_token_form(code, verifier), headers=FakeRp().cert_header()
    )
    assert resp.status_code == 401 and resp.json()["error"] == "invalid_client"


@pytest.mark.parametrize(
    "query",
    [b"", b"client_id=a&request_uri=b", b"a=1#frag&b=2", b"x=%C3%A4&y=+", "ä=ö".encode()],
)
def test_the_query_is_read_as_starlette_reads_it(query: bytes) -> None:
    from starlette.requests import Request

    from healthid.host.oidc_api import _query
    from healthid.protocol.oauth.form import parse_form

    scope = {
        "type": "http",
        "method": "GET",
        "scheme": "http",
        "server": ("idp", 443),
        "path": "/auth",
        "root_path": "",
        "query_string": query,
        "headers": [],
    }
    request = Request(scope)
    assert _query(request) == parse_form(request.url.query)


def test_a_query_that_is_not_utf8_is_an_invalid_request() -> None:
    from starlette.requests import Request

    from healthid.host.oidc_api import _query
    from healthid.protocol.oauth.errors import InvalidRequestError

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/auth",
        "query_string": b"a=\xff",
        "headers": [],
    }
    with pytest.raises(InvalidRequestError, match="not UTF-8"):
        _query(Request(scope))
