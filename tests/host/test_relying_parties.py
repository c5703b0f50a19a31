"""Automatic RP registration against an in-process fake federation (spec §4)."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

import httpx
import pytest

from federation_testlib import Key, new_key, self_signed_cert_b64
from healthid.host.fetch import CONTENT_TYPE_ENTITY_STATEMENT, GuardedFetcher
from healthid.host.relying_parties import (
    MAX_RP_CACHE_SECONDS,
    NEGATIVE_CACHE_SECONDS,
    CachingResolver,
    RelyingPartyError,
    RelyingPartyRegistry,
    cached_relying_party,
    check_client_id,
    deserialise_relying_party,
    serialise_relying_party,
)
from healthid.protocol.federation import sign_subordinate_statement
from healthid.protocol.federation.statements import sign_entity_statement
from healthid.store.ephemeral import MemoryEphemeralStore

NOW = 1_750_000_000
MASTER = "https://master.example"
RP = "https://rp.example"
FETCH_PATH = "/federation/fetch"
PUBLIC_IP = "93.184.215.14"


@dataclass
class FakeFederation:
    """A master and one RP, signed with the pure functions, served through MockTransport."""

    clock: list[float]
    master_key: Key = field(default_factory=lambda: new_key("puk_fedmaster_sig"))
    rp_key: Key = field(default_factory=lambda: new_key("puk_fd_sig"))
    tls_key: Key = field(default_factory=lambda: new_key("puk_tls_sig"))
    enc_key: Key = field(default_factory=lambda: new_key("puk_fd_enc"))
    vouched: set[str] = field(default_factory=lambda: {RP})
    master_signer: Key | None = None  # sign the master statements with another key
    rp_lifetime: int = 3600
    hits: Counter[str] = field(default_factory=Counter)

    @property
    def now(self) -> int:
        return int(self.clock[0])

    def master_configuration(self) -> str:
        signer = self.master_signer or self.master_key
        claims = {
            "iss": MASTER,
            "sub": MASTER,
            "iat": self.now,
            "exp": self.now + 86400,
            "jwks": self.master_key.jwks,
            "metadata": {"federation_entity": {"federation_fetch_endpoint": MASTER + FETCH_PATH}},
        }
        return sign_entity_statement(claims, kid=signer.kid, signer=signer.sign)

    def subordinate(self, sub: str) -> str:
        signer = self.master_signer or self.master_key
        return sign_subordinate_statement(
            master_entity_id=MASTER,
            subject=sub,
            subject_jwks=self.rp_key.jwks,
            metadata={"openid_relying_party": {"client_registration_types": ["automatic"]}},
            now=self.now,
            signer=signer.sign,
            kid=signer.kid,
        )

    def rp_configuration(self) -> str:
        tls = {**self.tls_key.jwk(), "x5c": [self_signed_cert_b64(self.tls_key.private, "rp tls")]}
        claims = {
            "iss": RP,
            "sub": RP,
            "iat": self.now,
            "exp": self.now + self.rp_lifetime,
            "jwks": self.rp_key.jwks,
            "authority_hints": [MASTER],
            "metadata": {
                "openid_relying_party": {
                    "redirect_uris": [RP + "/cb"],
                    "scope": "openid urn:telematik:versicherter",
                    "jwks": {"keys": [tls, self.enc_key.jwk("enc")]},
                }
            },
        }
        return sign_entity_statement(claims, kid=self.rp_key.kid, signer=self.rp_key.sign)

    def handle(self, request: httpx.Request) -> httpx.Response:
        assert request.url.host == PUBLIC_IP  # production path: pinned address
        origin = f"https://{request.headers['host']}"
        path = request.url.path
        self.hits[origin + path] += 1
        if origin == MASTER and path == "/.well-known/openid-federation":
            return self.statement(self.master_configuration())
        if origin == MASTER and path == FETCH_PATH:
            sub = request.url.params.get("sub", "")
            if request.url.params.get("iss") != MASTER or sub not in self.vouched:
                return httpx.Response(
                    400, json={"error": "invalid_request", "gematik_code": "6011"}
                )
            return self.statement(self.subordinate(sub))
        if origin == RP and path == "/.well-known/openid-federation":
            return self.statement(self.rp_configuration())
        return httpx.Response(404)

    @staticmethod
    def statement(token: str) -> httpx.Response:
        headers = {"content-type": f"{CONTENT_TYPE_ENTITY_STATEMENT};charset=UTF-8"}
        return httpx.Response(200, headers=headers, content=token.encode())


@pytest.fixture
def clock() -> list[float]:
    return [float(NOW)]


@pytest.fixture
def federation(clock: list[float]) -> FakeFederation:
    return FakeFederation(clock=clock)


async def _public(host: str, port: int) -> list[str]:
    return [PUBLIC_IP]


def registry(federation: FakeFederation, clock: list[float]) -> RelyingPartyRegistry:
    fetcher = GuardedFetcher(transport=httpx.MockTransport(federation.handle), resolver=_public)
    return RelyingPartyRegistry(
        fetcher,
        MemoryEphemeralStore(clock=lambda: clock[0]),
        master_entity_id=MASTER,
        master_jwks=federation.master_key.jwks,
        clock=lambda: clock[0],
    )


async def test_registry_resolves_a_vouched_rp(
    federation: FakeFederation, clock: list[float]
) -> None:
    rp = await registry(federation, clock).resolve(RP)
    assert rp.client_id == RP and rp.redirect_uris == (RP + "/cb",)
    assert "urn:telematik:versicherter" in rp.scopes and rp.expires_at == NOW + 3600
    assert len(rp.keys.tls_certificates) == 1 and rp.keys.encryption_jwk is not None
    assert rp.metadata["client_registration_types"] == ["automatic"]  # master's rule applied


async def test_registry_answers_from_the_cache_without_fetching_again(
    federation: FakeFederation, clock: list[float]
) -> None:
    reg = registry(federation, clock)
    first = await reg.resolve(RP)
    fetched = sum(federation.hits.values())
    clock[0] += 600
    again = await reg.resolve(RP)
    assert sum(federation.hits.values()) == fetched == 3
    assert again == first


async def test_registry_cached_answers_only_from_the_cache(
    federation: FakeFederation, clock: list[float]
) -> None:
    reg = registry(federation, clock)
    assert isinstance(reg, CachingResolver)
    assert await reg.cached(RP) is None  # not registered yet: that would fetch
    assert sum(federation.hits.values()) == 0
    first = await reg.resolve(RP)
    fetched = sum(federation.hits.values())
    assert await reg.cached(RP) == first
    assert await cached_relying_party(reg, RP) == first
    assert await reg.cached("not an entity id") is None  # resolve says why
    clock[0] += 3601  # the chain expired: resolving fetches again
    assert await reg.cached(RP) is None
    assert sum(federation.hits.values()) == fetched


async def test_registry_cached_forbids_answering_a_refused_client(
    federation: FakeFederation, clock: list[float]
) -> None:
    federation.vouched = set()
    reg = registry(federation, clock)
    with pytest.raises(RelyingPartyError):
        await reg.resolve(RP)
    assert await reg.cached(RP) is None


async def test_a_resolver_without_a_cache_is_never_asked_for_one() -> None:
    class Plain:
        async def resolve(self, client_id: str) -> object:
            raise AssertionError("cached_relying_party must not resolve")

    assert await cached_relying_party(Plain(), RP) is None


async def test_registry_refetches_after_the_chain_expires(
    federation: FakeFederation, clock: list[float]
) -> None:
    federation.rp_lifetime = 300
    reg = registry(federation, clock)
    await reg.resolve(RP)
    clock[0] += 301
    rp = await reg.resolve(RP)
    assert federation.hits[RP + "/.well-known/openid-federation"] == 2
    assert rp.expires_at == NOW + 301 + 300
    # the master's endpoint came from its cached, verified configuration
    assert federation.hits[MASTER + "/.well-known/openid-federation"] == 1


async def test_registry_cache_never_outlives_its_bound(
    federation: FakeFederation, clock: list[float]
) -> None:
    federation.rp_lifetime = 5 * MAX_RP_CACHE_SECONDS
    reg = registry(federation, clock)
    await reg.resolve(RP)
    clock[0] += MAX_RP_CACHE_SECONDS + 1
    await reg.resolve(RP)
    assert federation.hits[MASTER + FETCH_PATH] == 2


async def test_registry_refuses_an_rp_the_master_does_not_vouch_for(
    federation: FakeFederation, clock: list[float]
) -> None:
    federation.vouched = set()
    with pytest.raises(RelyingPartyError, match="does not vouch") as info:
        await registry(federation, clock).resolve(RP)
    assert info.value.reason == "not_vouched"
    # the requester's URL was never contacted
    assert federation.hits[RP + "/.well-known/openid-federation"] == 0


async def test_registry_refuses_a_master_statement_signed_by_an_unpinned_key(
    federation: FakeFederation, clock: list[float]
) -> None:
    federation.master_signer = new_key("puk_fedmaster_sig")  # same kid, different key
    with pytest.raises(RelyingPartyError) as info:
        await registry(federation, clock).resolve(RP)
    assert info.value.reason == "master_unusable"
    assert federation.hits[MASTER + FETCH_PATH] == 0  # the unverified endpoint was not used


async def test_registry_refuses_a_subordinate_statement_signed_by_an_unpinned_key(
    federation: FakeFederation, clock: list[float]
) -> None:
    reg = registry(federation, clock)
    await reg._master_fetch_endpoint()  # the master's configuration is genuine and cached
    federation.master_signer = new_key("puk_fedmaster_sig")
    with pytest.raises(RelyingPartyError, match="trust chain is refused") as info:
        await reg.resolve(RP)
    assert info.value.reason == "untrusted"


async def test_registry_refuses_an_rp_signed_with_an_unvouched_key(
    federation: FakeFederation, clock: list[float]
) -> None:
    genuine = federation.rp_key
    federation.rp_key = new_key(genuine.kid)
    vouched_jwks = genuine.jwks
    original = federation.subordinate

    def subordinate(sub: str) -> str:  # the master vouches for the genuine key only
        federation.rp_key, saved = genuine, federation.rp_key
        try:
            return original(sub)
        finally:
            federation.rp_key = saved

    federation.subordinate = subordinate  # type: ignore[method-assign]
    assert vouched_jwks != federation.rp_key.jwks
    with pytest.raises(RelyingPartyError, match="trust chain is refused"):
        await registry(federation, clock).resolve(RP)


async def test_registry_negative_caches_refusals(
    federation: FakeFederation, clock: list[float]
) -> None:
    federation.vouched = set()
    reg = registry(federation, clock)
    for _ in range(5):
        with pytest.raises(RelyingPartyError, match="does not vouch") as info:
            await reg.resolve(RP)
        assert info.value.reason == "not_vouched"
    assert federation.hits[MASTER + FETCH_PATH] == 1
    federation.vouched = {RP}
    clock[0] += NEGATIVE_CACHE_SECONDS + 1
    assert (await reg.resolve(RP)).client_id == RP


async def test_registry_resolves_concurrent_first_uses_once(
    federation: FakeFederation, clock: list[float]
) -> None:
    reg = registry(federation, clock)
    results = await asyncio.gather(*(reg.resolve(RP) for _ in range(10)))
    assert all(r == results[0] for r in results)
    assert federation.hits[MASTER + FETCH_PATH] == 1


async def test_registry_refuses_an_unreachable_rp(
    federation: FakeFederation, clock: list[float]
) -> None:
    other = "https://gone.example"
    federation.vouched = {other}
    with pytest.raises(RelyingPartyError) as info:
        await registry(federation, clock).resolve(other)
    assert info.value.reason == "unreachable"


@pytest.mark.parametrize(
    "client_id",
    [
        "",
        "http://rp.example",
        "https://rp.example?x=1",
        "https://rp.example/#f",
        "https://user@rp.example",
        "https://rp.example/ space",
        "https://",
        "https://rp.example:99999",
        "https://rp.example/" + "a" * 300,
        "javascript:alert(1)",
    ],
)
async def test_registry_rejects_a_client_id_that_is_no_entity_identifier(
    federation: FakeFederation, clock: list[float], client_id: str
) -> None:
    with pytest.raises(RelyingPartyError) as info:
        await registry(federation, clock).resolve(client_id)
    assert info.value.reason == "invalid_client_id"
    assert sum(federation.hits.values()) == 0


def test_client_id_allows_http_only_in_development() -> None:
    assert check_client_id("http://127.0.0.1:8090", development=True)
    with pytest.raises(RelyingPartyError):
        check_client_id("http://127.0.0.1:8090", development=False)


async def test_cache_form_round_trips(federation: FakeFederation, clock: list[float]) -> None:
    rp = await registry(federation, clock).resolve(RP)
    assert deserialise_relying_party(serialise_relying_party(rp)) == rp
    assert deserialise_relying_party(b"{not json") is None
    assert deserialise_relying_party(b'{"v": 99}') is None
