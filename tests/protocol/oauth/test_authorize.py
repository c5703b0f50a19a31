"""Authorization endpoint, consent, code and redirect (gematik-sectoral-idp.md §2 steps 3-5, §5).

TC numbers refer to gsi-testsuite idpsektoralAuthorizationEndpoint.feature.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest
from oauth_factory import CERT, CLIENT_ID, NOW, REDIRECT_URI, counter_rng, make_client, par_form

from healthid.protocol.oauth.authorize import (
    AUTHORIZATION_CODE_TTL,
    AuthorizationRequest,
    check_assurance,
    check_authorization_request,
    consent,
    error_redirect,
    issue_code,
    new_authorization_code,
    parse_authorization_request,
    requested_claims,
)
from healthid.protocol.oauth.errors import (
    AccessDeniedError,
    InvalidClientError,
    InvalidRequestError,
    InvalidRequestUriError,
    OAuthError,
    ServerError,
)
from healthid.protocol.oauth.par import ParRequest, validate_par
from healthid.protocol.oidc.loa import (
    Assurance,
    DeviceKeyClass,
    ProofingMethod,
    derive_assurance,
)

REQUEST_URI = "urn:ietf:params:oauth:request_uri:abc"
ID = "urn:telematik:claims:id"
PROFESSION = "urn:telematik:claims:profession"
DISPLAY_NAME = "urn:telematik:claims:display_name"


def make_par(**overrides: str | None) -> ParRequest:
    return validate_par(par_form(**overrides), client=make_client(), client_cert=CERT, now=NOW)


def essential(*names: str) -> str:
    return json.dumps({"id_token": {n: {"essential": True} for n in names}})


def test_authorization_request_accepts_client_id_and_request_uri() -> None:  # TC 001
    request = parse_authorization_request({"client_id": [CLIENT_ID], "request_uri": [REQUEST_URI]})
    par = make_par()
    assert check_authorization_request(request, par, now=NOW + 89) is par


@pytest.mark.parametrize("missing", ["client_id", "request_uri"])
def test_authorization_request_rejects_missing_parameter(missing: str) -> None:  # TC 003
    query = {"client_id": [CLIENT_ID], "request_uri": [REQUEST_URI]}
    query.pop(missing)
    with pytest.raises(InvalidRequestError):
        parse_authorization_request(query)


def test_authorization_request_rejects_duplicate_request_uri() -> None:
    with pytest.raises(InvalidRequestError):
        parse_authorization_request({"client_id": [CLIENT_ID], "request_uri": ["a", "b"]})


def test_authorization_request_rejects_unknown_request_uri() -> None:  # TC 002
    request = AuthorizationRequest(client_id=CLIENT_ID, request_uri=REQUEST_URI)
    with pytest.raises(InvalidRequestUriError) as caught:
        check_authorization_request(request, None, now=NOW)
    assert caught.value.status_code == 400
    assert not caught.value.redirectable


def test_authorization_request_rejects_expired_request_uri() -> None:  # TC 004
    request = AuthorizationRequest(client_id=CLIENT_ID, request_uri=REQUEST_URI)
    with pytest.raises(InvalidRequestUriError, match="expired"):
        check_authorization_request(request, make_par(), now=NOW + 90)


def test_authorization_request_rejects_client_id_of_another_client() -> None:  # TC 002
    request = AuthorizationRequest(client_id="invalidClient", request_uri=REQUEST_URI)
    with pytest.raises(InvalidRequestError, match="unknown client_id"):
        check_authorization_request(request, make_par(), now=NOW)


def test_authorization_request_reports_expiry_before_client_id() -> None:
    request = AuthorizationRequest(client_id="invalidClient", request_uri=REQUEST_URI)
    with pytest.raises(InvalidRequestUriError):
        check_authorization_request(request, make_par(), now=NOW + 1000)


def test_requested_claims_lists_essential_and_optional() -> None:
    body = requested_claims(make_par(claims=essential(ID)))
    assert body["requested_essential_claims"] == [ID]
    assert ID not in body["requested_optional_claims"]
    assert PROFESSION in body["requested_optional_claims"]


def test_consent_returns_exactly_the_selection() -> None:
    par = make_par(claims=essential(ID))
    assert consent(par, [ID, PROFESSION]).claims == (ID, PROFESSION)
    assert consent(par, [ID]).claims == (ID,)  # optional claims are not added back


def test_consent_rejects_missing_essential_claim() -> None:
    with pytest.raises(InvalidRequestError, match="missing essential claims"):
        consent(make_par(claims=essential(ID)), [PROFESSION])


def test_consent_rejects_claims_beyond_the_request() -> None:
    with pytest.raises(InvalidRequestError, match="exceed scopes"):
        consent(make_par(scope="urn:telematik:versicherter openid"), [PROFESSION, DISPLAY_NAME])


def test_consent_rejects_too_many_selected_claims() -> None:
    with pytest.raises(InvalidRequestError):
        consent(make_par(), [f"c{i}" for i in range(33)])


def _assurance(method: ProofingMethod, key_class: DeviceKeyClass) -> Assurance:
    return derive_assurance(method=method, key_class=key_class, proofed_at=NOW, now=NOW)


def test_check_assurance_rejects_essential_acr_not_achieved() -> None:
    par = make_par(
        claims=json.dumps(
            {"id_token": {"acr": {"essential": True, "value": "gematik-ehealth-loa-high"}}}
        )
    )
    check_assurance(par, _assurance(ProofingMethod.EGK, DeviceKeyClass.SECURE_ELEMENT))
    with pytest.raises(AccessDeniedError) as caught:
        check_assurance(par, _assurance(ProofingMethod.EGK, DeviceKeyClass.SOFTWARE))
    assert caught.value.redirectable


def test_check_assurance_rejects_essential_amr_not_achieved() -> None:
    par = make_par(
        claims=json.dumps(
            {"id_token": {"amr": {"essential": True, "value": "urn:telematik:auth:eID"}}}
        )
    )
    check_assurance(par, _assurance(ProofingMethod.EID, DeviceKeyClass.TEE))
    with pytest.raises(AccessDeniedError, match="amr: "):
        check_assurance(par, _assurance(ProofingMethod.EGK, DeviceKeyClass.TEE))


def test_authorization_code_carries_256_random_bits_and_lives_at_most_60_seconds() -> None:
    assert AUTHORIZATION_CODE_TTL <= 60
    assert len(new_authorization_code(lambda n: b"\x01" * n)) == 43
    with pytest.raises(ServerError):
        new_authorization_code(lambda n: b"\x01" * 15)


def test_issue_code_redirects_with_code_and_state() -> None:  # spec §2 step 5
    par = make_par()
    location, issued = issue_code(par, consent=consent(par, [ID]), now=NOW + 5, rng=counter_rng())
    parts = urlsplit(location)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == REDIRECT_URI
    assert parse_qs(parts.query) == {"code": [issued.code], "state": ["yyystateyyy"]}
    assert "iss" not in parse_qs(parts.query)
    assert issued.consented_claims == (ID,)
    assert (issued.issued_at, issued.expires_at) == (NOW + 5, NOW + 5 + AUTHORIZATION_CODE_TTL)
    assert (issued.code_challenge, issued.redirect_uri) == (par.code_challenge, par.redirect_uri)


def test_issue_code_keeps_the_registered_query_and_encodes_state() -> None:
    uri = "https://redirect.testsuite.gsi/other?tenant=a%20b"
    client = make_client(redirect_uris=(uri,))
    par = validate_par(
        par_form(redirect_uri=uri, state="a&b=c d"), client=client, client_cert=CERT, now=NOW
    )
    location, _ = issue_code(par, consent=consent(par, []), now=NOW, rng=counter_rng())
    assert location.startswith(uri + "&code=")
    assert parse_qs(urlsplit(location).query)["state"] == ["a&b=c d"]


def test_error_redirect_carries_error_and_state() -> None:
    location = error_redirect(make_par(), AccessDeniedError("user cancelled"))
    query = parse_qs(urlsplit(location).query)
    assert query == {
        "error": ["access_denied"],
        "error_description": ["user cancelled"],
        "state": ["yyystateyyy"],
    }


@pytest.mark.parametrize(
    "error", [InvalidClientError("x"), InvalidRequestUriError("x"), OAuthError("x")]
)
def test_error_redirect_rejects_errors_that_must_be_rendered(error: OAuthError) -> None:
    with pytest.raises(ValueError, match="must be rendered"):
        error_redirect(make_par(), error)
