"""Helpers of the deployment tests: a test PKI, the rendered nginx template, a real nginx
and real uvicorn servers on loopback ports.

Bounded waits only; every process started here is stopped by its own id in teardown.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path

import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "deploy" / "nginx" / "healthid.conf.template"
PLACEHOLDER = re.compile(r"\$\{(NGINX_[A-Z_]+)\}")
NGINX_CANDIDATES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")
LOOPBACK = "127.0.0.1"
# the test clients connect from another loopback address than nginx's upstream connections, so
# that "the peer nginx saw" and "nginx itself" are told apart (trusted_proxies = 127.0.0.1)
CLIENT_ADDRESS = "127.0.0.2"
STARTUP_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


def unavailable(what: str) -> None:
    """Skip, or fail with HEALTHID_REQUIRE_SERVICES=1 (the rule of tests/conftest.py)."""
    if os.environ.get("HEALTHID_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{what} is required (HEALTHID_REQUIRE_SERVICES=1) but unavailable")
    pytest.skip(f"{what} unavailable")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


# --- a test PKI -----------------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return path


def _write_cert(cert: x509.Certificate, path: Path) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@dataclass(frozen=True, kw_only=True)
class Pki:
    """A test CA and the server certificate it issued for localhost / 127.0.0.1."""

    ca_cert: Path
    server_cert: Path
    server_key: Path

    def client_context(
        self, *, cert: Path | None = None, key: Path | None = None
    ) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_cert))
        if cert is not None:
            ctx.load_cert_chain(str(cert), str(key) if key else None)
        return ctx


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("healthid test TLS CA"))
        .issuer_name(_name("healthid test TLS CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(IPv4Address(LOOPBACK))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return Pki(
        ca_cert=_write_cert(ca, directory / "ca.pem"),
        server_cert=_write_cert(server, directory / "server.pem"),
        server_key=_write_key(key, directory / "server.key"),
    )


@dataclass(frozen=True, kw_only=True)
class SelfSignedClient:
    """A relying party's self-signed TLS client certificate (RFC 8705 §2.2), as files."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    cert_path: Path
    key_path: Path


def make_self_signed_client(directory: Path, cn: str) -> SelfSignedClient:
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return SelfSignedClient(
        key=key,
        cert=cert,
        cert_path=_write_cert(cert, directory / f"{cn}.pem"),
        key_path=_write_key(key, directory / f"{cn}.key"),
    )


# --- nginx ----------------------------------------------------------------------------------


def nginx_binary() -> str:
    found = shutil.which("nginx") or next(
        (p for p in NGINX_CANDIDATES if Path(p).is_file() and os.access(p, os.X_OK)), None
    )
    if found is None:
        unavailable("nginx (Debian package nginx)")
    assert found is not None
    return found


def render_template(values: dict[str, str]) -> str:
    """The template with every ${NGINX_*} placeholder replaced (what envsubst does)."""
    text = TEMPLATE.read_text()
    wanted = set(PLACEHOLDER.findall(text))
    assert wanted == set(values), f"placeholders {sorted(wanted)} != {sorted(values)}"
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


@dataclass(frozen=True, kw_only=True)
class NginxFront:
    public_url: str
    mtls_url: str
    run_dir: Path


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"nginx exited with {proc.returncode}: {_tail(log)}")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"nginx did not listen on {port} within {STARTUP_TIMEOUT} s: {_tail(log)}")


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-2000:] if path.exists() else "(no error.log)"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Graceful quit (SIGQUIT to our master), then SIGKILL to the process group we started."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # leftover workers of our master, if any
    except ProcessLookupError:
        pass
    proc.wait(timeout=STOP_TIMEOUT)


@contextmanager
def nginx_front(run_dir: Path, pki: Pki, upstream_port: int) -> Iterator[NginxFront]:
    """The template rendered for two loopback ports and run with ``nginx -p run_dir``."""
    binary = nginx_binary()
    run_dir.mkdir(parents=True, exist_ok=True)
    public_port, mtls_port = free_port(), free_port()
    conf = run_dir / "nginx.conf"
    conf.write_text(
        render_template(
            {
                "NGINX_USER": pwd.getpwuid(os.geteuid()).pw_name,
                "NGINX_RUN_DIR": str(run_dir),
                "NGINX_UPSTREAM": f"{LOOPBACK}:{upstream_port}",
                "NGINX_PUBLIC_LISTEN": f"{LOOPBACK}:{public_port}",
                "NGINX_PUBLIC_SERVER_NAME": "localhost",
                "NGINX_PUBLIC_CERT": str(pki.server_cert),
                "NGINX_PUBLIC_KEY": str(pki.server_key),
                "NGINX_MTLS_LISTEN": f"{LOOPBACK}:{mtls_port}",
                "NGINX_MTLS_SERVER_NAME": "mtls.localhost",
                "NGINX_MTLS_CERT": str(pki.server_cert),
                "NGINX_MTLS_KEY": str(pki.server_key),
            }
        )
    )
    log = run_dir / "error.log"
    check = subprocess.run(
        [binary, "-t", "-q", "-p", str(run_dir), "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=STARTUP_TIMEOUT,
        check=False,
    )
    assert check.returncode == 0, check.stderr + _tail(log)
    proc = subprocess.Popen(
        [binary, "-p", str(run_dir), "-c", str(conf), "-g", "daemon off;"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: teardown can reach the workers
    )
    try:
        _wait_for_port(public_port, proc, log)
        _wait_for_port(mtls_port, proc, log)
        yield NginxFront(
            public_url=f"https://{LOOPBACK}:{public_port}",
            mtls_url=f"https://{LOOPBACK}:{mtls_port}",
            run_dir=run_dir,
        )
    finally:
        _stop(proc)


# --- uvicorn --------------------------------------------------------------------------------


@contextmanager
def serve_on_loopback(app: object, port: int) -> Iterator[str]:
    """Run ``app`` with uvicorn on 127.0.0.1:``port`` in a thread (as
    tests/wallet/test_wallet_cli.py does). ``proxy_headers=False``: the IdP must see nginx as
    the peer to believe its X-SSL-CERT (see deploy/nginx/README.md)."""
    srv = uvicorn.Server(
        uvicorn.Config(
            app,  # type: ignore[arg-type]
            host=LOOPBACK,
            port=port,
            log_level="warning",
            proxy_headers=False,
        )
    )
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not srv.started and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.05)
    try:
        assert srv.started, "server did not start"
        yield f"http://{LOOPBACK}:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=STOP_TIMEOUT)
