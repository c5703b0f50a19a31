"""Pushed authorization request: every check of gematik-sectoral-idp.md §2 step 2.

TC numbers refer to gsi-testsuite idpsektoralPushedAuthorizationEndpoint.feature.
"""

from __future__ import annotations

import json
import re

import pytest
from oauth_factory import CERT, CLIENT_ID, NOW, REDIRECT_URI, ROTATION_CERT, make_client, par_form

from healthid.protocol.oauth.client import RegisteredClient
from healthid.protocol.oauth.errors import (
    InvalidRequestError,
    InvalidScopeError,
    OAuthError,
    ServerError,
    UnauthorizedClientError,
    UnsupportedResponseTypeError,
)
from healthid.protocol.oauth.par import (
    PAR_PARAMETER_LIMITS,
    PAR_REQUIRED,
    REQUEST_URI_PREFIX,
    REQUEST_URI_TTL,
    ParRequest,
    ParResponse,
    new_request_uri,
    parse_par,
    validate_par,
)

Form = dict[str, list[str]]


def accept(
    form: Form, client: RegisteredClient | None = None, cert: bytes | None = CERT
) -> ParRequest:
    client = client or make_client()
    request = validate_par(form, client=client, client_cert=cert, now=NOW)
    # the PAR endpoint hands over what parse_par made of the form: the same request
    parsed = parse_par(form)
    assert validate_par(form, client=client, client_cert=cert, now=NOW, parsed=parsed) == request
    return request


def refuse(
    form: Form, client: RegisteredClient | None = None, cert: bytes | None = CERT
) -> OAuthError:
    with pytest.raises(OAuthError) as caught:
        accept(form, client, cert)
    return caught.value


def claims(**id_token: object) -> str:
    return json.dumps({"id_token": id_token})


# --- good requests -----------------------------------------------------------------------


@pytest.mark.parametrize("acr", ["gematik-ehealth-loa-high", "gematik-ehealth-loa-substantial"])
def test_par_accepts_the_testsuite_request(acr: str) -> None:  # TC 001, 002
    par = accept(par_form(acr_values=acr))
    assert par.client_id == CLIENT_ID
    assert par.redirect_uri == REDIRECT_URI
    assert par.acr_values == acr
    assert par.scopes == ("urn:telematik:display_name", "urn:telematik:versicherter", "openid")
    assert par.essential_claims == ()
    assert par.optional_claims == (
        "urn:telematik:claims:display_name",
        "urn:telematik:claims:id",
        "urn:telematik:claims:organization",
        "urn:telematik:claims:profession",
    )
    assert par.id_token_version == "2.0.0"
    assert (par.issued_at, par.expires_at) == (NOW, NOW + 90)


def test_request_uri_ttl_is_90_seconds() -> None:
    assert REQUEST_URI_TTL == 90
    assert ParResponse(request_uri="urn:x").to_dict() == {"request_uri": "urn:x", "expires_in": 90}


def test_new_request_uri_carries_256_random_bits() -> None:
    uri = new_request_uri(lambda n: b"\xff" * n)
    assert uri.startswith(REQUEST_URI_PREFIX)
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", uri.removeprefix(REQUEST_URI_PREFIX))


def test_new_request_uri_rejects_short_random_source() -> None:
    with pytest.raises(ServerError):
        new_request_uri(lambda n: b"\x00" * (n - 1))


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
def test_par_ignores_unknown_parameters(name: str, value: str) -> None:  # TC 009
    form = par_form()
    form[name] = [value, value]
    accept(form)


@pytest.mark.parametrize(
    ("acr", "amr"),
    [
        (acr, amr)
        for acr in ("gematik-ehealth-loa-high", "gematik-ehealth-loa-substantial")
        for amr in ("eGK", "eID", "sso", "mEW", "guest:eGK", "other")
    ],
)
def test_par_accepts_every_acr_values_amr_combination(acr: str, amr: str) -> None:  # TC 010
    par = accept(par_form(acr_values=acr, amr=f"urn:telematik:auth:{amr}"))
    assert par.amr == f"urn:telematik:auth:{amr}"


@pytest.mark.parametrize("prompt", ["login", "none", "consent", "select_account", "login consent"])
def test_par_accepts_prompt_values(prompt: str) -> None:  # TC 013
    assert accept(par_form(prompt=prompt)).prompt == tuple(prompt.split())


@pytest.mark.parametrize("max_age", ["0", "12334"])
def test_par_accepts_max_age(max_age: str) -> None:  # TC 015
    assert accept(par_form(max_age=max_age)).max_age == int(max_age)


@pytest.mark.parametrize(
    "claims_parameter",
    [  # TC 018
        '{"id_token":{"acr":{"essential":true,"value":"gematik-ehealth-loa-high"},"amr":{"essential":true,"value":"urn:telematik:auth:guest:eGK"}}}',
        '{"id_token":{"acr":{"essential":true,"values":["gematik-ehealth-loa-high"]},"amr":{"essential":true,"values":["urn:telematik:auth:guest:eGK"]}}}',
        '{"id_token":{"acr":{"essential":true,"value":"gematik-ehealth-loa-high"}}}',
        '{"id_token":{"acr":{"essential":true,"values":["gematik-ehealth-loa-high"]}}}',
        '{"id_token":{"acr":{"value":"gematik-ehealth-loa-invalid"}}}',
    ],
)
def test_par_accepts_valid_claims_parameter(claims_parameter: str) -> None:
    accept(par_form(claims=claims_parameter))


def test_par_records_essential_acr_and_amr() -> None:
    par = accept(
        par_form(
            claims=claims(
                acr={"essential": True, "value": "gematik-ehealth-loa-high"},
                amr={"essential": True, "values": ["urn:telematik:auth:eGK"]},
            )
        )
    )
    assert par.essential_acr == ("gematik-ehealth-loa-high",)
    assert par.essential_amr == ("urn:telematik:auth:eGK",)


def test_par_makes_essential_claims_leave_the_optional_set() -> None:
    par = accept(
        par_form(
            claims=claims(
                **{
                    "urn:telematik:claims:id": {"essential": True},
                    "urn:telematik:claims:display_name": None,
                }
            )
        )
    )
    assert par.essential_claims == ("urn:telematik:claims:id",)
    assert "urn:telematik:claims:id" not in par.optional_claims
    assert "urn:telematik:claims:display_name" in par.optional_claims


@pytest.mark.parametrize(
    ("rp_versions", "chosen"),
    [(("1.0.0",), "1.0.0"), (("1.0.0", "2.0.0"), "2.0.0"), (("2.0.0", "3.0.0"), "2.0.0")],
)
def test_par_negotiates_highest_common_id_token_version(
    rp_versions: tuple[str, ...], chosen: str
) -> None:
    assert (
        accept(par_form(), make_client(id_token_versions_supported=rp_versions)).id_token_version
        == chosen
    )


def test_par_defaults_to_id_token_version_1_for_rp_without_versions() -> None:
    client = RegisteredClient(
        client_id=CLIENT_ID,
        redirect_uris=(REDIRECT_URI,),
        scopes=frozenset({"openid", "urn:telematik:versicherter"}),
        tls_client_certs=(CERT,),
    )
    assert accept(par_form(scope="openid"), client).id_token_version == "1.0.0"


def test_par_accepts_rotated_tls_client_certificate() -> None:  # TC 019
    accept(par_form(), cert=ROTATION_CERT)


# --- form hygiene ------------------------------------------------------------------------


def test_par_rejects_duplicate_parameters() -> None:
    form = par_form()
    form["redirect_uri"] = [REDIRECT_URI, "https://attacker.example"]
    error = refuse(form)
    assert isinstance(error, InvalidRequestError)
    assert "more than once" in error.description


def test_par_rejects_too_many_parameters() -> None:
    form = par_form()
    form.update({f"x{i}": ["1"] for i in range(64)})
    assert isinstance(refuse(form), InvalidRequestError)


@pytest.mark.parametrize(("name", "limit"), sorted(PAR_PARAMETER_LIMITS.items()))
def test_par_rejects_oversized_parameter(name: str, limit: int) -> None:
    error = refuse(par_form(**{name: "a" * (limit + 1)}))
    assert error.description == f"parameter {name} is too long"


# --- presence and syntax, in gsi's order ---------------------------------------------------


@pytest.mark.parametrize("name", PAR_REQUIRED)
def test_par_rejects_missing_required_parameter(name: str) -> None:  # TC 005
    error = refuse(par_form(**{name: None}))
    assert (error.error, error.status_code) == ("invalid_request", 400)
    assert error.description == f"required parameter {name} is missing"


@pytest.mark.parametrize("name", PAR_REQUIRED)
def test_par_rejects_empty_required_parameter(name: str) -> None:
    error = refuse(par_form(**{name: ""}))
    assert error.error in {"invalid_request", "unsupported_response_type"}
    assert error.status_code == 400


@pytest.mark.parametrize(
    "client_id", ["notUrl", "http://idpfadi.dev.gematik.solutions", "https://a b"]
)
def test_par_rejects_client_id_that_is_not_an_https_url(client_id: str) -> None:  # TC 003
    error = refuse(par_form(client_id=client_id))
    assert error.error == "invalid_request"


def test_par_rejects_plain_pkce() -> None:  # TC 003
    error = refuse(par_form(code_challenge_method="plain"))
    assert (error.error, error.status_code) == ("invalid_request", 400)


def test_par_rejects_code_challenge_that_is_not_s256() -> None:
    assert isinstance(refuse(par_form(code_challenge="short")), InvalidRequestError)


def test_par_rejects_response_type_other_than_code() -> None:  # TC 003
    error = refuse(par_form(response_type="token"))
    assert isinstance(error, UnsupportedResponseTypeError)
    assert error.status_code == 400


@pytest.mark.parametrize(
    "acr_values",
    ["invalidAcr", "gematik-ehealth-loa-high gematik-ehealth-loa-substantial"],
)
def test_par_rejects_invalid_acr_values(acr_values: str) -> None:  # TC 003
    assert isinstance(refuse(par_form(acr_values=acr_values)), InvalidRequestError)


@pytest.mark.parametrize("amr", ["urn:telematik:auth:nPA", "urn:gematik:auth:eID", "any"])
def test_par_rejects_unknown_amr_parameter_with_amr_prefix(amr: str) -> None:  # TC 012
    error = refuse(par_form(amr=amr))
    assert (error.error, error.status_code) == ("invalid_request", 400)
    assert "amr: " in error.description


@pytest.mark.parametrize("prompt", ["invalid_prompt", "none login", ""])
def test_par_rejects_invalid_prompt(prompt: str) -> None:  # TC 014 allows 400
    assert isinstance(refuse(par_form(prompt=prompt)), InvalidRequestError)


@pytest.mark.parametrize("max_age", ["-123", "1.5", "", "12345678901"])
def test_par_rejects_invalid_max_age(max_age: str) -> None:  # TC 016 allows 400
    assert isinstance(refuse(par_form(max_age=max_age)), InvalidRequestError)


@pytest.mark.parametrize(
    "redirect_uri",
    ["https://redirect.testsuite.gsi#frag", "https://redirect.testsuite.gsi/a b", "/relative"],
)
def test_par_rejects_redirect_uri_that_is_not_an_absolute_uri(redirect_uri: str) -> None:
    error = refuse(par_form(redirect_uri=redirect_uri))
    assert error.description == "Invalid redirect uri"


# --- the claims parameter (spec §5, §6) ----------------------------------------------------


@pytest.mark.parametrize(
    ("claims_parameter", "description"),
    [
        ("not json", "parameter claims is not a JSON object"),
        ("[]", "parameter claims is not a JSON object"),
        ('{"userinfo":{}}', "parameter claims has invalid structure"),
        ('{"id_token":{},"userinfo":{}}', "parameter claims has invalid structure"),
        ('{"id_token":[]}', "parameter claims is not a JSON object"),
        ('{"id_token":{"acr":{}},"id_token":{}}', "parameter claims has a duplicate member"),
    ],
)
def test_par_rejects_claims_parameter_with_invalid_structure(
    claims_parameter: str, description: str
) -> None:
    error = refuse(par_form(claims=claims_parameter))
    assert (error.error, error.description) == ("invalid_request", description)


def test_par_rejects_unsupported_claim() -> None:  # TC 017
    error = refuse(par_form(claims=claims(invalid_claim={"essential": True})))
    assert error.description == "claim invalid_claim is not supported"


def test_par_rejects_birthdate_in_claims_parameter() -> None:
    refuse(par_form(claims=claims(birthdate={"essential": True})))


def test_par_rejects_value_on_ordinary_claim() -> None:
    error = refuse(par_form(claims=claims(**{"urn:telematik:claims:id": {"value": "X110411675"}})))
    assert error.description == "claim urn:telematik:claims:id should not have value or values set"


def test_par_rejects_non_boolean_essential() -> None:
    refuse(par_form(claims=claims(**{"urn:telematik:claims:id": {"essential": "true"}})))


def test_par_rejects_claims_parameter_nested_too_deeply() -> None:
    refuse(par_form(claims=claims(amr={"essential": True, "values": [[["x"]]]})))


def test_par_rejects_unknown_essential_acr() -> None:  # TC 017
    error = refuse(
        par_form(claims=claims(acr={"essential": True, "values": ["gematik-ehealth-loa-invalid"]}))
    )
    assert (error.error, error.status_code) == ("invalid_request", 400)
    assert "acr: " in error.description


def test_par_rejects_unknown_essential_amr_with_amr_prefix() -> None:  # TC 017
    error = refuse(par_form(claims=claims(amr={"essential": True, "value": "invalidAmr"})))
    assert (error.error, error.status_code) == ("invalid_request", 400)
    assert "amr: " in error.description


def test_par_rejects_essential_amr_of_the_other_id_token_version() -> None:  # spec §6.2
    form = par_form(claims=claims(amr={"essential": True, "value": "urn:telematik:auth:mEW"}))
    accept(form, make_client(id_token_versions_supported=("1.0.0",)))
    assert "amr: " in refuse(form).description  # v2: mEW is reported as other


@pytest.mark.parametrize(
    ("acr", "amr"),
    [
        ("gematik-ehealth-loa-high", "urn:telematik:auth:mEW"),
        ("gematik-ehealth-loa-substantial", "urn:telematik:auth:eGK"),
    ],
)
def test_par_rejects_essential_acr_amr_combination_of_different_levels(acr: str, amr: str) -> None:
    form = par_form(
        claims=claims(acr={"essential": True, "value": acr}, amr={"essential": True, "value": amr})
    )
    error = refuse(form, make_client(id_token_versions_supported=("1.0.0",)))
    assert error.description == "amr: invalid combination of essential values acr and amr"


def test_par_accepts_essential_acr_amr_combination_of_the_same_level() -> None:
    form = par_form(
        claims=claims(
            acr={"essential": True, "value": "gematik-ehealth-loa-substantial"},
            amr={"essential": True, "value": "urn:telematik:auth:mEW"},
        )
    )
    assert accept(form, make_client(id_token_versions_supported=("1.0.0",))).essential_amr == (
        "urn:telematik:auth:mEW",
    )


def test_par_rejects_value_and_values_together() -> None:
    refuse(
        par_form(
            claims=claims(
                acr={"essential": True, "value": "gematik-ehealth-loa-high", "values": []}
            )
        )
    )


def test_par_rejects_claim_outside_registered_scopes() -> None:
    form = par_form(claims=claims(**{"urn:telematik:claims:email": {"essential": True}}))
    assert isinstance(refuse(form), InvalidRequestError)


# --- the RP: version, mTLS, redirect_uri, scopes -------------------------------------------


def test_par_rejects_incompatible_id_token_versions() -> None:  # spec §6.3
    error = refuse(par_form(), make_client(id_token_versions_supported=("3.0.0",)))
    assert error.status_code == 400
    assert error.description == (
        "Invalid metadata: incompatible versions for id_token_version_supported"
    )


def test_par_rejects_missing_client_certificate() -> None:
    assert isinstance(refuse(par_form(), cert=None), InvalidRequestError)


def test_par_rejects_unknown_client_certificate() -> None:  # TC 006
    error = refuse(par_form(), cert=b"another certificate")
    assert isinstance(error, UnauthorizedClientError)
    assert error.status_code == 401


def test_par_rejects_redirect_uri_not_registered() -> None:  # TC 003
    for uri in ("https://invalidRedirect", REDIRECT_URI + "/", REDIRECT_URI.upper()):
        error = refuse(par_form(redirect_uri=uri))
        assert (error.error, error.status_code) == ("invalid_request", 400)


@pytest.mark.parametrize("scope", ["invalidScope openid", "urn:telematik:geburtsdatum openid"])
def test_par_rejects_scope_not_registered(scope: str) -> None:  # TC 003, 008
    error = refuse(par_form(scope=scope))
    assert (error.error, error.status_code) == ("invalid_scope", 400)


def test_par_rejects_scope_not_supported_by_the_idp() -> None:
    client = make_client(scopes=frozenset({"openid", "urn:telematik:versicherter", "profile"}))
    error = refuse(par_form(scope="openid profile"), client)
    assert error.description == "More scopes requested in PAR than supported."


def test_par_rejects_scope_without_openid() -> None:
    error = refuse(par_form(scope="urn:telematik:versicherter"))
    assert isinstance(error, InvalidScopeError)
    assert error.description == "scope must contain openid"


def test_par_rejects_client_that_does_not_match_client_id() -> None:
    with pytest.raises(ServerError):
        accept(par_form(), make_client(client_id="https://other.example"))


# --- order of checks: the fault gsi reports first wins --------------------------------------


@pytest.mark.parametrize(
    ("faults", "expected"),
    [
        ({"redirect_uri": None, "state": ["a", "b"]}, "parameter state is included more than once"),
        ({"acr_values": None, "client_id": None}, "required parameter acr_values is missing"),
        ({"client_id": None, "nonce": None}, "required parameter client_id is missing"),
        ({"nonce": None, "claims": ["not json"]}, "required parameter nonce is missing"),
        (
            {"claims": ["not json"], "client_id": ["notUrl"]},
            "parameter claims is not a JSON object",
        ),
        (
            {"client_id": ["notUrl"], "code_challenge_method": ["plain"]},
            "client_id must be an https URL",
        ),
        (
            {"code_challenge_method": ["plain"], "response_type": ["token"]},
            "code_challenge_method must be S256",
        ),
        (
            {"amr": ["any"], "code_challenge": ["short"]},
            "amr: must be one of the urn:telematik:auth values",
        ),
        (
            {"code_challenge": ["short"], "redirect_uri": ["/relative"]},
            "code_challenge is not an S256 challenge",
        ),
        ({"redirect_uri": ["/relative"], "scope": ["invalidScope"]}, "Invalid redirect uri"),
    ],
)
def test_par_reports_the_fault_gematik_checks_first_before_registration(
    faults: dict[str, list[str] | None], expected: str
) -> None:
    form = par_form()
    for name, value in faults.items():
        if value is None:
            form.pop(name)
        else:
            form[name] = value
    assert refuse(form).description == expected


def test_par_reports_version_before_essential_amr() -> None:
    form = par_form(claims=claims(amr={"essential": True, "value": "invalidAmr"}))
    error = refuse(form, make_client(id_token_versions_supported=("9.0.0",)))
    assert "incompatible versions" in error.description


def test_par_reports_essential_amr_before_client_certificate() -> None:
    form = par_form(claims=claims(amr={"essential": True, "value": "invalidAmr"}))
    assert "amr: " in refuse(form, cert=b"wrong").description


def test_par_reports_client_certificate_before_redirect_uri() -> None:
    error = refuse(par_form(redirect_uri="https://invalidRedirect"), cert=b"wrong")
    assert isinstance(error, UnauthorizedClientError)


def test_par_reports_redirect_uri_before_scope() -> None:
    error = refuse(par_form(redirect_uri="https://invalidRedirect", scope="invalidScope"))
    assert isinstance(error, InvalidRequestError)


def test_par_reports_registered_scope_before_missing_openid() -> None:
    error = refuse(par_form(scope="urn:telematik:geburtsdatum"))
    assert "exceeds scopes found in entity statement" in error.description


def test_par_admits_http_client_ids_only_when_allowed_for_development() -> None:
    import pytest as _pytest

    from healthid.protocol.oauth.errors import InvalidRequestError
    from healthid.protocol.oauth.par import parse_par

    form = {
        "client_id": ["http://127.0.0.1:8080/_dev/rp"],
        "state": ["s"],
        "redirect_uri": ["http://127.0.0.1:8080/_dev/rp/callback"],
        "code_challenge": ["Ca3Ve8jSsBQOBFVqQvLs1E-dGV1BXg2FTvrd-Tg19Vg"],
        "code_challenge_method": ["S256"],
        "response_type": ["code"],
        "nonce": ["n"],
        "scope": ["openid urn:telematik:versicherter"],
        "acr_values": ["gematik-ehealth-loa-high"],
    }
    with _pytest.raises(InvalidRequestError, match="https"):
        parse_par(form)
    assert parse_par(form, allow_http=True).client_id == "http://127.0.0.1:8080/_dev/rp"
