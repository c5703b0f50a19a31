"""Token request and ID-token claims (gematik-sectoral-idp.md §2 steps 6-7, §5, §6, §8).

TC numbers refer to gsi-testsuite idpsektoralTokenEndpoint.feature; the ID-token claim sets
are compared with the vectors under ``vectors/`` (each names its source).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from oauth_factory import (
    CERT,
    CLIENT_ID,
    CODE_CHALLENGE,
    CODE_VERIFIER,
    NOW,
    REDIRECT_URI,
    make_client,
)

from healthid.protocol.oauth.authorize import IssuedCode
from healthid.protocol.oauth.errors import (
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    OAuthError,
    ServerError,
    UnsupportedGrantTypeError,
)
from healthid.protocol.oauth.token import (
    ID_TOKEN_LIFETIME,
    TOKEN_REQUIRED,
    TokenGrant,
    TokenRequest,
    id_token_claims,
    parse_token_request,
    redeem_code,
)
from healthid.protocol.oidc.loa import Assurance

VECTORS = sorted((Path(__file__).parent / "vectors").glob("id_token_*.json"))
CODE = "c" * 43
ISSUED = IssuedCode(
    code=CODE,
    client_id=CLIENT_ID,
    redirect_uri=REDIRECT_URI,
    code_challenge=CODE_CHALLENGE,
    nonce="vy7rM801AQw1or22GhrZ",
    id_token_version="2.0.0",
    consented_claims=("urn:telematik:claims:id",),
    issued_at=NOW,
    expires_at=NOW + 60,
)


def token_form(**overrides: str | None) -> dict[str, list[str]]:
    base: dict[str, str | None] = {
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": CODE_VERIFIER,
        "grant_type": "authorization_code",
        "code": CODE,
    }
    base.update(overrides)
    return {k: [v] for k, v in base.items() if v is not None}


def redeem(
    request: TokenRequest | None = None,
    issued: IssuedCode | None = ISSUED,
    cert: bytes | None = CERT,
    now: int = NOW + 10,
) -> TokenGrant:
    request = request or parse_token_request(token_form())
    return redeem_code(
        request, issued, client=make_client(client_id=request.client_id), client_cert=cert, now=now
    )


def test_token_accepts_the_testsuite_request() -> None:  # TC 005
    grant = redeem()
    assert grant == TokenGrant(
        client_id=CLIENT_ID,
        nonce="vy7rM801AQw1or22GhrZ",
        id_token_version="2.0.0",
        consented_claims=("urn:telematik:claims:id",),
    )


@pytest.mark.parametrize("name", TOKEN_REQUIRED)
def test_token_rejects_missing_parameter(name: str) -> None:  # TC 003
    with pytest.raises(InvalidRequestError, match=f"{name} is missing"):
        parse_token_request(token_form(**{name: None}))


def test_token_reports_missing_code_first() -> None:
    with pytest.raises(InvalidRequestError, match="code is missing"):
        parse_token_request(token_form(code=None, grant_type=None))


def test_token_rejects_duplicate_parameters() -> None:
    form = token_form()
    form["code_verifier"] = [CODE_VERIFIER, "x" * 43]
    with pytest.raises(InvalidRequestError, match="more than once"):
        parse_token_request(form)


def test_token_rejects_grant_type_other_than_authorization_code() -> None:  # TC 001
    with pytest.raises(UnsupportedGrantTypeError):
        parse_token_request(token_form(grant_type="password"))


def test_token_rejects_unknown_code() -> None:  # TC 001
    with pytest.raises(InvalidGrantError, match="unknown code"):
        redeem(issued=None)
    with pytest.raises(InvalidGrantError, match="unknown code"):
        redeem(parse_token_request(token_form(code="eyfsfdsfsd")))


def test_token_rejects_expired_code() -> None:
    with pytest.raises(InvalidGrantError, match="expired"):
        redeem(now=NOW + 60)


def test_token_rejects_redirect_uri_other_than_the_pars() -> None:  # TC 001
    with pytest.raises(InvalidGrantError, match="redirect_uri"):
        redeem(parse_token_request(token_form(redirect_uri="https://invalidRedirect")))


def test_token_rejects_wrong_code_verifier() -> None:  # TC 007
    with pytest.raises(InvalidRequestError, match="invalid code_verifier") as caught:
        redeem(parse_token_request(token_form(code_verifier="invalidverifier" * 3)))
    assert caught.value.status_code == 400


def test_token_rejects_code_verifier_outside_rfc7636_syntax() -> None:  # TC 001 "dasddsad"
    with pytest.raises(InvalidRequestError):
        redeem(parse_token_request(token_form(code_verifier="dasddsad")))


def test_token_rejects_client_id_of_another_client() -> None:  # TC 001
    with pytest.raises(InvalidGrantError, match="client_id"):
        redeem(parse_token_request(token_form(client_id="https://other.example")))


def test_token_rejects_unknown_client_certificate() -> None:  # TC 004 expects invalid_.*
    with pytest.raises(InvalidClientError) as info:
        redeem(cert=b"wrong")
    assert info.value.status_code == 401


def test_token_rejects_client_that_does_not_match_client_id() -> None:
    request = parse_token_request(token_form())
    with pytest.raises(ServerError):
        redeem_code(
            request,
            ISSUED,
            client=make_client(client_id="https://other.example"),
            client_cert=CERT,
            now=NOW,
        )


@pytest.mark.parametrize(
    ("overrides", "cert", "expected"),
    [
        ({"redirect_uri": "https://x", "code_verifier": "a" * 43}, CERT, "invalid redirect_uri"),
        ({"code_verifier": "a" * 43, "client_id": "https://x"}, CERT, "invalid code_verifier"),
        ({"client_id": "https://x"}, b"wrong", "invalid client_id"),
    ],
)
def test_token_reports_the_fault_gematik_checks_first(
    overrides: dict[str, str], cert: bytes, expected: str
) -> None:
    with pytest.raises(OAuthError) as caught:
        redeem(parse_token_request(token_form(**overrides)), cert=cert)
    assert caught.value.description == expected


# --- ID-token claims -----------------------------------------------------------------------


def _build(vector: dict[str, Any]) -> dict[str, object]:
    given = vector["input"]
    grant = given["grant"]
    return id_token_claims(
        issuer=given["issuer"],
        grant=TokenGrant(
            client_id=grant["client_id"],
            nonce=grant["nonce"],
            id_token_version=grant["id_token_version"],
            consented_claims=tuple(grant["consented_claims"]),
        ),
        sub=given["sub"],
        assurance=Assurance(
            acr=given["assurance"]["acr"],
            amr_v1=tuple(given["assurance"]["amr_v1"]),
            amr_v2=tuple(given["assurance"]["amr_v2"]),
            reproof_due_at=0,
        ),
        auth_time=given["auth_time"],
        claim_values=given["claim_values"],
        iat=given["iat"],
    )


@pytest.mark.parametrize("path", VECTORS, ids=lambda p: p.stem)
def test_id_token_claims_match_vector(path: Path) -> None:
    vector = json.loads(path.read_text(encoding="utf-8"))
    assert vector["source"]
    claims = _build(vector)
    assert claims == vector["expected"]
    assert json.loads(json.dumps(claims)) == vector["expected"]  # amr stays a JSON array


def test_id_token_lives_exactly_300_seconds() -> None:  # ID_TOKEN_003
    assert ID_TOKEN_LIFETIME == 300


def test_id_token_claims_release_no_unconsented_claim() -> None:
    vector = json.loads(VECTORS[0].read_text(encoding="utf-8"))
    assert "urn:telematik:claims:email" not in _build(vector)


def test_id_token_claims_reject_consented_claim_colliding_with_protocol_claim() -> None:
    vector = json.loads(VECTORS[0].read_text(encoding="utf-8"))
    vector["input"]["grant"]["consented_claims"] = ["sub"]
    vector["input"]["claim_values"] = {"sub": "someone else"}
    with pytest.raises(ServerError):
        _build(vector)


@pytest.mark.parametrize("sub", ["", "x" * 256, "pseudonym-ä"])
def test_id_token_claims_reject_invalid_sub(sub: str) -> None:
    vector = json.loads(VECTORS[0].read_text(encoding="utf-8"))
    vector["input"]["sub"] = sub
    with pytest.raises(ServerError):
        _build(vector)


def test_id_token_claims_reject_assurance_without_amr() -> None:
    vector = json.loads(VECTORS[0].read_text(encoding="utf-8"))
    vector["input"]["assurance"]["amr_v1"] = []
    with pytest.raises(ServerError):
        _build(vector)


def test_token_grant_is_frozen() -> None:
    grant = redeem()
    with pytest.raises(dataclasses.FrozenInstanceError):
        grant.nonce = "x"  # type: ignore[misc]
