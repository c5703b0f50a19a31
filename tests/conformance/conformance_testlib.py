"""Helpers for the gsi-testsuite conformance tier: our IdP over HTTP, seen as gematik's
approval testsuite sees it (gematik/app-gemSekIdp ``gsi-testsuite/src/test/resources/features``).

The fixtures mirror ``tests/host/test_oidc_flow.py``: a relying party with a self-signed TLS
client certificate and an encryption key, resolved by a stub instead of the federation; the
real app on the embedded store and on PostgreSQL + Redis. The parameters are the testsuite's
own (``tc_properties-external-Idp.yaml``: state, nonce, scope) where they fit our setup.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from starlette.testclient import TestClient

from healthid.demo.egk_test_ca import TestEgkCa
from healthid.demo.synthetic import synthetic_rows
from healthid.protocol.federation import ResolvedRelyingParty
from healthid.protocol.jose import decrypt_id_token
from healthid.runtime import EGK_TEST_CA_DIR
from healthid.settings import Settings
from healthid.wallet.client import WalletClient

IDP = "http://testserver"
import stack_testlib  # noqa: E402
from rp_testlib import REDIRECT, RP, resolved_rp  # noqa: E402 (shared with host, deploy)

REGISTRY_SIZE = 6
REGISTRY_SEED = 17
ROWS = list(synthetic_rows(REGISTRY_SIZE, seed=REGISTRY_SEED))

# tc_properties-external-Idp.yaml: gsi.scope, and the fixed PAR values of every feature file
GSI_SCOPE = "urn:telematik:display_name urn:telematik:versicherter openid"
GSI_STATE = "yyystateyyy"
GSI_NONCE = "vy7rM801AQw1or22GhrZ"
ACR_HIGH = "gematik-ehealth-loa-high"
ACR_SUBSTANTIAL = "gematik-ehealth-loa-substantial"
PROFESSION_VERSICHERTER = "1.2.276.0.76.4.49"  # OID Versicherter (TOKEN_008/010/011)

IGNORE = object()  # json-unit's "${json-unit.ignore}": present, any value
OPTIONAL_PREFIX = "____"  # Tiger: the key may be missing


def self_signed_tls_certificate(key: ec.EllipticCurvePrivateKey, cn: str) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def cert_header(cert: x509.Certificate) -> dict[str, str]:
    """``X-SSL-CERT``: the URL-encoded PEM the TLS terminator forwards (trusted proxy)."""
    return {"X-SSL-CERT": quote(cert.public_bytes(serialization.Encoding.PEM).decode())}


class FakeRp:
    """The testsuite's Fachdienst: TLS client certificate(s) and an encryption key.

    ``tls_certs`` are the certificates its entity statement publishes (several: rotation,
    PAR TC 019); it presents ``tls_cert`` unless told otherwise.
    """

    def __init__(
        self,
        *,
        scopes: str = GSI_SCOPE,
        id_token_versions: Sequence[str] = ("1.0.0", "2.0.0"),
        tls_certificates: int = 1,
    ) -> None:
        self.scopes = tuple(scopes.split())
        self.id_token_versions = tuple(id_token_versions)
        self.tls_keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(tls_certificates)]
        self.tls_certs = [self_signed_tls_certificate(k, "rp.example") for k in self.tls_keys]
        self.tls_cert = self.tls_certs[0]
        self.enc_key = ec.generate_private_key(ec.SECP256R1())

    def resolved(self) -> ResolvedRelyingParty:
        return resolved_rp(
            tls_certificates=self.tls_certs,
            encryption_key=self.enc_key,
            scopes=self.scopes,
            id_token_versions=self.id_token_versions,
        )

    def cert_header(self) -> dict[str, str]:
        return cert_header(self.tls_cert)


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def par_form(challenge: str, **extra: str) -> dict[str, str]:
    """The testsuite's PAR (``gsi.clientid.valid``, ``gsi.redirectUri``, ``gsi.scope``)."""
    return {
        "client_id": RP,
        "state": GSI_STATE,
        "redirect_uri": REDIRECT,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "response_type": "code",
        "nonce": GSI_NONCE,
        "scope": GSI_SCOPE,
        "acr_values": ACR_HIGH,
        **extra,
    }


def enrolled_wallet(
    client: TestClient, settings: Settings, tmp_path: Path, row: Mapping[str, str]
) -> WalletClient:
    """An insurer-app install enrolled with the person's test eGK (eGK + PIN proofing)."""
    card = TestEgkCa.create(settings.data_dir / EGK_TEST_CA_DIR).issue_card(
        row["kvnr"], row["ik"], row["given_name"], row["family_name"]
    )
    wallet = WalletClient(IDP, tmp_path / f"w-{row['kvnr']}", http=client, development=True)
    wallet.enroll_with_egk(card)
    return wallet


def push(client: TestClient, rp: FakeRp, challenge: str, **extra: str) -> str:
    """A PAR that must succeed; its request_uri."""
    resp = client.post(
        f"{IDP}/PAR_Auth", data=par_form(challenge, **extra), headers=rp.cert_header()
    )
    assert resp.status_code == 201, resp.text
    return str(resp.json()["request_uri"])


def consent(
    client: TestClient,
    wallet: WalletClient,
    request_uri: str,
    selected_claims: Sequence[str] | None = None,
) -> dict[str, list[str]]:
    """The insurer app: ask which claims, log in with the device key, consent. The query of
    the redirect back to the RP. ``selected_claims`` None: every requested claim."""
    if selected_claims is None:
        asked = client.get(
            f"{IDP}/auth", params={"client_id": RP, "request_uri": request_uri, "app_version": "1"}
        )
        assert asked.status_code == 200, asked.text
        body = asked.json()
        selected_claims = [
            *body.get("requested_essential_claims", []),
            *body.get("requested_optional_claims", []),
        ]
    session = wallet.login().session
    resp = client.post(
        f"{IDP}/wallet/v1/authorizations",
        json={"client_id": RP, "request_uri": request_uri, "selected_claims": selected_claims},
        headers={"Authorization": f"Bearer {session}"},
    )
    assert resp.status_code == 200, resp.text
    location = urlsplit(resp.json()["redirect"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    return parse_qs(location.query)


def authorization_code(
    client: TestClient,
    rp: FakeRp,
    wallet: WalletClient,
    selected_claims: Sequence[str] | None = None,
    **par_extra: str,
) -> tuple[str, str]:
    """PAR, consent, code: ``(code, code_verifier)``."""
    verifier, challenge = pkce()
    request_uri = push(client, rp, challenge, **par_extra)
    query = consent(client, wallet, request_uri, selected_claims)
    assert "code" in query, query
    assert query["state"] == [GSI_STATE]
    return query["code"][0], verifier


def token_form(code: str, verifier: str, **extra: str) -> dict[str, str]:
    return {
        "client_id": RP,
        "redirect_uri": REDIRECT,
        "code_verifier": verifier,
        "grant_type": "authorization_code",
        "code": code,
        **extra,
    }


def b64url_json(segment: str) -> dict[str, Any]:
    value = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    assert isinstance(value, dict)
    return value


def jws_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and body of a compact JWS (not verified: the caller verifies where it matters)."""
    header, body, _ = token.split(".")
    return b64url_json(header), b64url_json(body)


def issued_id_token(
    client: TestClient,
    rp: FakeRp,
    wallet: WalletClient,
    selected_claims: Sequence[str] | None = None,
    **par_extra: str,
) -> tuple[str, str]:
    """The whole flow: ``(encrypted ID token, decrypted inner JWS)``."""
    code, verifier = authorization_code(client, rp, wallet, selected_claims, **par_extra)
    resp = client.post(f"{IDP}/token", data=token_form(code, verifier), headers=rp.cert_header())
    assert resp.status_code == 200, resp.text
    encrypted = str(resp.json()["id_token"])
    return encrypted, decrypt_id_token(encrypted, private_key=rp.enc_key)


def json_mismatches(actual: Any, expected: Any, path: str = "$") -> list[str]:
    """Tiger's "matches as JSON": every expected key present (``____`` prefix: optional),
    strings are regexes matched in full, :data:`IGNORE` matches any value, other values
    (lists, numbers, booleans) must be equal. Extra keys in ``actual`` are allowed."""
    if expected is IGNORE:
        return []
    if isinstance(expected, Mapping):
        if not isinstance(actual, Mapping):
            return [f"{path}: expected an object, got {actual!r}"]
        problems: list[str] = []
        for key, want in expected.items():
            name = key.removeprefix(OPTIONAL_PREFIX)
            if name not in actual:
                if not key.startswith(OPTIONAL_PREFIX):
                    problems.append(f"{path}.{name}: missing")
                continue
            problems += json_mismatches(actual[name], want, f"{path}.{name}")
        return problems
    if isinstance(expected, str):
        if isinstance(actual, Mapping | list):
            return [f"{path}: expected a string matching {expected!r}, got {actual!r}"]
        text = json.dumps(actual) if isinstance(actual, bool) else str(actual)
        if re.fullmatch(expected, text, flags=re.DOTALL) is None:
            return [f"{path}: {text!r} does not match {expected!r}"]
        return []
    if actual != expected:
        return [f"{path}: {actual!r} != {expected!r}"]
    return []


def assert_matches_json(actual: Any, expected: Any) -> None:
    problems = json_mismatches(actual, expected)
    assert not problems, "\n".join(problems)


def import_synthetic_registry(settings: Settings) -> None:
    stack_testlib.import_synthetic_registry(settings, REGISTRY_SIZE, seed=REGISTRY_SEED)
