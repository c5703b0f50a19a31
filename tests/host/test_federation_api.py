"""The IdP's entity configuration and signed JWKS, served and verified as a relying party would."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from starlette.testclient import TestClient

from healthid.protocol.federation import verify_entity_statement
from healthid.protocol.jose import verify_compact
from healthid.protocol.jose.jws import TYP_SIGNED_JWKS
from healthid.runtime import build_app
from healthid.settings import load_settings

IDP = "http://testserver"
VECTOR = Path(__file__).parents[1] / "vectors" / "federation" / "idp_entity_configuration.json"


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    for name in list(os.environ):
        if name.startswith("HEALTHID_"):
            monkeypatch.delenv(name)
    settings = load_settings(
        data_dir=tmp_path / "data", enclave_workers=1, public_url="http://idp.localhost:8080"
    )
    with TestClient(build_app(settings), base_url=IDP) as c:
        yield c


def payload(token: str) -> dict[str, object]:
    part = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))))


def test_entity_configuration_is_self_signed_and_lists_our_endpoints(client: TestClient) -> None:
    import time

    resp = client.get(f"{IDP}/.well-known/openid-federation")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/entity-statement+jwt;charset=UTF-8"
    claims = payload(resp.text)
    statement = verify_entity_statement(resp.text, jwks=claims["jwks"], now=int(time.time()))  # type: ignore[arg-type]
    assert statement.iss == statement.sub == "http://idp.localhost:8080"
    assert statement.exp - statement.iat == 2 * 60 * 60
    op = statement.metadata["openid_provider"]
    assert op["signed_jwks_uri"] == "http://idp.localhost:8080/jws.json"
    assert op["pushed_authorization_request_endpoint"].endswith("/PAR_Auth")
    expected = json.loads(VECTOR.read_text())
    fixed = expected["openid_provider_exact"]
    for field, value in fixed.items():
        assert op[field] == value, field


def test_signed_jwks_carries_the_token_key_with_a_certificate_chain(client: TestClient) -> None:
    config = payload(client.get(f"{IDP}/.well-known/openid-federation").text)
    resp = client.get(f"{IDP}/jws.json")
    assert resp.status_code == 200
    verified = verify_compact(resp.text, jwks=config["jwks"], typ=TYP_SIGNED_JWKS)  # type: ignore[arg-type]
    keys = verified.claims["keys"]
    token_keys = [k for k in keys if "x5c" in k]
    assert len(keys) == 2 and len(token_keys) == 1
    leaf = x509.load_der_x509_certificate(base64.b64decode(token_keys[0]["x5c"][0]))
    assert "TEST" in leaf.subject.rfc4514_string()  # development: the TEST Komp-PKI CA


def test_entity_configuration_publishes_the_next_federation_key_before_it_signs(
    client: TestClient, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from healthid.cli import main

    before = payload(client.get(f"{IDP}/.well-known/openid-federation").text)
    os.environ["HEALTHID_DATA_DIR"] = str(tmp_path / "data")
    try:
        result = CliRunner().invoke(main, ["keys", "rotate", "federation"])
    finally:
        del os.environ["HEALTHID_DATA_DIR"]
    assert result.exit_code == 0, result.output
    resp = client.get(f"{IDP}/.well-known/openid-federation")
    after = payload(resp.text)
    assert len(after["jwks"]["keys"]) == len(before["jwks"]["keys"]) + 1  # type: ignore[index]
    header = json.loads(base64.urlsafe_b64decode(resp.text.split(".")[0] + "=="))
    assert header["kid"] in {k["kid"] for k in before["jwks"]["keys"]}  # type: ignore[index]


def test_app_link_documents_name_the_insurer_apps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("HEALTHID_"):
            monkeypatch.delenv(name)
    settings = load_settings(
        data_dir=tmp_path / "data",
        enclave_workers=1,
        android_package_names=["de.kasse.app"],
        android_signing_cert_digests=["ab" * 32],
        apple_team_id="ABCDE12345",
        apple_bundle_id="de.kasse.app",
    )
    with TestClient(build_app(settings), base_url=IDP) as c:
        links = c.get(f"{IDP}/.well-known/assetlinks.json").json()
        assert links[0]["target"]["package_name"] == "de.kasse.app"
        assert links[0]["target"]["sha256_cert_fingerprints"] == [":".join(["AB"] * 32)]
        aasa = c.get(f"{IDP}/.well-known/apple-app-site-association").json()
        assert aasa["applinks"]["details"][0]["appIDs"] == ["ABCDE12345.de.kasse.app"]
        assert aasa["applinks"]["details"][0]["components"] == [{"/": "/auth*"}]
