"""The development federation master: endpoints, error codes, key file, end to end."""

from __future__ import annotations

import json
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from starlette.testclient import TestClient

from healthid.demo.fedmaster import (
    FETCH_PATH,
    IDP_LIST_PATH,
    LIST_PATH,
    FedmasterRefused,
    create_fedmaster_app,
    run_fedmaster,
)
from healthid.demo.fedmaster_config import (
    JWKS_FILE,
    KEY_FILE,
    FedmasterConfig,
    FedmasterConfigError,
    load_fedmaster_config,
    load_or_create_signing_key,
    master_public_jwks,
)
from healthid.host.fetch import GuardedFetcher
from healthid.host.relying_parties import RelyingPartyRegistry
from healthid.protocol.federation import verify_entity_statement
from healthid.protocol.federation.statements import sign_entity_statement
from healthid.protocol.jose import TYP_IDP_LIST, public_jwk, verify_compact
from healthid.store.ephemeral import MemoryEphemeralStore

NOW = 1_750_000_000
MASTER = "https://fedmaster.test"
RP = "https://rp.test"
IDP = "https://idp.test"


@dataclass(frozen=True)
class Key:
    kid: str
    private: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )

    @property
    def jwks(self) -> dict[str, Any]:
        return {"keys": [public_jwk(self.private.public_key(), kid=self.kid, use="sig")]}

    def sign(self, kid: str, data: bytes) -> bytes:
        r, s = decode_dss_signature(self.private.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


RP_KEY = Key("puk_fd_sig")
IDP_KEY = Key("puk_idp_sig")
RP_ENC = Key("puk_fd_enc")


def write_config(tmp_path: Path) -> Path:
    (tmp_path / "rp-jwks.json").write_text(json.dumps(RP_KEY.jwks))
    idp_jwk = ", ".join(f'{k} = "{v}"' for k, v in IDP_KEY.jwks["keys"][0].items())
    path = tmp_path / "fedmaster.toml"
    path.write_text(
        f"""
entity_id = "{MASTER}"

[[members]]
entity_id = "{RP}"
jwks_file = "rp-jwks.json"
[members.metadata.openid_relying_party]
client_registration_types = ["automatic"]
redirect_uris = ["{RP}/cb"]

[[members]]
entity_id = "{IDP}"
jwks = {{ keys = [ {{ {idp_jwk} }} ] }}
idp = {{ organization_name = "Test-Kasse", logo_uri = "{IDP}/logo.png" }}
"""
    )
    return path


@pytest.fixture
def config(tmp_path: Path) -> FedmasterConfig:
    return load_fedmaster_config(write_config(tmp_path))


@pytest.fixture
def master_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def client(config: FedmasterConfig, master_key: ec.EllipticCurvePrivateKey) -> TestClient:
    app = create_fedmaster_app(config, signing_key=master_key, production=False, clock=lambda: NOW)
    return TestClient(app, base_url=MASTER)


def test_config_reads_toml_and_json(tmp_path: Path, config: FedmasterConfig) -> None:
    assert config.entity_id == MASTER and [m.entity_id for m in config.members] == [RP, IDP]
    assert config.members[1].idp is not None and config.members[0].idp is None
    as_json = tmp_path / "fedmaster.json"
    as_json.write_text(
        json.dumps({"entity_id": MASTER, "members": [{"entity_id": RP, "jwks": RP_KEY.jwks}]})
    )
    assert load_fedmaster_config(as_json).members[0].jwks["keys"] == RP_KEY.jwks["keys"]


@pytest.mark.parametrize(
    "document",
    [
        {"entity_id": MASTER, "members": [{"entity_id": RP}]},  # no jwks
        {"entity_id": MASTER, "members": [{"entity_id": RP, "jwks": {"keys": []}}]},
        {"entity_id": MASTER, "members": [{"entity_id": RP, "jwks": RP_KEY.jwks}] * 2},
        {"entity_id": MASTER, "members": [{"entity_id": RP, "jwks": RP_KEY.jwks, "x": 1}]},
        {"entity_id": MASTER, "unknown": 1},
        {"entity_id": "ftp://master", "members": []},
        {
            "entity_id": MASTER,
            "members": [{"entity_id": RP, "jwks": {"keys": [{"kty": "RSA", "kid": "a"}]}}],
        },
    ],
)
def test_config_rejects_an_invalid_document(tmp_path: Path, document: dict[str, Any]) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))
    with pytest.raises(FedmasterConfigError):
        load_fedmaster_config(path)


def test_signing_key_is_created_once_private_and_marked_test_only(tmp_path: Path) -> None:
    key = load_or_create_signing_key(tmp_path / "fm")
    again = load_or_create_signing_key(tmp_path / "fm")
    assert key.private_numbers() == again.private_numbers()
    assert stat.S_IMODE((tmp_path / "fm" / KEY_FILE).stat().st_mode) == 0o600
    assert KEY_FILE.startswith("TEST-ONLY")
    pinned = json.loads((tmp_path / "fm" / JWKS_FILE).read_text())
    assert pinned == master_public_jwks(key) and "d" not in pinned["keys"][0]


def test_signing_key_readable_by_others_is_rejected(tmp_path: Path) -> None:
    load_or_create_signing_key(tmp_path)
    (tmp_path / KEY_FILE).chmod(0o644)
    with pytest.raises(FedmasterConfigError, match="chmod"):
        load_or_create_signing_key(tmp_path)


def test_fedmaster_refuses_production(
    config: FedmasterConfig, master_key: ec.EllipticCurvePrivateKey, tmp_path: Path
) -> None:
    with pytest.raises(FedmasterRefused):
        create_fedmaster_app(config, signing_key=master_key, production=True)
    with pytest.raises(FedmasterRefused):
        run_fedmaster("127.0.0.1", 0, tmp_path / "none.toml", tmp_path, production=True)


def test_entity_configuration_names_the_endpoints(
    client: TestClient, master_key: ec.EllipticCurvePrivateKey
) -> None:
    resp = client.get("/.well-known/openid-federation")
    assert resp.headers["content-type"].startswith("application/entity-statement+jwt")
    statement = verify_entity_statement(resp.text, jwks=master_public_jwks(master_key), now=NOW)
    assert statement.iss == statement.sub == MASTER
    assert statement.metadata["federation_entity"] == {
        "federation_fetch_endpoint": MASTER + FETCH_PATH,
        "federation_list_endpoint": MASTER + LIST_PATH,
        "idp_list_endpoint": MASTER + IDP_LIST_PATH,
        "organization_name": statement.metadata["federation_entity"]["organization_name"],
    }


def test_fetch_returns_the_subordinate_statement(
    client: TestClient, master_key: ec.EllipticCurvePrivateKey
) -> None:
    resp = client.get(FETCH_PATH, params={"iss": MASTER, "sub": RP})
    assert resp.status_code == 200
    statement = verify_entity_statement(resp.text, jwks=master_public_jwks(master_key), now=NOW)
    assert (statement.iss, statement.sub) == (MASTER, RP)
    assert statement.jwks is not None and statement.jwks["keys"] == RP_KEY.jwks["keys"]
    rp_metadata = statement.metadata["openid_relying_party"]
    assert rp_metadata["redirect_uris"] == [RP + "/cb"]


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"iss": "https://other.example", "sub": RP}, "6000"),
        ({"sub": RP}, "6000"),
        ({"iss": MASTER, "sub": "https://stranger.example"}, "6011"),
        ({"iss": MASTER}, "6011"),
        ({"iss": MASTER, "sub": MASTER}, "6011"),
    ],
)
def test_fetch_rejects_with_the_gematik_error_body(
    client: TestClient, params: dict[str, str], code: str
) -> None:
    resp = client.get(FETCH_PATH, params=params)
    assert resp.status_code == 400
    body = resp.json()
    assert body["operation"] == "FETCH" and body["error"] == "invalid_request"
    assert body["gematik_code"] == code and body["error_description"]
    assert isinstance(body["gematik_timestamp"], int) and len(body["gematik_uuid"]) == 36


def test_list_names_every_member(client: TestClient) -> None:
    assert client.get(LIST_PATH).json() == [RP, IDP]
    assert client.get(LIST_PATH, params={"entity_type": "openid_provider"}).json() == [IDP]
    assert client.get(LIST_PATH, params={"entity_type": "openid_relying_party"}).json() == [RP]


def test_idp_list_is_a_signed_idp_list_jwt(
    client: TestClient, master_key: ec.EllipticCurvePrivateKey
) -> None:
    resp = client.get(IDP_LIST_PATH)
    assert resp.headers["content-type"].startswith("application/jwt")
    verified = verify_compact(resp.text, jwks=master_public_jwks(master_key), typ=TYP_IDP_LIST)
    assert verified.claims["iss"] == MASTER
    assert verified.claims["idp_entity"] == [
        {
            "iss": IDP,
            "organization_name": "Test-Kasse",
            "logo_uri": IDP + "/logo.png",
            "user_type_supported": "IP",
            "pkv": False,
        }
    ]


def test_fedmaster_rejects_other_methods(client: TestClient) -> None:
    assert client.post(FETCH_PATH, params={"iss": MASTER, "sub": RP}).status_code == 405


class Router(httpx.AsyncBaseTransport):
    """The master app for its host, a fake RP for the RP's host."""

    def __init__(self, master: httpx.AsyncBaseTransport, rp: httpx.AsyncBaseTransport) -> None:
        self.master, self.rp = master, rp

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        target = self.master if request.url.host == "fedmaster.test" else self.rp
        return await target.handle_async_request(request)


def rp_entity_configuration(_request: httpx.Request) -> httpx.Response:
    claims = {
        "iss": RP,
        "sub": RP,
        "iat": NOW,
        "exp": NOW + 3600,
        "jwks": RP_KEY.jwks,
        "authority_hints": [MASTER],
        "metadata": {
            "openid_relying_party": {
                "redirect_uris": ["https://attacker.example/cb"],  # the master's value wins
                "scope": "openid urn:telematik:versicherter",
                "jwks": {
                    "keys": [public_jwk(RP_ENC.private.public_key(), kid="puk_fd_enc", use="enc")]
                },
            }
        },
    }
    token = sign_entity_statement(claims, kid=RP_KEY.kid, signer=RP_KEY.sign)
    headers = {"content-type": "application/entity-statement+jwt"}
    return httpx.Response(200, headers=headers, content=token.encode())


async def test_registry_resolves_an_rp_through_the_fedmaster_end_to_end(
    config: FedmasterConfig, master_key: ec.EllipticCurvePrivateKey
) -> None:
    app = create_fedmaster_app(config, signing_key=master_key, production=False, clock=lambda: NOW)
    transport = Router(httpx.ASGITransport(app=app), httpx.MockTransport(rp_entity_configuration))
    async with GuardedFetcher(development=True, transport=transport) as fetcher:
        registry = RelyingPartyRegistry(
            fetcher,
            MemoryEphemeralStore(),
            master_entity_id=MASTER,
            master_jwks=master_public_jwks(master_key),
            clock=lambda: NOW,
        )
        rp = await registry.resolve(RP)
    assert rp.client_id == RP and rp.redirect_uris == (RP + "/cb",)
    assert rp.keys.encryption_jwk is not None and rp.expires_at == NOW + 3600
