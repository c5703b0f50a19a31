"""What the end-to-end tests of issue #5 share: the enclave and the host as separate processes
on PostgreSQL + Redis, a small async driver of complete logins, and a search for personal data
in database dumps, Redis, logs and process memory.

Every wait is bounded; every process started here is stopped by its own id in a ``finally``
block; every address is loopback. Each stack gets a fresh database and a random Redis prefix,
both removed afterwards.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID
from e2e_host_app import RP_FILE_ENV, SCOPES, public_registration

from healthid.demo.egk_test_ca import TestCard, TestEgkCa
from healthid.demo.synthetic import FIELDS
from healthid.protocol import device_auth
from healthid.protocol.jose import decrypt_id_token, public_jwk, verify_compact
from healthid.protocol.jose.jws import TYP_ID_TOKEN, TYP_SIGNED_JWKS
from healthid.runtime import EGK_TEST_CA_DIR
from healthid.settings import Settings, load_settings
from healthid.wallet.client import KEY_FILE as WALLET_KEY_FILE
from healthid.wallet.client import WalletClient

E2E_DIR = Path(__file__).resolve().parent
LOOPBACK = "127.0.0.1"
ADMIN_DSN = os.environ.get(
    "HEALTHID_TEST_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("HEALTHID_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
READY_TIMEOUT = 90.0  # seconds for a process to serve (two shared, busy cores)
STOP_TIMEOUT = 20.0  # seconds for a clean shutdown before SIGKILL
HTTP_TIMEOUT = 60.0  # seconds per request of the flow driver
PG_DUMP_TIMEOUT = 60.0
WALLET_APP_ID = "de.healthid.wallet.dev"  # the development software attestation's app id
TEST_IK = "109500969"


def unavailable(what: str) -> None:
    """Skip, or fail with HEALTHID_REQUIRE_SERVICES=1 (the rule of tests/conftest.py)."""
    if os.environ.get("HEALTHID_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{what} is required (HEALTHID_REQUIRE_SERVICES=1) but unavailable")
    pytest.skip(f"{what} unavailable")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# -- relying parties ---------------------------------------------------------------------------
@dataclass(frozen=True)
class RelyingParty:
    """A test relying party: its mTLS certificate and the key its ID tokens are encrypted to."""

    client_id: str
    redirect_uri: str
    cert_pem: str
    enc_key: ec.EllipticCurvePrivateKey = field(repr=False)

    @classmethod
    def create(cls, client_id: str) -> RelyingParty:
        tls = ec.generate_private_key(ec.SECP256R1())
        host = urlsplit(client_id).hostname or "rp.example"
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(tls.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=1))
            .sign(tls, hashes.SHA256())
        )
        return cls(
            client_id=client_id,
            redirect_uri=f"{client_id}/callback",
            cert_pem=cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
            enc_key=ec.generate_private_key(ec.SECP256R1()),
        )

    def registration(self) -> dict[str, Any]:
        return public_registration(
            client_id=self.client_id,
            redirect_uri=self.redirect_uri,
            cert_pem=self.cert_pem,
            enc_jwk=dict(public_jwk(self.enc_key.public_key(), kid="puk_fd_enc", use="enc")),
        )

    @property
    def mtls(self) -> dict[str, str]:
        """The header the TLS terminator (a trusted proxy on loopback) would add."""
        return {"X-SSL-CERT": quote(self.cert_pem)}


# -- processes ---------------------------------------------------------------------------------
def clean_env(**values: str) -> dict[str, str]:
    """The environment of a child process: ours without any HEALTHID_*, plus ``values``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEALTHID_")}
    return env | values


def connectable(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _log_tail(path: Path, limit: int = 4000) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-limit:]
    except OSError:
        return ""


def start_process(
    argv: Sequence[str], *, env: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    """A fresh interpreter (nothing inherited from this process's memory), output to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            list(argv),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop_process(process: subprocess.Popen[bytes] | None) -> int | None:
    """SIGTERM, then SIGKILL after STOP_TIMEOUT; only this process (by its id)."""
    if process is None:
        return None
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait(STOP_TIMEOUT)


def wait_until(
    ready: Callable[[], bool],
    process: subprocess.Popen[bytes],
    what: str,
    log: Path,
    timeout: float,
) -> None:
    """Poll ``ready`` until it holds; fail early when ``process`` exits, or at ``timeout``."""
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited ({process.returncode}):\n{_log_tail(log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not become ready in {timeout} s:\n{_log_tail(log)}")
        time.sleep(0.1)


def _http_ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


# -- database and Redis ------------------------------------------------------------------------
async def _pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(ADMIN_DSN, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def create_database() -> tuple[str, str]:
    """A fresh database: (name, SQLAlchemy URL)."""
    name = f"healthid_e2e_{secrets.token_hex(5)}"
    try:
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    except (TimeoutError, OSError) as exc:
        unavailable(f"PostgreSQL at {ADMIN_DSN} ({exc})")
    base = ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    return name, f"{base}/{name}"


def drop_database(name: str) -> None:
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def database_connection(name: str) -> Any:
    """An asyncpg connection to database ``name`` (the operator's raw SQL access)."""
    import asyncpg

    return await asyncpg.connect(ADMIN_DSN.rsplit("/", 1)[0] + "/" + name, timeout=5)


def redis_client() -> Any:
    import redis

    return redis.Redis.from_url(REDIS_URL, socket_timeout=10)


def check_redis() -> None:
    import redis

    client = redis_client()
    try:
        client.ping()
    except (OSError, redis.ConnectionError) as exc:
        unavailable(f"Redis at {REDIS_URL} ({exc})")
    finally:
        client.close()


def delete_redis_prefix(prefix: str) -> None:
    client = redis_client()
    try:
        for key in client.scan_iter(match=f"{prefix}*", count=500):
            client.delete(key)
    finally:
        client.close()


def redis_contents(prefix: str) -> list[tuple[str, bytes]]:
    """Every key under ``prefix``: its name, its DUMP and its value read by type (DUMP may
    LZF-compress a string, so the plain value is read too)."""
    client = redis_client()
    out: list[tuple[str, bytes]] = []
    try:
        for key in client.scan_iter(match=f"{prefix}*", count=500):
            label = key.decode("utf-8", "replace")
            out.append((f"redis key name {label}", key))
            dumped = client.dump(key)
            if dumped is None:  # expired meanwhile
                continue
            out.append((f"redis DUMP {label}", dumped))
            kind = client.type(key).decode()
            parts: list[bytes] = []
            if kind == "string":
                parts = [client.get(key) or b""]
            elif kind == "hash":
                parts = [b for kv in client.hgetall(key).items() for b in kv]
            elif kind == "list":
                parts = list(client.lrange(key, 0, -1))
            elif kind == "set":
                parts = list(client.smembers(key))
            elif kind == "zset":
                parts = [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
            out.append((f"redis {kind} {label}", b"\n".join(parts)))
    finally:
        client.close()
    return out


def pg_dump(database: str) -> bytes:
    """A full plain-format dump (schema and data) of ``database``."""
    parts = urlsplit(ADMIN_DSN)
    binary = shutil.which("pg_dump")
    if binary is None:
        unavailable("pg_dump")
    result = subprocess.run(
        [
            str(binary),
            "--format=plain",
            "--no-password",
            "--host",
            parts.hostname or LOOPBACK,
            "--port",
            str(parts.port or 5432),
            "--username",
            parts.username or "postgres",
            database,
        ],
        capture_output=True,
        timeout=PG_DUMP_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout


# -- the stack: enclave process + host process ---------------------------------------------------
@dataclass
class Stack:
    directory: Path  # the data directory (enclave root key, file keys, test CAs)
    socket_path: Path
    db_name: str
    db_url: str
    redis_prefix: str
    port: int
    rps: dict[str, RelyingParty]
    host_log: Path
    enclave_log: Path
    enclave: subprocess.Popen[bytes] | None = None
    host: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def settings_env(self) -> dict[str, str]:
        return {
            "HEALTHID_MODE": "development",
            "HEALTHID_DATA_DIR": str(self.directory),
            "HEALTHID_DATABASE_URL": self.db_url,
            "HEALTHID_REDIS_URL": REDIS_URL,
            "HEALTHID_REDIS_PREFIX": self.redis_prefix,
            "HEALTHID_ENCLAVE_SOCKET": str(self.socket_path),
            "HEALTHID_ENCLAVE_WORKERS": "1",
            "HEALTHID_TRUSTED_PROXIES": json.dumps([LOOPBACK]),
            "HEALTHID_PUBLIC_URL": self.base_url,
        }

    def settings(self) -> Settings:
        """The same settings in this process (registry import, key creation)."""
        return load_settings(
            mode="development",
            data_dir=self.directory,
            database_url=self.db_url,
            redis_url=REDIS_URL,
            redis_prefix=self.redis_prefix,
            enclave_socket=self.socket_path,
            enclave_workers=1,
            trusted_proxies=[LOOPBACK],
            public_url=self.base_url,
        )

    def egk_card(self, row: dict[str, str]) -> TestCard:
        ca = TestEgkCa.create(self.directory / EGK_TEST_CA_DIR)
        return ca.issue_card(row["kvnr"], row["ik"], row["given_name"], row["family_name"])

    def start_enclave(self) -> None:
        env = clean_env(
            HEALTHID_MODE="development",
            HEALTHID_DATA_DIR=str(self.directory),
            HEALTHID_ENCLAVE_WORKERS="1",
        )
        self.enclave = start_process(
            [sys.executable, "-m", "healthid.enclave_cli", "--socket", str(self.socket_path)],
            env=env,
            log=self.enclave_log,
        )
        wait_until(
            lambda: connectable(self.socket_path),
            self.enclave,
            "the enclave process",
            self.enclave_log,
            READY_TIMEOUT,
        )

    def stop_processes(self) -> None:
        """Stop the host, then the enclave (each by its own id); idempotent."""
        try:
            stop_process(self.host)
        finally:
            stop_process(self.enclave)

    def start_host(self) -> None:
        rp_file = self.directory / "relying-parties.json"
        rp_file.write_text(json.dumps([rp.registration() for rp in self.rps.values()]))
        env = clean_env(
            **self.settings_env(),
            **{RP_FILE_ENV: str(rp_file)},
            PYTHONPATH=str(E2E_DIR),
        )
        argv = [sys.executable, "-m", "uvicorn", "e2e_host_app:create_app", "--factory"]
        argv += ["--host", LOOPBACK, "--port", str(self.port), "--log-level", "info"]
        argv += ["--no-proxy-headers", "--no-server-header"]
        self.host = start_process(argv, env=env, log=self.host_log)
        wait_until(
            lambda: _http_ready(self.base_url + "/readyz"),
            self.host,
            "the host process",
            self.host_log,
            READY_TIMEOUT,
        )


def registry_csv(rows: Iterable[dict[str, str]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


async def _prepare(settings: Settings, registry: bytes) -> None:
    """Migrate, import the registry through the enclave process, create the first keys."""
    from healthid.enclave.rpc import RemoteEnclave
    from healthid.host.registry_import import import_registry
    from healthid.runtime import open_runtime

    runtime = await open_runtime(settings, migrate=True)
    try:
        remote = isinstance(runtime.enclave, RemoteEnclave)
        assert remote, "the registry goes through the enclave process"
        result = await import_registry(
            runtime.enclave, runtime.policyholders, registry, filename="registry.csv"
        )
        assert result.ok, result.errors[:3]
        await runtime.ensure_keys()
    finally:
        await runtime.aclose()


@contextmanager
def running_stack(rows: Sequence[dict[str, str]], client_ids: Sequence[str]) -> Iterator[Stack]:
    """Enclave and host as separate processes on a fresh database and Redis prefix, with
    ``rows`` imported through the enclave process; everything is removed afterwards."""
    check_redis()
    db_name, db_url = create_database()
    root = Path(tempfile.mkdtemp(prefix="hid-e2e-", dir="/tmp"))  # short: a socket lives here
    stack = Stack(
        directory=root / "data",
        socket_path=root / "enclave.sock",
        db_name=db_name,
        db_url=db_url,
        redis_prefix=f"healthid-e2e-{secrets.token_hex(6)}:",
        port=free_port(),
        rps={c: RelyingParty.create(c) for c in client_ids},
        host_log=root / "host.log",
        enclave_log=root / "enclave.log",
    )
    try:
        stack.directory.mkdir()
        stack.start_enclave()
        asyncio.run(_prepare(stack.settings(), registry_csv(rows)))
        stack.start_host()
        yield stack
    finally:
        try:
            stack.stop_processes()
        finally:
            try:
                drop_database(db_name)
                delete_redis_prefix(stack.redis_prefix)
            finally:
                shutil.rmtree(root, ignore_errors=True)


# -- a small async driver of complete logins ---------------------------------------------------
@dataclass
class Wallet:
    """A phone: the person it was enrolled for, its device key and its signature counter."""

    row: dict[str, str] = field(repr=False)
    key: ec.EllipticCurvePrivateKey = field(repr=False)
    device_id: str
    counter: int = 0


@dataclass(frozen=True)
class Authorization:
    request_uri: str
    verifier: str
    nonce: str
    rp: RelyingParty


class FlowError(AssertionError):
    """A step of a flow answered otherwise than a successful login would."""


def _expect(response: httpx.Response, status: int, step: str) -> Any:
    if response.status_code != status:
        raise FlowError(f"{step}: HTTP {response.status_code} {response.text[:300]}")
    return response.json()


def _sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> str:
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return b64e(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


class FlowDriver:
    """The relying parties and the insurer app, speaking HTTP to the host process.

    Each wallet appears from its own client address (``X-Forwarded-For`` from the trusted
    loopback proxy), as phones do, so the per-address rate limits see many clients.
    """

    def __init__(self, http: httpx.AsyncClient, stack: Stack) -> None:
        self.http = http
        self.stack = stack
        self._token_jwks: dict[str, Any] | None = None
        self._addresses = iter(range(1, 2**24))

    def _address(self) -> dict[str, str]:
        n = next(self._addresses)
        return {"X-Forwarded-For": f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"}

    async def token_jwks(self) -> dict[str, Any]:
        """The ID-token keys from the signed JWKS, verified with the entity configuration."""
        if self._token_jwks is None:
            config = (await self.http.get("/.well-known/openid-federation")).text
            config_jwks = json.loads(b64d(config.split(".")[1]))["jwks"]
            signed = verify_compact(
                (await self.http.get("/jws.json")).text, jwks=config_jwks, typ=TYP_SIGNED_JWKS
            )
            self._token_jwks = {"keys": signed.claims["keys"]}
        return self._token_jwks

    async def enrol(self, row: dict[str, str]) -> Wallet:
        """Enrol a phone with the person's test eGK, as the insurer app does: the card's
        certificate (it names the person) goes to the enclave through the VAU channel."""
        card = self.stack.egk_card(row)
        ip = self._address()
        base = self.stack.base_url

        def enrol_with_the_reference_wallet() -> Wallet:
            directory = Path(tempfile.mkdtemp(prefix="e2e-wallet-"))
            with httpx.Client(headers=ip, timeout=30) as http:
                wallet = WalletClient(base, directory, http=http, development=True)
                wallet.enroll_with_egk(card)
                key = serialization.load_pem_private_key(
                    (directory / WALLET_KEY_FILE).read_bytes(), password=None
                )
                assert isinstance(key, ec.EllipticCurvePrivateKey)
                device_id = str(wallet.state()["device_id"])
            shutil.rmtree(directory, ignore_errors=True)
            return Wallet(row=row, key=key, device_id=device_id)

        return await asyncio.to_thread(enrol_with_the_reference_wallet)

    async def par(self, rp: RelyingParty) -> Authorization:
        verifier = secrets.token_urlsafe(48)
        nonce = secrets.token_urlsafe(16)
        form = {
            "client_id": rp.client_id,
            "state": secrets.token_urlsafe(8),
            "redirect_uri": rp.redirect_uri,
            "code_challenge": b64e(hashlib.sha256(verifier.encode()).digest()),
            "code_challenge_method": "S256",
            "response_type": "code",
            "nonce": nonce,
            "scope": " ".join(SCOPES),
            "acr_values": "gematik-ehealth-loa-substantial",
        }
        pushed = _expect(await self.http.post("/PAR_Auth", data=form, headers=rp.mtls), 201, "PAR")
        return Authorization(
            request_uri=pushed["request_uri"], verifier=verifier, nonce=nonce, rp=rp
        )

    async def requested_claims(self, auth: Authorization) -> list[str]:
        """The app's claims call: every claim the relying party asked for."""
        params = {"client_id": auth.rp.client_id, "request_uri": auth.request_uri}
        asked = _expect(
            await self.http.get("/auth", params=params | {"app_version": "1"}), 200, "claims"
        )
        return [*asked["requested_essential_claims"], *asked["requested_optional_claims"]]

    async def login(self, wallet: Wallet) -> str:
        """A device-key login: the session for the consent."""
        ip = self._address()
        issued = _expect(
            await self.http.post(
                "/wallet/v1/auth/challenges", json={"device_id": wallet.device_id}, headers=ip
            ),
            201,
            "login challenge",
        )
        wallet.counter += 1
        signed = device_auth.message(b64d(issued["challenge"]), wallet.device_id, wallet.counter)
        answer = _expect(
            await self.http.post(
                "/wallet/v1/auth/assertions",
                headers=ip,
                json={
                    "challenge_id": issued["challenge_id"],
                    "device_id": wallet.device_id,
                    "counter": wallet.counter,
                    "signature": _sign(wallet.key, signed),
                },
            ),
            200,
            "login assertion",
        )
        return str(answer["session"])

    async def consent_response(
        self, session: str, auth: Authorization, claims: Sequence[str]
    ) -> httpx.Response:
        return await self.http.post(
            "/wallet/v1/authorizations",
            headers={"Authorization": f"Bearer {session}"},
            json={
                "client_id": auth.rp.client_id,
                "request_uri": auth.request_uri,
                "selected_claims": list(claims),
            },
        )

    async def consent(self, session: str, auth: Authorization, claims: Sequence[str]) -> str:
        """Consent to ``claims``; the authorization code from the redirect."""
        redirect = _expect(await self.consent_response(session, auth, claims), 200, "consent")
        query = parse_qs(urlsplit(str(redirect["redirect"])).query)
        if "code" not in query:
            raise FlowError(f"consent: redirected without a code: {query.get('error')}")
        return query["code"][0]

    async def token_response(
        self,
        code: str,
        *,
        verifier: str,
        rp: RelyingParty,
        redirect_uri: str | None = None,
        new_connection: bool = False,
    ) -> httpx.Response:
        """The token request; ``new_connection``: on a connection of its own (the server
        drops a connection after an unhandled error, which would break the next request)."""
        headers = rp.mtls | ({"Connection": "close"} if new_connection else {})
        return await self.http.post(
            "/token",
            headers=headers,
            data={
                "grant_type": "authorization_code",
                "code": code,
                "code_verifier": verifier,
                "client_id": rp.client_id,
                "redirect_uri": redirect_uri or rp.redirect_uri,
            },
        )

    async def id_token_claims(
        self, response: httpx.Response, auth: Authorization
    ) -> dict[str, Any]:
        """The relying party's side: decrypt, verify and check the nonce of the ID token."""
        body = _expect(response, 200, "token")
        inner = decrypt_id_token(body["id_token"], private_key=auth.rp.enc_key)
        verified = verify_compact(inner, jwks=await self.token_jwks(), typ=TYP_ID_TOKEN)
        claims = dict(verified.claims)
        if claims.get("nonce") != auth.nonce:
            raise FlowError("token: the ID token carries another flow's nonce")
        return claims

    async def authorize(self, wallet: Wallet, rp: RelyingParty) -> tuple[Authorization, str]:
        """PAR → claims → device login → consent: the authorization and its code."""
        auth = await self.par(rp)
        claims = await self.requested_claims(auth)
        session = await self.login(wallet)
        return auth, await self.consent(session, auth, claims)

    async def complete_login(self, wallet: Wallet, rp: RelyingParty) -> dict[str, Any]:
        """A complete login at ``rp``: the decrypted, verified ID-token claims."""
        auth, code = await self.authorize(wallet, rp)
        response = await self.token_response(code, verifier=auth.verifier, rp=rp)
        return await self.id_token_claims(response, auth)


def async_client(stack: Stack, *, connections: int = 16) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=stack.base_url,
        timeout=HTTP_TIMEOUT,
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
    )


def claims_match(claims: dict[str, Any], row: dict[str, str]) -> list[str]:
    """Which of the person's claims the ID token got wrong (empty: all right)."""
    expected = {
        "urn:telematik:claims:id": row["kvnr"],
        "urn:telematik:claims:given_name": row["given_name"],
        "urn:telematik:claims:family_name": row["family_name"],
        "urn:telematik:claims:display_name": f"{row['given_name']} {row['family_name']}",
        "birthdate": row["birth_date"],
    }
    return [name for name, value in expected.items() if claims.get(name) != value]


# -- searching for personal data ---------------------------------------------------------------
MIB = 1024 * 1024
MAX_REGION_BYTES = 512 * MIB  # larger mappings are skipped (reserved arenas, not data)
READ_CHUNK = 16 * MIB
CONTEXT_BYTES = 40
MIN_NEEDLE_CHARS = 4  # shorter values ("Am", "Ida") match by chance anywhere
MAX_HITS_PER_VALUE = 20  # hits kept per needle value and search: enough to report
# A bare digit string (postal code, YYYYMMDD) inside a longer number or inside this many hex
# characters (a key, a hash, pg_dump's bytea hex of a ciphertext) is chance, not the value.
HEX_RUN = 16
_DIGITS = frozenset(b"0123456789")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_PLAIN = frozenset({"utf-8", "latin-1"})


@dataclass(frozen=True)
class Needle:
    person: str  # which test person (their index, never their data)
    item: str  # "kvnr", "birth_date DD.MM.YYYY", ...
    encoding: str
    value: bytes

    def __str__(self) -> str:
        return f"{self.person} {self.item} [{self.encoding}]"


@dataclass(frozen=True)
class Hit:
    needle: Needle
    where: str
    offset: int
    context: bytes

    def __str__(self) -> str:
        return f"{self.needle} in {self.where} at {self.offset:#x}: {self.context!r}"


def person_items(row: dict[str, str]) -> dict[str, str]:
    """The personal data items of a synthetic person that the search looks for."""
    year, month, day = row["birth_date"].split("-")
    return {
        "given_name": row["given_name"],
        "family_name": row["family_name"],
        "kvnr": row["kvnr"],
        "birth_date YYYY-MM-DD": f"{year}-{month}-{day}",
        "birth_date YYYYMMDD": f"{year}{month}{day}",
        "birth_date DD.MM.YYYY": f"{day}.{month}.{year}",
        "street": row["street"],
        "postal_code": row["postal_code"],
        "city": row["city"],
    }


def searchable(row: dict[str, str]) -> bool:
    """Every item of the person is long enough to be searched without chance matches."""
    return all(len(v) >= MIN_NEEDLE_CHARS for v in person_items(row).values())


def encodings(text: str) -> dict[str, bytes]:
    """The forms a value takes in files and memory: UTF-8, Latin-1 (CPython keeps a str of
    code points below 256 in one byte each), UTF-16 and hex of the UTF-8 bytes (both cases).

    For text of code points below 256, UTF-16LE without its last (zero) byte is also inside
    the UTF-16BE form, so one needle finds either byte order (and the UCS-2 of CPython's
    two-byte strings); other text gets both forms.
    """
    utf8 = text.encode("utf-8")
    forms = {"utf-8": utf8, "hex": utf8.hex().encode(), "HEX": utf8.hex().upper().encode()}
    if all(ord(c) < 256 for c in text):
        forms["latin-1"] = text.encode("latin-1")
        forms["utf-16 (LE or BE)"] = text.encode("utf-16-le")[:-1]
    else:
        forms["utf-16-le"] = text.encode("utf-16-le")
        forms["utf-16-be"] = text.encode("utf-16-be")
    if forms.get("latin-1") == utf8:
        del forms["latin-1"]  # ASCII: the same bytes
    return forms


def needles_for(people: Sequence[dict[str, str]]) -> list[Needle]:
    return [
        Needle(person=f"person {i}", item=item, encoding=enc, value=value)
        for i, row in enumerate(people)
        for item, text in person_items(row).items()
        for enc, value in encodings(text).items()
    ]


def by_chance(needle: Needle, data: bytes, start: int, end: int) -> bool:
    """Whether a match of a bare digit string is part of a longer number or a hex blob."""
    if needle.encoding not in _PLAIN or not needle.value.isdigit():
        return False
    if (start > 0 and data[start - 1] in _DIGITS) or (end < len(data) and data[end] in _DIGITS):
        return True
    left, right = start, end
    while left > 0 and data[left - 1] in _HEX and start - left < HEX_RUN:
        left -= 1
    while right < len(data) and data[right] in _HEX and right - end < HEX_RUN:
        right += 1
    return right - left >= HEX_RUN


def trie_pattern(values: Iterable[bytes]) -> bytes:
    """A regular expression matching exactly ``values``, factored by common prefixes (several
    times faster than their plain alternation); at each position the longest value wins."""
    root: dict[int | None, Any] = {}
    for value in values:
        node = root
        for byte in value:
            node = node.setdefault(byte, {})
        node[None] = {}

    def emit(node: dict[int | None, Any]) -> bytes:
        branches = [
            re.escape(bytes([b])) + emit(child)
            for b, child in sorted((k, v) for k, v in node.items() if k is not None)
        ]
        if not branches:
            return b""
        ends_here = None in node
        if len(branches) == 1 and not ends_here:
            return branches[0]
        return b"(?:" + b"|".join(branches) + b")" + (b"?" if ends_here else b"")

    return emit(root)


class NeedleSearch:
    """One pass over the data for every needle (a regular expression of their alternation)."""

    def __init__(self, needles: Sequence[Needle]) -> None:
        self.needles = list(needles)
        self._by_value: dict[bytes, list[Needle]] = {}
        for needle in self.needles:
            self._by_value.setdefault(needle.value, []).append(needle)
        self._pattern = re.compile(trie_pattern(self._by_value))
        self.overlap = max(len(v) for v in self._by_value) - 1

    def scan(
        self,
        where: str,
        data: bytes,
        *,
        base: int = 0,
        skip_before: int = 0,
        seen: Counter[bytes] | None = None,
    ) -> list[Hit]:
        """Hits in ``data`` (reported at ``base`` + offset). Matches wholly inside the first
        ``skip_before`` bytes were reported with the previous chunk; ``seen`` counts the hits
        per value across calls: each value is reported at most MAX_HITS_PER_VALUE times."""
        seen = Counter() if seen is None else seen
        hits: list[Hit] = []
        for match in self._pattern.finditer(data):
            if match.end() <= skip_before:
                continue
            value = match.group()
            seen[value] += 1
            if seen[value] > MAX_HITS_PER_VALUE:
                continue
            context = data[max(0, match.start() - CONTEXT_BYTES) : match.end() + CONTEXT_BYTES]
            hits += [
                Hit(needle=n, where=where, offset=base + match.start(), context=context)
                for n in self._by_value[value]
                if not by_chance(n, data, match.start(), match.end())
            ]
        return hits

    def scan_all(self, items: Iterable[tuple[str, bytes]]) -> list[Hit]:
        seen: Counter[bytes] = Counter()
        return [hit for where, data in items for hit in self.scan(where, data, seen=seen)]

    def scan_process(self, pid: int) -> tuple[list[Hit], MemoryStats]:
        """Hits in the readable memory of ``pid``, and what was read."""
        seen: Counter[bytes] = Counter()
        hits: list[Hit] = []
        stats = MemoryStats()
        for where, base, data, skip in process_memory(pid, overlap=self.overlap, stats=stats):
            hits += self.scan(where, data, base=base, skip_before=skip, seen=seen)
        return hits, stats


@dataclass
class MemoryStats:
    regions_read: int = 0
    bytes_read: int = 0
    skipped_large: int = 0
    skipped_unreadable: int = 0


def memory_regions(pid: int) -> list[tuple[int, int, str, str]]:
    """(start, end, permissions, path) of every mapping of ``pid`` (/proc/<pid>/maps)."""
    regions = []
    with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as maps:
        for line in maps:
            parts = line.split(maxsplit=5)
            start, end = (int(x, 16) for x in parts[0].split("-"))
            path = parts[5].strip() if len(parts) > 5 else ""
            regions.append((start, end, parts[1], path))
    return regions


def process_memory(
    pid: int, *, overlap: int, stats: MemoryStats
) -> Iterator[tuple[str, int, bytes, int]]:
    """The readable memory of ``pid`` in chunks: (region, address, bytes, bytes of overlap
    with the previous chunk). Regions over MAX_REGION_BYTES and unreadable ones are skipped.
    Needs ptrace rights over ``pid`` (root, or its parent under Yama scope 1)."""
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for start, end, perms, path in memory_regions(pid):
            if not perms.startswith("r"):
                continue
            if end - start > MAX_REGION_BYTES:
                stats.skipped_large += 1
                continue
            where = f"pid {pid} {perms} {path or '[anonymous]'} {start:#x}"
            tail = b""
            position = start
            read_any = False
            while position < end:
                try:
                    mem.seek(position)
                    chunk = mem.read(min(READ_CHUNK, end - position))
                except OSError:
                    chunk = b""
                if not chunk:
                    break
                read_any = True
                stats.bytes_read += len(chunk)
                yield where, position - len(tail), tail + chunk, len(tail)
                tail = chunk[-overlap:] if overlap else b""
                position += len(chunk)
            if read_any:
                stats.regions_read += 1
            else:
                stats.skipped_unreadable += 1


def summarise(hits: Sequence[Hit], limit: int = 25) -> str:
    lines = [str(h) for h in hits[:limit]]
    if len(hits) > limit:
        lines.append(f"... and {len(hits) - limit} more")
    return "\n".join(lines)
