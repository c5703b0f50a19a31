"""Rate limits against attackers (issue #7 item 4, security checklist B4 row 17): credential
stuffing from one address is throttled by the per-address limits; slow guessing from many
addresses against one device is throttled per device without locking its owner out for
longer than the documented short window; the relying parties' PAR and token endpoints are
limited per client and PAR per address (429 ``temporarily_unavailable`` with Retry-After).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from starlette.testclient import TestClient
from test_oidc_flow import IDP, ROWS, enrolled_wallet, par_form, pkce

from healthid.host import oidc_service
from healthid.host.rate_limits import OidcLimits, RateLimit, WalletLimits
from healthid.host.wallet_service import TooManyRequests, Unauthorized, WalletService
from healthid.protocol import device_auth
from healthid.protocol.attestation import make_software_attestation
from healthid.protocol.audit import AuditEntry, AuditKind
from healthid.protocol.federation import ResolvedRelyingParty
from healthid.runtime import EGK_TEST_CA_DIR, attestation_policy, build_app, open_runtime
from healthid.settings import Settings
from healthid.store.ephemeral import MemoryEphemeralStore
from rp_testlib import RP, FakeRp, StubResolver, token_form
from stack_testlib import BACKENDS, import_synthetic_registry, settings_for

OWNER_IP = "198.51.100.7"


@pytest.fixture(params=BACKENDS)
def settings(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    settings = settings_for(request, tmp_path, monkeypatch, trusted_proxies=["testclient"])
    import_synthetic_registry(settings, 6, seed=17)
    return settings


def _signature(key: ec.EllipticCurvePrivateKey, challenge: bytes, device: str, n: int) -> bytes:
    r, s = decode_dss_signature(
        key.sign(device_auth.message(challenge, device, n), ec.ECDSA(hashes.SHA256()))
    )
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


async def _enrol(svc: WalletService, settings: Settings) -> tuple[str, ec.EllipticCurvePrivateKey]:
    from healthid.demo.egk_test_ca import TestEgkCa

    row = ROWS[2]
    card = TestEgkCa.create(settings.data_dir / EGK_TEST_CA_DIR).issue_card(
        row["kvnr"], row["ik"], row["given_name"], row["family_name"]
    )
    enrolment = await svc.start_enrolment(ip=OWNER_IP)
    await svc.prove_with_egk(
        enrolment.enrolment_id,
        certificate=card.certificate_der,
        signature=card.sign(enrolment.challenge),
        ip=OWNER_IP,
    )
    key = ec.generate_private_key(ec.SECP256R1())
    from cryptography.hazmat.primitives import serialization

    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    bound = await svc.bind_device(
        enrolment.enrolment_id,
        public_key=spki,
        attestation_format="healthid-software",
        attestation=make_software_attestation(key, enrolment.challenge, settings.wallet_app_id),
    )
    return bound.device_id, key


async def _guess(svc: WalletService, device: str, ip: str) -> None:
    """One login attempt with a wrong signature from ``ip``."""
    cid, _ = await svc.login_challenge(device, ip=ip)
    await svc.login(challenge_id=cid, device_id=device, counter=7, signature=os.urandom(64), ip=ip)


async def test_credential_stuffing_from_one_address_is_refused_after_the_per_address_limit(
    settings: Settings,
) -> None:
    """(a) One address tries 100 devices: the first 30 failures are answered (401), every
    later attempt is refused (429) — another address is not affected."""
    limit = WalletLimits().failed_auth_per_ip.limit
    assert limit == 30  # the documented default (README "Limits against attackers")
    rt = await open_runtime(settings)
    try:
        svc = rt.wallet_service()
        outcomes = []
        for _ in range(100):
            try:
                await _guess(svc, secrets.token_hex(16), "203.0.113.66")
            except Unauthorized:
                outcomes.append(401)
            except TooManyRequests as exc:
                assert 0 < exc.retry_after <= WalletLimits().failed_auth_per_ip.window + 1
                outcomes.append(429)
        assert outcomes == [401] * limit + [429] * (100 - limit)
        with pytest.raises(Unauthorized):  # not throttled: only the stuffing address is
            await _guess(svc, secrets.token_hex(16), "203.0.113.67")
    finally:
        await rt.aclose()


async def test_distributed_guessing_slows_a_device_down_but_never_locks_its_owner_out(
    settings: Settings,
) -> None:
    """(b) 50 addresses, one wrong signature each: none is throttled yet and the owner logs in
    at once. At 100 failures across all addresses (the per-device bar) the device is slowed
    down for everyone — the owner included — but only until its 300 s window ends."""
    now = [1_000_000.0]
    store = MemoryEphemeralStore(clock=lambda: now[0])
    rt = await open_runtime(settings)
    try:
        svc = WalletService(
            enclave=rt.enclave,
            policyholders=rt.policyholders,
            devices=rt.devices,
            ephemeral=store,
            attestation=attestation_policy(settings),
        )
        device, key = await _enrol(svc, settings)
        attackers = [f"192.0.2.{n}" for n in range(1, 51)]
        for ip in attackers:
            with pytest.raises(Unauthorized):
                await _guess(svc, device, ip)
        cid, challenge = await svc.login_challenge(device, ip=OWNER_IP)
        result = await svc.login(
            challenge_id=cid,
            device_id=device,
            counter=1,
            signature=_signature(key, challenge, device, 1),
            ip=OWNER_IP,
        )
        assert result.device_id == device  # the owner is not affected by 50 failures

        # the attack goes on: each address once more, 100 failures on the device
        for ip in attackers:
            with pytest.raises(Unauthorized):
                await _guess(svc, device, ip)
        bar = WalletLimits().failed_auth_per_device
        assert (bar.limit, bar.window) == (100, 300)
        with pytest.raises(TooManyRequests):  # the attacker is throttled, from any address
            await _guess(svc, device, "192.0.2.200")
        cid, challenge = await svc.login_challenge(device, ip=OWNER_IP)
        with pytest.raises(TooManyRequests) as refused:  # the owner only waits ...
            await svc.login(
                challenge_id=cid,
                device_id=device,
                counter=2,
                signature=_signature(key, challenge, device, 2),
                ip=OWNER_IP,
            )
        assert refused.value.retry_after <= bar.window + 1
        now[0] += refused.value.retry_after  # ... for the short window, then logs in
        cid, challenge = await svc.login_challenge(device, ip=OWNER_IP)
        result = await svc.login(
            challenge_id=cid,
            device_id=device,
            counter=3,
            signature=_signature(key, challenge, device, 3),
            ip=OWNER_IP,
        )
        assert result.device_id == device
    finally:
        await store.aclose()
        await rt.aclose()


def test_documented_defaults_of_the_relying_party_limits() -> None:
    limits = OidcLimits()
    for rule in (limits.par_per_ip, limits.par_per_client, limits.token_per_client):
        assert (rule.limit, rule.window) == (10_000, 10)


# -- the relying parties' endpoints -----------------------------------------------------------
@pytest.fixture
def small_limits(monkeypatch: pytest.MonkeyPatch) -> OidcLimits:
    limits = OidcLimits(
        par_per_ip=RateLimit(limit=4, window=60),
        par_per_client=RateLimit(limit=3, window=60),
        token_per_client=RateLimit(limit=1, window=60),
    )
    monkeypatch.setattr(oidc_service, "OidcLimits", lambda: limits)
    return limits


@pytest.fixture
def rp() -> FakeRp:
    return FakeRp()


class CachingResolver(StubResolver):
    """A resolver with a cache (as the federation's registry has): ``cached`` answers without
    fetching, ``resolve`` stands for a fetch and is counted."""

    def __init__(self, rp: FakeRp, *, warm: bool) -> None:
        super().__init__(rp)
        self.warm = warm
        self.fetches = 0

    async def cached(self, client_id: str) -> ResolvedRelyingParty | None:
        return await super().resolve(client_id) if self.warm and client_id == RP else None

    async def resolve(self, client_id: str) -> ResolvedRelyingParty:
        self.fetches += 1
        return await super().resolve(client_id)


@pytest.fixture(params=["plain", "cached"])
def resolver(request: pytest.FixtureRequest, rp: FakeRp) -> StubResolver:
    """A resolver without a cache of its own (the address is counted before it is asked), and
    one whose cache holds the RP (the address counts in the round trip that stores the PAR)."""
    return StubResolver(rp) if request.param == "plain" else CachingResolver(rp, warm=True)


@pytest.fixture
def client(
    settings: Settings, resolver: StubResolver, small_limits: OidcLimits
) -> Iterator[TestClient]:
    with TestClient(build_app(settings, resolver=resolver), base_url=IDP) as c:
        yield c


def _par(client: TestClient, rp: FakeRp | None, ip: str) -> tuple[int, dict[str, str], str]:
    headers = {"X-Forwarded-For": ip, **(rp.cert_header() if rp else {})}
    resp = client.post(f"{IDP}/PAR_Auth", data=par_form(pkce()[1]), headers=headers)
    return resp.status_code, resp.json(), resp.headers.get("retry-after", "")


def test_par_is_limited_per_address_from_the_trusted_proxy(
    client: TestClient, rp: FakeRp, small_limits: OidcLimits
) -> None:
    # unauthenticated PARs (no client certificate) count against their address too
    codes = [_par(client, None, "203.0.113.5")[0] for _ in range(small_limits.par_per_ip.limit)]
    assert 429 not in codes
    status, body, retry_after = _par(client, rp, "203.0.113.5")
    assert status == 429 and body["error"] == "temporarily_unavailable"
    assert 0 < int(retry_after) <= 61
    assert _par(client, rp, "203.0.113.6")[0] == 201  # another address


def test_par_is_limited_per_client_and_only_authenticated_pars_spend_its_budget(
    client: TestClient, rp: FakeRp, small_limits: OidcLimits
) -> None:
    # someone without the RP's certificate cannot spend the RP's budget
    for n in range(10):
        assert _par(client, None, f"203.0.113.{n + 10}")[0] in (400, 401)
    limit = small_limits.par_per_client.limit
    codes = [_par(client, rp, f"198.51.100.{n}")[0] for n in range(limit + 1)]
    assert codes == [201] * limit + [429]
    status, body, retry_after = _par(client, rp, "198.51.100.99")
    assert status == 429 and body["error"] == "temporarily_unavailable" and int(retry_after) > 0


def test_par_counts_the_address_before_a_client_is_fetched(
    settings: Settings, rp: FakeRp, small_limits: OidcLimits
) -> None:
    resolver = CachingResolver(rp, warm=False)  # nothing cached: resolving fetches
    with TestClient(build_app(settings, resolver=resolver), base_url=IDP) as client:
        limit = small_limits.par_per_ip.limit
        # without a client certificate: each is fetched, refused and counted
        assert [_par(client, None, "203.0.113.9")[0] for _ in range(limit)] == [400] * limit
        assert resolver.fetches == limit
        assert _par(client, rp, "203.0.113.9")[0] == 429
        assert resolver.fetches == limit  # refused before the fetch
        assert _par(client, rp, "203.0.113.10")[0] == 201


def test_par_over_the_address_limit_is_refused_before_it_is_audited(
    settings: Settings, rp: FakeRp, small_limits: OidcLimits
) -> None:
    """A flood of refused PARs from one address reaches the audit trail only up to the
    address's limit, also when the RP comes from the cache (the address is counted last)."""
    resolver = CachingResolver(rp, warm=True)
    limit = small_limits.par_per_ip.limit
    with TestClient(build_app(settings, resolver=resolver), base_url=IDP) as client:
        codes = [_par(client, None, "203.0.113.8")[0] for _ in range(limit + 3)]
        assert codes[:limit] == [400] * limit and codes[limit:] == [429] * 3
        assert _par(client, rp, "203.0.113.8")[0] == 429  # an accepted one too, now
    assert resolver.fetches == 0

    async def refusals() -> int:
        rt = await open_runtime(settings, migrate=False)
        try:
            events = [i.event for i in await rt.audit.read() if isinstance(i, AuditEntry)]
        finally:
            await rt.aclose()
        return sum(e.kind is AuditKind.AUTHORIZATION_REQUEST for e in events)

    assert asyncio.run(refusals()) == limit


def _code(client: TestClient, rp: FakeRp, wallet_session: str) -> tuple[str, str]:
    verifier, challenge = pkce()
    pushed = client.post(f"{IDP}/PAR_Auth", data=par_form(challenge), headers=rp.cert_header())
    assert pushed.status_code == 201, pushed.text
    consent = client.post(
        f"{IDP}/wallet/v1/authorizations",
        json={
            "client_id": RP,
            "request_uri": pushed.json()["request_uri"],
            "selected_claims": ["urn:telematik:claims:id"],
        },
        headers={"Authorization": f"Bearer {wallet_session}"},
    )
    assert consent.status_code == 200, consent.text
    return parse_qs(urlsplit(consent.json()["redirect"]).query)["code"][0], verifier


def test_token_requests_are_limited_per_client(
    client: TestClient, settings: Settings, rp: FakeRp, tmp_path: Path
) -> None:
    session = enrolled_wallet(client, settings, tmp_path, ROWS[1]).login().session
    codes = [_code(client, rp, session) for _ in range(2)]

    def redeem(code: str, verifier: str) -> tuple[int, dict[str, str], str]:
        form = token_form(code, verifier)
        resp = client.post(f"{IDP}/token", data=form, headers=rp.cert_header())
        return resp.status_code, resp.json(), resp.headers.get("retry-after", "")

    # a token request without the client certificate does not spend the client's budget
    unauthenticated = client.post(
        f"{IDP}/token",
        data=token_form("x" * 43, "v" * 43),
    )
    assert unauthenticated.status_code in (400, 401)
    assert redeem(*codes[0])[0] == 200
    status, body, retry_after = redeem(*codes[1])
    assert status == 429 and body["error"] == "temporarily_unavailable"
    assert 0 < int(retry_after) <= 61
