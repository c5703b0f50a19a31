"""The DEMO relying party against the real IdP (issue #4): federation registration through the
development master, PAR over (header-)mTLS, the CLI wallet's consent, the token request and the
ID-token checks of spec §2 step 8. No sockets: every hop is an in-process transport.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import anyio.to_thread
import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from starlette.applications import Starlette
from starlette.testclient import TestClient

import stack_testlib
from healthid.demo.egk_test_ca import TestEgkCa
from healthid.demo.fedmaster import create_fedmaster_app
from healthid.demo.fedmaster_config import FedmasterConfig, Member, master_public_jwks
from healthid.demo.rp import (
    COOKIE_NAME,
    DemoRpConfig,
    DemoRpRefused,
    create_demo_rp_app,
)
from healthid.demo.rp_keys import (
    ENC_KEY_FILE,
    SIG_KEY_FILE,
    TLS_CERT_FILE,
    TLS_KEY_FILE,
    DemoRpKeyError,
    load_or_create_rp_keys,
)
from healthid.demo.rp_protocol import DemoRpError, verify_id_token
from healthid.demo.synthetic import synthetic_rows
from healthid.host.fetch import GuardedFetcher
from healthid.host.relying_parties import RelyingPartyRegistry
from healthid.protocol.federation import (
    resolve_relying_party,
    sign_subordinate_statement,
    verify_entity_statement,
)
from healthid.protocol.jose import TYP_ID_TOKEN, encrypt_id_token, public_jwk, sign_compact
from healthid.runtime import EGK_TEST_CA_DIR, build_app
from healthid.settings import Settings, load_settings
from healthid.store.ephemeral import open_ephemeral_store
from healthid.wallet.client import WalletClient

MASTER = "http://fedmaster.test"
RP = "https://rp.example"
ROWS = list(synthetic_rows(4, seed=23))


def es256(key: ec.EllipticCurvePrivateKey) -> Any:
    def sign(_kid: str, data: bytes) -> bytes:
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    return sign


class Router(httpx.AsyncBaseTransport):
    """Routes by host name to in-process transports (the default for other hosts)."""

    def __init__(self, default: httpx.AsyncBaseTransport | None = None) -> None:
        self.hosts: dict[str, httpx.AsyncBaseTransport] = {}
        self.default = default

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        target = self.hosts.get(request.url.host, self.default)
        assert target is not None, f"no route to {request.url.host}"
        return await target.handle_async_request(request)


class ThroughTestClient(httpx.AsyncBaseTransport):
    """Sends to an app that runs in its own TestClient loop (its lifespan opened its stores)."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()

        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in {"host", "content-length"}
        }

        def send() -> tuple[int, list[tuple[str, str]], bytes]:
            response = self.client.request(
                request.method,
                str(request.url),
                headers=headers,
                content=body,
                follow_redirects=False,
            )
            return response.status_code, list(response.headers.items()), response.content

        status, answer_headers, content = await anyio.to_thread.run_sync(send)
        kept = [(k, v) for k, v in answer_headers if k.lower() != "content-length"]
        return httpx.Response(status, headers=kept, content=content)


@dataclass
class Federation:
    settings: Settings
    idp: TestClient
    idp_url: str
    rp_transport: Router
    master_jwks: dict[str, Any]
    tmp: Path

    def rp_app(self, *, pinned_master: bool = True, **overrides: Any) -> Starlette:
        config = DemoRpConfig(
            base_url=RP,
            idp_url=self.idp_url,
            fedmaster_url=MASTER,
            data_dir=self.tmp / "demo-rp",
            fedmaster_jwks=self.master_jwks if pinned_master else None,
            **overrides,
        )
        return create_demo_rp_app(config, production=False, transport=self.rp_transport)

    def wallet(self, row: dict[str, str]) -> WalletClient:
        card = TestEgkCa.create(self.settings.data_dir / EGK_TEST_CA_DIR).issue_card(
            row["kvnr"], row["ik"], row["given_name"], row["family_name"]
        )
        wallet = WalletClient(
            self.idp_url, self.tmp / f"w-{row['kvnr']}", http=self.idp, development=True
        )
        wallet.enroll_with_egk(card)
        return wallet


def import_synthetic_registry(settings: Settings) -> None:
    stack_testlib.import_synthetic_registry(settings, 4, seed=23)


@pytest.fixture(params=["embedded", "postgres+redis"])
def federation(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Federation]:
    for name in list(os.environ):
        if name.startswith("HEALTHID_"):
            monkeypatch.delenv(name)
    services: dict[str, object] = {}
    if request.param == "postgres+redis":
        services = {
            "database_url": request.getfixturevalue("pg_url"),
            "redis_url": request.getfixturevalue("redis_url"),
            "redis_prefix": request.getfixturevalue("redis_prefix"),
        }
    settings = load_settings(
        data_dir=tmp_path / "idp",
        enclave_workers=1,
        trusted_proxies=["testclient", "127.0.0.1"],
        fedmaster_url=MASTER,
        **services,
    )
    import_synthetic_registry(settings)
    idp_url = settings.public_url.rstrip("/")
    master_key = ec.generate_private_key(ec.SECP256R1())
    rp_keys = load_or_create_rp_keys(tmp_path / "demo-rp", common_name="rp.example")

    # The IdP registers the RP through the real registry: master → RP entity configuration.
    registry_router = Router()
    fetcher = GuardedFetcher(development=True, transport=registry_router)
    registry_store = open_ephemeral_store(settings.redis_url, prefix=settings.redis_prefix)
    registry = RelyingPartyRegistry(
        fetcher,
        registry_store,
        master_entity_id=MASTER,
        master_jwks=master_public_jwks(master_key),
        clock=time.time,
    )
    with TestClient(build_app(settings, resolver=registry)) as idp:
        idp_jwks = verify_entity_statement(
            idp.get(f"{idp_url}/.well-known/openid-federation").text,
            jwks=_self_jwks(idp, idp_url),
            now=int(time.time()),
        ).jwks
        assert idp_jwks is not None
        master = create_fedmaster_app(
            FedmasterConfig(
                entity_id=MASTER,
                members=(
                    Member(
                        entity_id=RP,
                        jwks=rp_keys.federation_jwks(),
                        metadata={
                            "openid_relying_party": {"client_registration_types": ["automatic"]}
                        },
                    ),
                    Member(entity_id=idp_url, jwks=dict(idp_jwks)),
                ),
            ),
            signing_key=master_key,
            production=False,
        )
        master_transport = httpx.ASGITransport(app=master)
        registry_router.hosts["fedmaster.test"] = master_transport
        rp_transport = Router(default=ThroughTestClient(idp))
        rp_transport.hosts["fedmaster.test"] = master_transport
        fed = Federation(
            settings=settings,
            idp=idp,
            idp_url=idp_url,
            rp_transport=rp_transport,
            master_jwks=master_public_jwks(master_key),
            tmp=tmp_path,
        )
        rp_app = fed.rp_app()
        registry_router.hosts["rp.example"] = httpx.ASGITransport(app=rp_app)
        yield fed
        idp.portal.call(registry_store.aclose)  # type: ignore[union-attr]  # on the app's loop


def _self_jwks(idp: TestClient, idp_url: str) -> dict[str, Any]:
    token = idp.get(f"{idp_url}/.well-known/openid-federation").text
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=="))["jwks"])


def headless_login(rp: TestClient, wallet: WalletClient) -> str:
    """``/login?format=url`` → the CLI wallet's consent → the redirect back to the RP."""
    answer = rp.get("/login", params={"format": "url"})
    assert answer.status_code == 200, answer.text
    url = answer.text.strip()
    assert urlsplit(url).path == "/auth" and set(parse_qs(urlsplit(url).query)) == {
        "client_id",
        "request_uri",
    }
    return wallet.authorize(url)


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()} | changes
    return urlunsplit(parts._replace(query=urlencode(query)))


# -- the whole flow -----------------------------------------------------------------------------
def test_headless_login_through_the_federation_shows_the_kvnr(federation: Federation) -> None:
    person = ROWS[0]
    wallet = federation.wallet(person)
    with TestClient(federation.rp_app(), base_url=RP) as rp:
        redirect = headless_login(rp, wallet)
        assert redirect.startswith(f"{RP}/callback?")
        page = rp.get(redirect)
    assert page.status_code == 200, page.text
    assert person["kvnr"] in page.text
    assert "urn:telematik:claims:id" in page.text and "federation master" in page.text
    assert page.headers["referrer-policy"] == "no-referrer"
    assert "default-src 'none'" in page.headers["content-security-policy"]


def test_browser_login_is_bound_to_its_cookie(federation: Federation) -> None:
    person = ROWS[1]
    wallet = federation.wallet(person)
    app = federation.rp_app()
    with TestClient(app, base_url=RP, follow_redirects=False) as rp:
        start = rp.get("/login")
        assert start.status_code == 303
        cookie = start.headers["set-cookie"]
        assert COOKIE_NAME in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
        assert "Secure" in cookie and "Max-Age=600" in cookie
        redirect = wallet.authorize(start.headers["location"])
        page = rp.get(redirect)
        assert page.status_code == 200, page.text
        assert person["kvnr"] in page.text

        # login CSRF: a callback for someone else's browser login is refused
        other = rp.get("/login")
        stolen = wallet.authorize(other.headers["location"])
        refused = TestClient(app, base_url=RP).get(stolen)  # another browser: no cookie
    assert refused.status_code == 400 and "another browser" in refused.text


def test_trust_on_first_use_mode_says_so_and_still_logs_in(federation: Federation) -> None:
    wallet = federation.wallet(ROWS[2])
    with TestClient(federation.rp_app(pinned_master=False), base_url=RP) as rp:
        assert "trust on first use" in rp.get("/").text
        assert "Mit GesundheitsID anmelden" in rp.get("/").text
        page = rp.get(headless_login(rp, wallet))
    assert page.status_code == 200 and ROWS[2]["kvnr"] in page.text
    assert "trust on first use" in page.text


# -- refusals -----------------------------------------------------------------------------------
def test_callback_with_a_wrong_state_is_refused(federation: Federation) -> None:
    wallet = federation.wallet(ROWS[3])
    with TestClient(federation.rp_app(), base_url=RP) as rp:
        redirect = headless_login(rp, wallet)
        page = rp.get(with_query(redirect, state="not-the-state"))
    assert page.status_code == 400 and "unknown, expired or already used state" in page.text
    assert ROWS[3]["kvnr"] not in page.text


def test_replayed_callback_is_refused(federation: Federation) -> None:
    wallet = federation.wallet(ROWS[0])
    with TestClient(federation.rp_app(), base_url=RP) as rp:
        redirect = headless_login(rp, wallet)
        assert rp.get(redirect).status_code == 200
        again = rp.get(redirect)
    assert again.status_code == 400 and "already used state" in again.text


def test_idp_error_redirect_is_rendered_escaped(federation: Federation) -> None:
    with TestClient(federation.rp_app(), base_url=RP) as rp:
        page = rp.get(
            "/callback",
            params={"error": "access_denied", "error_description": "<script>x</script>"},
        )
    assert page.status_code == 400 and "access_denied" in page.text
    assert "<script>" not in page.text and "&lt;script&gt;" in page.text


def test_idp_not_vouched_for_by_the_pinned_master_is_refused(federation: Federation) -> None:
    other_master = master_public_jwks(ec.generate_private_key(ec.SECP256R1()))
    config = DemoRpConfig(
        base_url=RP,
        idp_url=federation.idp_url,
        fedmaster_url=MASTER,
        data_dir=federation.tmp / "demo-rp",
        fedmaster_jwks=other_master,
    )
    app = create_demo_rp_app(config, production=False, transport=federation.rp_transport)
    with TestClient(app, base_url=RP) as rp:
        answer = rp.get("/login", params={"format": "url"})
    assert answer.status_code == 400 and "master's configuration is refused" in answer.text


def test_demo_rp_refuses_production(tmp_path: Path) -> None:
    config = DemoRpConfig(
        base_url=RP, idp_url="http://127.0.0.1:8080", fedmaster_url=MASTER, data_dir=tmp_path
    )
    with pytest.raises(DemoRpRefused):
        create_demo_rp_app(config, production=True)
    assert not any(tmp_path.iterdir())  # no key was created either


# -- the RP's entity configuration and keys -----------------------------------------------------
def test_entity_configuration_is_what_automatic_registration_needs(tmp_path: Path) -> None:
    config = DemoRpConfig(
        base_url=RP, idp_url="http://127.0.0.1:8080", fedmaster_url=MASTER, data_dir=tmp_path
    )
    with TestClient(create_demo_rp_app(config, production=False), base_url=RP) as rp:
        answer = rp.get("/.well-known/openid-federation")
    assert answer.headers["content-type"].startswith("application/entity-statement+jwt")
    keys = load_or_create_rp_keys(tmp_path, common_name="rp.example")
    now = int(time.time())
    statement = verify_entity_statement(answer.text, jwks=keys.federation_jwks(), now=now)
    assert statement.iss == statement.sub == RP and statement.authority_hints == (MASTER,)
    assert statement.exp - statement.iat == 24 * 60 * 60
    rp_meta = statement.metadata["openid_relying_party"]
    assert rp_meta["client_registration_types"] == ["automatic"]
    assert rp_meta["redirect_uris"] == [f"{RP}/callback"]
    assert rp_meta["token_endpoint_auth_method"] == "self_signed_tls_client_auth"
    assert rp_meta["ti_features_supported"] == {"id_token_version_supported": ["1.0.0", "2.0.0"]}
    assert {"openid", "urn:telematik:versicherter"} <= set(rp_meta["scope"].split())
    assert {k["kid"]: k["use"] for k in rp_meta["jwks"]["keys"]} == {
        "puk_tls_sig": "sig",
        "puk_fd_enc": "enc",
    }
    assert {"name", "contacts", "homepage_uri"} <= set(statement.metadata["federation_entity"])

    # and the IdP's pure resolver accepts it, with the TLS certificate and the enc key
    master_key = ec.generate_private_key(ec.SECP256R1())
    subordinate = sign_subordinate_statement(
        master_entity_id=MASTER,
        subject=RP,
        subject_jwks=keys.federation_jwks(),
        metadata={"openid_relying_party": {"client_registration_types": ["automatic"]}},
        now=now,
        signer=es256(master_key),
    )
    resolved = resolve_relying_party(
        client_id=RP,
        entity_configuration=answer.text,
        subordinate_statement=subordinate,
        master_entity_id=MASTER,
        master_jwks=master_public_jwks(master_key),
        now=now,
    )
    from cryptography.hazmat.primitives import serialization

    der = keys.tls_certificate.public_bytes(serialization.Encoding.DER)
    assert resolved.keys.tls_certificates == (der,)
    assert resolved.keys.encryption_jwk is not None
    assert resolved.keys.encryption_jwk["kid"] == "puk_fd_enc"


def test_key_files_are_test_only_private_and_stable(tmp_path: Path) -> None:
    first = load_or_create_rp_keys(tmp_path, common_name="rp.example")
    for name in (SIG_KEY_FILE, TLS_KEY_FILE, TLS_CERT_FILE, ENC_KEY_FILE):
        assert "TEST-ONLY" in name
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    assert b"TEST-ONLY" in (tmp_path / SIG_KEY_FILE).read_bytes()
    again = load_or_create_rp_keys(tmp_path, common_name="rp.example")
    assert again.federation_jwks() == first.federation_jwks()
    assert again.relying_party_jwks() == first.relying_party_jwks()
    (tmp_path / ENC_KEY_FILE).chmod(0o644)
    with pytest.raises(DemoRpKeyError, match="chmod 600"):
        load_or_create_rp_keys(tmp_path, common_name="rp.example")


# -- spec §2 step 8 on hand-made tokens -----------------------------------------------------------
ISSUER = "https://idp.example"


@pytest.fixture
def token_parts(tmp_path: Path) -> tuple[Any, ec.EllipticCurvePrivateKey, dict[str, Any]]:
    keys = load_or_create_rp_keys(tmp_path, common_name="rp.example")
    idp_key = ec.generate_private_key(ec.SECP256R1())
    jwks = {"keys": [public_jwk(idp_key.public_key(), kid="puk_fed_idp_token", use="sig")]}
    return keys, idp_key, jwks


def issue(keys: Any, idp_key: ec.EllipticCurvePrivateKey, **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": RP, "nonce": "n-1", "iat": now, "exp": now + 300, **claims}
    body = {k: v for k, v in body.items() if v is not None}
    signed = sign_compact(body, kid="puk_fed_idp_token", typ=TYP_ID_TOKEN, signer=es256(idp_key))
    enc = public_jwk(keys.encryption_key.public_key(), kid="puk_fd_enc", use="enc")
    return encrypt_id_token(signed, recipient_jwk=enc)


def check(keys: Any, jwks: dict[str, Any], token: str) -> Any:
    return verify_id_token(
        token,
        encryption_key=keys.encryption_key,
        token_jwks=jwks,
        issuer=ISSUER,
        client_id=RP,
        nonce="n-1",
        now=int(time.time()),
    )


def test_id_token_checks_accept_a_good_token(token_parts: Any) -> None:
    keys, idp_key, jwks = token_parts
    assert check(keys, jwks, issue(keys, idp_key, sub="s"))["sub"] == "s"


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"aud": "https://other.example"}, "another audience"),
        ({"aud": [RP, "https://other.example"]}, "another audience"),
        ({"iss": "https://evil.example"}, "another issuer"),
        ({"nonce": "n-2"}, "nonce does not match"),
        ({"nonce": None}, "nonce does not match"),
        ({"exp": int(time.time()) - 3600}, "expired"),
    ],
)
def test_id_token_for_another_audience_issuer_nonce_or_time_is_refused(
    token_parts: Any, claims: dict[str, Any], reason: str
) -> None:
    keys, idp_key, jwks = token_parts
    with pytest.raises(DemoRpError, match=reason):
        check(keys, jwks, issue(keys, idp_key, **claims))


def test_id_token_signed_by_a_key_outside_the_signed_jwks_is_refused(token_parts: Any) -> None:
    keys, _, jwks = token_parts
    forger = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(DemoRpError, match="does not verify"):
        check(keys, jwks, issue(keys, forger))
