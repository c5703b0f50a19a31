"""deploy/nginx/healthid.conf.template with the real nginx in front of the real IdP (issue #4
item 8): TLS on the public host, mTLS with self-signed RP certificates on the PAR/token host,
the client certificate forwarded in X-SSL-CERT — and never one a client wrote itself.

The RP's trust chain is resolved by a stub (as in tests/host/test_oidc_flow.py); nginx, uvicorn,
the IdP and the wallet are real and talk over loopback TLS. Clients connect from 127.0.0.2, so
the IdP's trusted proxy (127.0.0.1, nginx) is a different address than any client.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from nginx_testlib import (
    CLIENT_ADDRESS,
    LOOPBACK,
    NginxFront,
    Pki,
    SelfSignedClient,
    free_port,
    make_pki,
    make_self_signed_client,
    nginx_binary,
    nginx_front,
    serve_on_loopback,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from healthid.demo.egk_test_ca import TestEgkCa
from healthid.demo.synthetic import synthetic_rows
from healthid.protocol.federation import ResolvedRelyingParty
from healthid.protocol.jose import decrypt_id_token
from healthid.runtime import EGK_TEST_CA_DIR, build_app
from healthid.settings import Settings, load_settings
from healthid.wallet.client import WalletClient
from rp_testlib import REDIRECT, RP, StubResolver, par_form, pkce, resolved_rp
from stack_testlib import import_synthetic_registry

ROWS = list(synthetic_rows(4, seed=29))
SCOPES = "openid urn:telematik:versicherter urn:telematik:display_name"
HTTP_TIMEOUT = 30.0


class FakeRp:
    """A relying party: its self-signed TLS client certificate and its encryption key."""

    def __init__(self, directory: Path) -> None:
        self.tls: SelfSignedClient = make_self_signed_client(directory, "rp.example")
        self.enc_key = ec.generate_private_key(ec.SECP256R1())

    def resolved(self) -> ResolvedRelyingParty:
        return resolved_rp(
            tls_certificates=[self.tls.cert], encryption_key=self.enc_key, scopes=SCOPES.split()
        )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    nginx_binary()  # skip (or fail in CI) before any work when nginx is missing
    return make_pki(tmp_path_factory.mktemp("pki"))


@dataclass(frozen=True, kw_only=True)
class Stack:
    front: NginxFront
    settings: Settings
    pki: Pki
    rp: FakeRp
    stranger: SelfSignedClient  # a self-signed certificate no RP registered


def https(pki: Pki, client: SelfSignedClient | None = None) -> httpx.Client:
    """An httpx client over real TLS from 127.0.0.2: verifies nginx against the test CA and
    presents ``client``'s certificate when asked."""
    ctx = pki.client_context(
        cert=client.cert_path if client else None, key=client.key_path if client else None
    )
    transport = httpx.HTTPTransport(verify=ctx, local_address=CLIENT_ADDRESS)
    return httpx.Client(transport=transport, timeout=HTTP_TIMEOUT)


def pem_header(cert: x509.Certificate) -> str:
    return quote(cert.public_bytes(serialization.Encoding.PEM).decode())


def _import_registry(settings: Settings) -> None:
    import_synthetic_registry(settings, 4, seed=29)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Stack]:
    """nginx (rendered template) -> uvicorn -> the IdP, once for this module."""
    tmp = tmp_path_factory.mktemp("idp")
    rp = FakeRp(tmp / "rp")
    stranger = make_self_signed_client(tmp / "stranger", "stranger.example")
    upstream_port = free_port()
    with pytest.MonkeyPatch.context() as mp, ExitStack() as stop:
        for name in list(os.environ):
            if name.startswith("HEALTHID_"):
                mp.delenv(name)
        front = stop.enter_context(nginx_front(tmp / "nginx", pki, upstream_port))
        settings = load_settings(
            data_dir=tmp / "data",
            enclave_workers=1,
            trusted_proxies=[LOOPBACK],
            public_url=front.public_url,
            mtls_public_url=front.mtls_url,
        )
        _import_registry(settings)
        app = build_app(settings, resolver=StubResolver(rp))
        stop.enter_context(serve_on_loopback(app, upstream_port))
        yield Stack(front=front, settings=settings, pki=pki, rp=rp, stranger=stranger)


def push(stack: Stack, client: SelfSignedClient | None, **headers: str) -> httpx.Response:
    _, challenge = pkce()
    with https(stack.pki, client) as http:
        return http.post(
            f"{stack.front.mtls_url}/PAR_Auth",
            data=par_form(challenge, state="st-nginx", nonce="n-nginx", scope=SCOPES),
            headers=headers,
        )


# --- PAR over mTLS --------------------------------------------------------------------------


def test_par_through_nginx_reaches_the_idp_with_the_rp_client_certificate(stack: Stack) -> None:
    resp = push(stack, stack.rp.tls)
    assert resp.status_code == 201, resp.text
    assert resp.json()["request_uri"] and resp.json()["expires_in"] == 90
    assert resp.http_version == "HTTP/1.1"  # real TLS (nginx), not the plain-HTTP upstream
    assert resp.headers["strict-transport-security"].startswith("max-age=")


def test_par_without_a_client_certificate_is_refused(stack: Stack) -> None:
    resp = push(stack, None)
    assert resp.status_code == 400, resp.text


def test_par_with_an_unregistered_client_certificate_is_unauthorized(stack: Stack) -> None:
    resp = push(stack, stack.stranger)
    assert resp.status_code == 401, resp.text
    assert resp.json()["error"] == "unauthorized_client"


def test_par_forged_x_ssl_cert_without_a_client_certificate_is_not_believed(
    stack: Stack,
) -> None:
    resp = push(stack, None, **{"X-SSL-CERT": pem_header(stack.rp.tls.cert)})
    assert resp.status_code == 400, resp.text


def test_par_forged_x_ssl_cert_beside_another_client_certificate_is_not_believed(
    stack: Stack,
) -> None:
    forged = pem_header(stack.rp.tls.cert)
    resp = push(stack, stack.stranger, **{"X-SSL-CERT": forged, "X_SSL_CERT": forged})
    assert resp.status_code == 401, resp.text
    assert resp.json()["error"] == "unauthorized_client"


def test_public_host_does_not_serve_par_or_token(stack: Stack) -> None:
    _, challenge = pkce()
    with https(stack.pki, stack.rp.tls) as http:
        headers = {"X-SSL-CERT": pem_header(stack.rp.tls.cert)}
        par = http.post(
            f"{stack.front.public_url}/PAR_Auth",
            data=par_form(challenge, state="st-nginx", nonce="n-nginx", scope=SCOPES),
            headers=headers,
        )
        token = http.post(f"{stack.front.public_url}/token", data={}, headers=headers)
        config = http.get(f"{stack.front.public_url}/.well-known/openid-federation")
        other = http.get(f"{stack.front.mtls_url}/.well-known/openid-federation")
    assert par.status_code == 404 and token.status_code == 404
    assert config.status_code == 200
    assert other.status_code == 404  # the mTLS host serves PAR and token only
    claims = json.loads(base64.urlsafe_b64decode(config.text.split(".")[1] + "=="))
    op = claims["metadata"]["openid_provider"]
    assert claims["iss"] == stack.front.public_url
    assert op["pushed_authorization_request_endpoint"] == f"{stack.front.mtls_url}/PAR_Auth"
    assert op["token_endpoint"] == f"{stack.front.mtls_url}/token"


# --- the whole flow through nginx -----------------------------------------------------------


def test_token_request_through_nginx_returns_an_id_token(stack: Stack, tmp_path: Path) -> None:
    person = ROWS[1]
    card = TestEgkCa.create(stack.settings.data_dir / EGK_TEST_CA_DIR).issue_card(
        person["kvnr"], person["ik"], person["given_name"], person["family_name"]
    )
    verifier, challenge = pkce()
    with https(stack.pki) as app_http, https(stack.pki, stack.rp.tls) as rp_http:
        wallet = WalletClient(
            stack.front.public_url, tmp_path / "wallet", http=app_http, development=True
        )
        wallet.enroll_with_egk(card)
        pushed = rp_http.post(
            f"{stack.front.mtls_url}/PAR_Auth",
            data=par_form(challenge, state="st-nginx", nonce="n-nginx", scope=SCOPES),
        )
        assert pushed.status_code == 201, pushed.text
        auth_url = (
            f"{stack.front.public_url}/auth?client_id={quote(RP, safe='')}"
            f"&request_uri={quote(pushed.json()['request_uri'], safe='')}"
        )
        location = wallet.authorize(auth_url, claims=["urn:telematik:claims:id"])
        query = parse_qs(urlsplit(location).query)
        assert location.startswith(REDIRECT) and query["state"] == ["st-nginx"]
        issued = rp_http.post(
            f"{stack.front.mtls_url}/token",
            data={
                "grant_type": "authorization_code",
                "code": query["code"][0],
                "code_verifier": verifier,
                "client_id": RP,
                "redirect_uri": REDIRECT,
            },
        )
    assert issued.status_code == 200, issued.text
    body = issued.json()
    assert body["token_type"] == "Bearer" and body["id_token"]
    inner = decrypt_id_token(body["id_token"], private_key=stack.rp.enc_key)
    token = json.loads(base64.urlsafe_b64decode(inner.split(".")[1] + "=="))
    assert token["aud"] == RP and token["nonce"] == "n-nginx"
    assert token["iss"] == stack.front.public_url
    assert token["urn:telematik:claims:id"] == person["kvnr"]


# --- what nginx sends upstream (an echo server instead of the IdP) --------------------------


async def _echo(request: Request) -> JSONResponse:
    raw = [[k.decode("latin1"), v.decode("latin1")] for k, v in request.scope["headers"]]
    peer = request.client.host if request.client else None
    return JSONResponse({"headers": raw, "peer": peer})


@pytest.fixture(scope="module")
def echo_front(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[NginxFront]:
    tmp = tmp_path_factory.mktemp("echo")
    port = free_port()
    app = Starlette(routes=[Route("/{path:path}", _echo, methods=["GET", "POST"])])
    with serve_on_loopback(app, port), nginx_front(tmp / "nginx", pki, port) as front:
        yield front


def _seen(resp: httpx.Response) -> tuple[dict[str, list[str]], Any]:
    assert resp.status_code == 200, resp.text
    seen: dict[str, list[str]] = {}
    for name, value in resp.json()["headers"]:
        seen.setdefault(name, []).append(value)
    return seen, resp.json()["peer"]


FORGED = {
    "X-Forwarded-For": "203.0.113.7",
    "X-Forwarded-Proto": "http",
    "Forwarded": "for=203.0.113.7;proto=http",
    "X-Real-IP": "203.0.113.7",
    "X_SSL_CERT": "forged",
}


def test_nginx_forwards_exactly_the_handshake_client_certificate(
    echo_front: NginxFront, pki: Pki, tmp_path: Path
) -> None:
    rp = make_self_signed_client(tmp_path, "rp.example")
    other = make_self_signed_client(tmp_path, "other.example")
    with https(pki, rp) as http:
        resp = http.post(
            f"{echo_front.mtls_url}/PAR_Auth",
            data={"a": "b"},
            headers={**FORGED, "X-SSL-CERT": pem_header(other.cert)},
        )
    seen, peer = _seen(resp)
    assert peer == LOOPBACK  # nginx is the IdP's peer
    assert len(seen["x-ssl-cert"]) == 1
    forwarded = x509.load_pem_x509_certificate(unquote(seen["x-ssl-cert"][0]).encode())
    assert forwarded == rp.cert
    assert seen["x-forwarded-for"] == [CLIENT_ADDRESS]
    assert seen["x-forwarded-proto"] == ["https"]
    assert "forwarded" not in seen and "x-real-ip" not in seen and "x_ssl_cert" not in seen


@pytest.mark.parametrize("host", ["public", "mtls"])
def test_nginx_never_passes_a_client_supplied_x_ssl_cert(
    echo_front: NginxFront, pki: Pki, tmp_path: Path, host: str
) -> None:
    rp = make_self_signed_client(tmp_path, "rp.example")
    headers = {**FORGED, "X-SSL-CERT": pem_header(rp.cert), "x-ssl-cert": "again"}
    with https(pki) as http:
        if host == "public":
            resp = http.get(f"{echo_front.public_url}/auth", headers=headers)
        else:
            resp = http.post(f"{echo_front.mtls_url}/token", data={}, headers=headers)
    seen, _ = _seen(resp)
    assert "x-ssl-cert" not in seen and "x_ssl_cert" not in seen
    assert seen["x-forwarded-for"] == [CLIENT_ADDRESS]
    assert seen["x-forwarded-proto"] == ["https"]


# --- TLS policy -----------------------------------------------------------------------------


def _handshake(url: str, ctx: ssl.SSLContext) -> str | None:
    parts = urlsplit(url)
    assert parts.hostname == LOOPBACK and parts.port
    with (
        socket.create_connection(
            (LOOPBACK, parts.port), timeout=HTTP_TIMEOUT, source_address=(CLIENT_ADDRESS, 0)
        ) as raw,
        ctx.wrap_socket(raw, server_hostname=LOOPBACK) as tls,
    ):
        return tls.version()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
@pytest.mark.parametrize("which", ["public", "mtls"])
def test_tls_below_1_2_and_non_aead_suites_are_refused(
    echo_front: NginxFront, pki: Pki, which: str
) -> None:
    url = echo_front.public_url if which == "public" else echo_front.mtls_url
    assert _handshake(url, pki.client_context()) in ("TLSv1.2", "TLSv1.3")

    tls12 = pki.client_context()
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    tls12.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
    assert _handshake(url, tls12) == "TLSv1.2"

    cbc = pki.client_context()
    cbc.maximum_version = ssl.TLSVersion.TLSv1_2
    cbc.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384:@SECLEVEL=0")
    with pytest.raises(ssl.SSLError):
        _handshake(url, cbc)

    # (Debian's OpenSSL 3 refuses TLS < 1.2 at its security level as well; the template
    # states the policy itself so that it holds under any OpenSSL configuration)
    old = pki.client_context()
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    old.minimum_version = ssl.TLSVersion.TLSv1
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError):
        _handshake(url, old)
