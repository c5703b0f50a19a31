"""What the fault tests (security checklist §B5) share: a federation master and its relying
parties on a REAL loopback HTTP server that can misbehave on request, the IdP's automatic
registration wired to it with an injected clock, and the browser-less login flow.

The relying party's side of the flow uses the demo RP's pure functions
(:mod:`healthid.demo.rp_protocol`) with its own ``now``, so a test can give every party its
own clock.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.testclient import TestClient

from healthid.demo.egk_test_ca import TestEgkCa
from healthid.demo.rp_keys import DemoRpKeys
from healthid.demo.rp_protocol import (
    IdpMetadata,
    callback_url,
    entity_configuration_claims,
    idp_metadata,
    sign_rp_entity_configuration,
    verify_id_token,
    verify_idp_first_use,
    verify_signed_jwks,
)
from healthid.host.fetch import CONTENT_TYPE_ENTITY_STATEMENT, GuardedFetcher
from healthid.host.relying_parties import RelyingPartyRegistry, deserialise_relying_party
from healthid.keys import es256
from healthid.protocol.federation import sign_subordinate_statement
from healthid.protocol.federation.statements import sign_entity_statement
from healthid.protocol.jose import decrypt_id_token, public_jwk
from healthid.protocol.jose.jws import read_header
from healthid.runtime import EGK_TEST_CA_DIR, build_app
from healthid.settings import Settings, load_settings
from healthid.store.ephemeral import MemoryEphemeralStore
from healthid.wallet.client import WalletClient
from rp_testlib import REDIRECT, RP, SCOPES, FakeRp, par_form

IDP = "http://testserver"
FETCH_PATH = "/federation/fetch"
WELL_KNOWN = "/.well-known/openid-federation"
MASTER_KID = "puk_fedmaster_sig"
# A misbehaving handler never holds its thread longer than this (bounded waits).
HOLD_SECONDS = 20.0
# A "huge" answer stops here even if the IdP kept reading (it must stop at 128 KiB).
HUGE_SERVER_LIMIT = 16 * 1024 * 1024
HUGE_CHUNK = 64 * 1024


# -- the login flow -------------------------------------------------------------------------


def enrolled_wallet(
    client: TestClient, settings: Settings, directory: Path, row: dict[str, str]
) -> WalletClient:
    """A wallet enrolled with the test eGK of ``row`` (its state lives in ``directory``)."""
    card = TestEgkCa.create(settings.data_dir / EGK_TEST_CA_DIR).issue_card(
        row["kvnr"], row["ik"], row["given_name"], row["family_name"]
    )
    wallet = WalletClient(IDP, directory, http=client, development=True)
    wallet.enroll_with_egk(card)
    return wallet


def push(client: TestClient, rp: FakeRp, challenge: str, **form: str) -> tuple[int, dict[str, Any]]:
    """The RP's PAR: ``(status, JSON body)``."""
    answer = client.post(
        f"{IDP}/PAR_Auth", data=par_form(challenge, **form), headers=rp.cert_header()
    )
    return answer.status_code, answer.json()


def consent(
    client: TestClient, wallet: WalletClient, request_uri: str, *, client_id: str = RP
) -> tuple[int, dict[str, Any]]:
    """The insurer app's fresh device login and consent: ``(status, JSON body)``."""
    session = wallet.login().session
    answer = client.post(
        f"{IDP}/wallet/v1/authorizations",
        json={
            "client_id": client_id,
            "request_uri": request_uri,
            "selected_claims": ["urn:telematik:claims:id"],
        },
        headers={"Authorization": f"Bearer {session}"},
    )
    return answer.status_code, answer.json()


def code_of(redirect: str) -> str:
    query = parse_qs(urlsplit(redirect).query)
    assert "error" not in query, query
    return query["code"][0]


def redeem(
    client: TestClient,
    rp: FakeRp,
    code: str,
    verifier: str,
    *,
    client_id: str = RP,
    redirect_uri: str = REDIRECT,
) -> tuple[int, dict[str, Any]]:
    """The RP's token request: ``(status, JSON body)``."""
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": verifier,
        "client_id": client_id,
        "redirect_uri": redirect_uri,
    }
    answer = client.post(f"{IDP}/token", data=form, headers=rp.cert_header())
    return answer.status_code, answer.json()


# -- the relying party's view of the IdP ----------------------------------------------------
@dataclass(frozen=True)
class RpView:
    """What a relying party fetched of the IdP at one moment of ITS clock."""

    idp: IdpMetadata
    token_jwks: dict[str, Any]
    entity_configuration: str
    signed_jwks: str

    @property
    def token_kids(self) -> list[str]:
        """The ID-token keys (those with a certificate chain), in published order."""
        return [k["kid"] for k in self.token_jwks["keys"] if "x5c" in k]

    @property
    def kids(self) -> list[str]:
        return [k["kid"] for k in self.token_jwks["keys"]]


def rp_reads_idp(entity_configuration: str, signed_jwks: str, *, issuer: str, now: int) -> RpView:
    """The RP's step 8 preparation: the IdP's entity configuration and its signed JWKS, each
    verified as the demo RP does, at the RP's ``now``."""
    statement = verify_idp_first_use(
        entity_configuration, idp_entity_id=issuer, pinned_jwks=None, now=now
    )
    idp = idp_metadata(statement, trust="trust on first use")
    jwks = verify_signed_jwks(signed_jwks, idp=idp, now=now)
    return RpView(
        idp=idp,
        token_jwks=jwks,
        entity_configuration=entity_configuration,
        signed_jwks=signed_jwks,
    )


def rp_fetches_idp(client: TestClient, settings: Settings, *, now: int) -> RpView:
    """:func:`rp_reads_idp` of what the IdP app serves now."""
    configuration = client.get(f"{IDP}/.well-known/openid-federation")
    assert configuration.status_code == 200, configuration.text
    signed = client.get(f"{IDP}/jws.json")
    assert signed.status_code == 200, signed.text
    return rp_reads_idp(
        configuration.text, signed.text, issuer=settings.public_url.rstrip("/"), now=now
    )


def rp_accepts(
    view: RpView,
    id_token: str,
    rp: FakeRp,
    *,
    now: int,
    client_id: str = RP,
    nonce: str = "n-456",
) -> dict[str, Any]:
    """The RP's checks of spec §2 step 8 at ITS ``now``: decrypt, verify with the signed JWKS
    it fetched, then iss, aud, nonce, exp and iat (DemoRpError if any fails)."""
    claims = verify_id_token(
        id_token,
        encryption_key=rp.enc_key,
        token_jwks=view.token_jwks,
        issuer=view.idp.issuer,
        client_id=client_id,
        nonce=nonce,
        now=now,
    )
    return dict(claims)


def signing_kid(id_token: str, rp: FakeRp) -> str:
    """The kid the (encrypted) ID token was signed with."""
    return str(read_header(decrypt_id_token(id_token, private_key=rp.enc_key))["kid"])


# -- a federation on a real loopback HTTP server --------------------------------------------
@dataclass
class Member:
    client_id: str
    rp: FakeRp
    keys: DemoRpKeys
    clock: Callable[[], float] | None = None  # the RP's own clock; default: the federation's


@dataclass
class LoopbackFederation:
    """A federation master (at the server's root) and RPs (at ``/rp/<name>``), served by a
    threaded HTTP server on 127.0.0.1. ``clock`` is the federation's clock (its statements'
    ``iat``). ``behaviour[key]`` makes one answer misbehave; ``key`` is the request path, or
    ``FETCH_PATH + ":" + sub`` for the master's statement about ``sub``:

    - ``slow``: nothing is sent until :meth:`release` (or :data:`HOLD_SECONDS`);
    - ``slowloris``: the headers, then one byte of body every 0.2 s;
    - ``huge``: a body without Content-Length that never ends (stops at HUGE_SERVER_LIMIT);
    - ``huge_declared``: a Content-Length of 64 MiB, then the same endless body;
    - ``redirect``: 302 to ``/moved<path>``, which serves the genuine statement.
    """

    clock: Callable[[], float] = time.time
    behaviour: dict[str, str] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)
    arrived: dict[str, threading.Event] = field(default_factory=dict)
    members: dict[str, Member] = field(default_factory=dict)
    master_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    huge_bytes_sent: int = 0

    def __post_init__(self) -> None:
        self._released = threading.Event()
        federation = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                federation._serve(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    # -- set-up -----------------------------------------------------------------------------
    @property
    def master_jwks(self) -> dict[str, Any]:
        return {"keys": [public_jwk(self.master_key.public_key(), kid=MASTER_KID, use="sig")]}

    def add_rp(self, name: str, rp: FakeRp, *, clock: Callable[[], float] | None = None) -> str:
        """A member RP with ``rp``'s TLS certificate and encryption key (and its own
        ``clock`` for its entity configuration, if given); its client_id."""
        client_id = f"{self.url}/rp/{name}"
        keys = DemoRpKeys(
            signing_key=ec.generate_private_key(ec.SECP256R1()),
            tls_key=rp.tls_key,
            tls_certificate=rp.tls_cert,
            encryption_key=rp.enc_key,
        )
        self.members[client_id] = Member(client_id=client_id, rp=rp, keys=keys, clock=clock)
        return client_id

    def arrival(self, key: str) -> threading.Event:
        return self.arrived.setdefault(key, threading.Event())

    def release(self) -> None:
        self._released.set()

    def close(self) -> None:
        self.release()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    # -- the statements -----------------------------------------------------------------------
    def _now(self) -> int:
        return int(self.clock())

    def _sign_master(self, kid: str, data: bytes) -> bytes:
        assert kid == MASTER_KID
        return es256.sign(self.master_key, data)

    def master_configuration(self) -> str:
        now = self._now()
        claims = {
            "iss": self.url,
            "sub": self.url,
            "iat": now,
            "exp": now + 86400,
            "jwks": self.master_jwks,
            "metadata": {"federation_entity": {"federation_fetch_endpoint": self.url + FETCH_PATH}},
        }
        return sign_entity_statement(claims, kid=MASTER_KID, signer=self._sign_master)

    def subordinate(self, member: Member) -> str:
        return sign_subordinate_statement(
            master_entity_id=self.url,
            subject=member.client_id,
            subject_jwks=member.keys.federation_jwks(),
            metadata={"openid_relying_party": {"client_registration_types": ["automatic"]}},
            now=self._now(),
            signer=self._sign_master,
            kid=MASTER_KID,
        )

    def rp_configuration(self, member: Member) -> str:
        claims = entity_configuration_claims(
            entity_id=member.client_id,
            fedmaster_url=self.url,
            keys=member.keys,
            scopes=SCOPES.split(),
            organization_name="fault-test RP",
            contacts=["ops@rp.example"],
            now=int((member.clock or self.clock)()),
        )
        return sign_rp_entity_configuration(claims, keys=member.keys)

    # -- serving ------------------------------------------------------------------------------
    def _document(self, path: str, query: dict[str, list[str]]) -> tuple[str, str | None]:
        """``(behaviour key, statement or None for 404)`` of a GET."""
        if path == WELL_KNOWN:
            return path, self.master_configuration()
        if path == FETCH_PATH:
            sub = query.get("sub", [""])[0]
            member = self.members.get(sub)
            if query.get("iss") != [self.url] or member is None:
                return f"{path}:{sub}", None
            return f"{path}:{sub}", self.subordinate(member)
        if path.startswith("/rp/") and path.endswith(WELL_KNOWN):
            member = self.members.get(self.url + path.removesuffix(WELL_KNOWN))
            return path, None if member is None else self.rp_configuration(member)
        return path, None

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        moved = parts.path.startswith("/moved/")
        path = parts.path.removeprefix("/moved") if moved else parts.path
        key, document = self._document(path, parse_qs(parts.query))
        self.hits[key] += 1
        self.arrival(key).set()
        behaviour = "ok" if moved else self.behaviour.get(key, "ok")
        if document is None:
            handler.send_response(400 if path == FETCH_PATH else 404)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        try:
            self._answer(handler, behaviour, document)
        except OSError:
            pass  # the IdP hung up: what a guarded fetcher does to a bad answer

    def _answer(self, handler: BaseHTTPRequestHandler, behaviour: str, document: str) -> None:
        body = document.encode()
        if behaviour == "slow":
            self._released.wait(HOLD_SECONDS)
        if behaviour == "redirect":
            handler.send_response(302)
            handler.send_header("Location", f"{self.url}/moved{handler.path}")
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        handler.send_response(200)
        handler.send_header("Content-Type", f"{CONTENT_TYPE_ENTITY_STATEMENT};charset=UTF-8")
        if behaviour == "huge_declared":
            handler.send_header("Content-Length", str(64 * 1024 * 1024))
        elif behaviour not in {"huge", "slowloris"}:
            handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if behaviour == "slowloris":
            deadline = time.monotonic() + HOLD_SECONDS
            for byte in body:
                if self._released.is_set() or time.monotonic() > deadline:
                    return
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
                time.sleep(0.2)
            return
        if behaviour in {"huge", "huge_declared"}:
            chunk = b"x" * HUGE_CHUNK
            while self.huge_bytes_sent < HUGE_SERVER_LIMIT and not self._released.is_set():
                handler.wfile.write(chunk)
                self.huge_bytes_sent += len(chunk)
            return
        handler.wfile.write(body)


@contextmanager
def loopback_federation(clock: Callable[[], float] = time.time) -> Iterator[LoopbackFederation]:
    federation = LoopbackFederation(clock=clock)
    try:
        yield federation
    finally:
        federation.close()


class RecordingStore(MemoryEphemeralStore):
    """The registry's cache, remembering every value it was given (to prove what was cached)."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[tuple[str, bytes]] = []

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        self.written.append((key, value))
        await super().put(key, value, ttl)

    def cached_as_valid(self, client_id: str) -> bool:
        """Whether a resolved registration of ``client_id`` was ever written to the cache."""
        for _key, value in self.written:
            rp = deserialise_relying_party(value)
            if rp is not None and rp.client_id == client_id:
                return True
        return False


def federation_registry(
    federation: LoopbackFederation, *, clock: Callable[[], float] = time.time
) -> tuple[RelyingPartyRegistry, GuardedFetcher, RecordingStore]:
    """The IdP's automatic registration against ``federation`` (development fetcher: http on
    loopback), with OUR ``clock``; close the fetcher when done."""
    fetcher = GuardedFetcher(development=True)
    store = RecordingStore()
    registry = RelyingPartyRegistry(
        fetcher,
        store,
        master_entity_id=federation.url,
        master_jwks=federation.master_jwks,
        clock=clock,
    )
    return registry, fetcher, store


class FederatedIdp:
    """The IdP app (embedded stack) registering RPs through ``federation`` with OUR ``clock``;
    ``cache`` is its registry's cache. A context manager around its TestClient."""

    def __init__(
        self,
        settings: Settings,
        federation: LoopbackFederation,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry, self.fetcher, self.cache = federation_registry(federation, clock=clock)
        self.client = TestClient(build_app(settings, resolver=self.registry), base_url=IDP)

    def __enter__(self) -> FederatedIdp:
        self.client.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self.client.portal is not None
        self.client.portal.call(self.fetcher.aclose)
        self.client.__exit__(*exc)


def embedded_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The embedded stack's settings (no HEALTHID_* from outside), trusting the test client
    as the TLS terminator that forwards the RP's certificate."""
    for name in list(os.environ):
        if name.startswith("HEALTHID_"):
            monkeypatch.delenv(name)
    return load_settings(
        data_dir=tmp_path / "data", enclave_workers=1, trusted_proxies=["testclient"]
    )


def member_form(federation: LoopbackFederation, client_id: str) -> dict[str, str]:
    """The client_id and redirect_uri a member RP sends in its PAR and token requests."""
    assert client_id in federation.members
    return {"client_id": client_id, "redirect_uri": callback_url(client_id)}
