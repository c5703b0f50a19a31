"""Security checklist §B5 "Signing-key rotation mid-flight": the next key is in the signed
JWKS before it signs, the old one stays there until every ID token it signed has expired,
every kid is unique, and an authorization that is open while the key switches completes with
an ID token the relying party verifies, as does a token issued before the rotation.

gematik C_12299: hard cutovers caused outages; the fix is a transition phase plus
``signed_jwks_uri``. conformance ``oidcc-server-rotate-keys``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from faults_testlib import (
    IDP,
    RpView,
    code_of,
    consent,
    enrolled_wallet,
    push,
    redeem,
    rp_accepts,
    rp_fetches_idp,
    rp_reads_idp,
    signing_kid,
)
from starlette.testclient import TestClient

from healthid import runtime
from healthid.demo.komp_test_ca import TestKompCa
from healthid.demo.synthetic import synthetic_rows
from healthid.host.federation_api import FEDERATION_PURPOSE, TOKEN_PURPOSE, FederationPublisher
from healthid.keys.file import FileKeyStore
from healthid.keys.rotation import (
    FEDERATION_CACHE_MAX,
    PUBLISH_LEAD,
    InMemoryKeyRingRepository,
    KeyRing,
    KeyRingRepository,
)
from healthid.protocol.jose import TYP_ID_TOKEN, check_times, sign_compact, verify_compact
from healthid.protocol.jose.errors import JoseError
from healthid.settings import Settings
from healthid.store.sql.keyring import SqlKeyRingRepository
from rp_testlib import RP, FakeRp, StubResolver, pkce
from stack_testlib import import_synthetic_registry

ID_TOKEN_LIFETIME = 300  # spec §8
T0 = 1_750_000_000
ROWS = list(synthetic_rows(3, seed=23))


# -- the schedule, with an injected clock ---------------------------------------------------
class Issuer:
    """The IdP's publisher and its token signing as the token endpoint does it (the active
    token key's kid and x5c, signed by the key store), all on one injected clock."""

    def __init__(self, settings: Settings, tmp_path: Path) -> None:
        self.now = T0
        self.store = FileKeyStore(tmp_path / "keys")
        repository = InMemoryKeyRingRepository()
        self.rings = {
            purpose: KeyRing(
                store=self.store,
                repository=repository,
                clock=lambda: self.now,
                max_signed_lifetime=lifetime,
            )
            for purpose, lifetime in runtime.KEY_PURPOSES.items()
        }
        self.publisher = FederationPublisher(
            config=runtime.provider_configuration(settings),
            key_store=self.store,
            federation_ring=self.rings[FEDERATION_PURPOSE],
            token_ring=self.rings[TOKEN_PURPOSE],
            token_x5c=TestKompCa.create(tmp_path / "komp").x5c_for,
            clock=lambda: self.now,
        )
        self.issuer = settings.public_url.rstrip("/")

    def run(self, step: Callable[[], Any]) -> Any:
        return asyncio.run(step())

    def id_token(self) -> str:
        """A signed ID token of now (the enclave signs the same way: active kid + x5c)."""
        key = self.run(lambda: self.rings[TOKEN_PURPOSE].active(TOKEN_PURPOSE))
        claims = {
            "iss": self.issuer,
            "aud": RP,
            "sub": "pairwise",
            "iat": self.now,
            "exp": self.now + ID_TOKEN_LIFETIME,
        }
        x5c = self.publisher.token_x5c(dict(key.public_jwk))
        return sign_compact(
            claims,
            kid=key.kid,
            typ=TYP_ID_TOKEN,
            signer=self.store.sign,
            extra_header={"x5c": x5c},
        )

    def rp_fetches(self) -> RpView:
        """What a relying party fetches now (its clock equals ours here)."""
        configuration = self.run(self.publisher.entity_configuration)
        signed = self.run(self.publisher.signed_jwks)
        return rp_reads_idp(configuration, signed, issuer=self.issuer, now=self.now)


def verifies(token: str, view: RpView, *, now: int) -> bool:
    """Whether a relying party holding ``view`` accepts the signed ID token at ``now``."""
    try:
        claims = verify_compact(token, jwks=view.token_jwks, typ=TYP_ID_TOKEN).claims
        check_times(claims, now=now)
    except JoseError:
        return False
    return True


def assert_unique_kids(view: RpView) -> None:
    assert len(set(view.kids)) == len(view.kids), view.kids


def test_signed_jwks_keeps_every_id_token_verifiable_through_a_rotation(
    settings: Settings, tmp_path: Path
) -> None:
    idp = Issuer(settings, tmp_path)
    for purpose, ring in idp.rings.items():
        idp.run(lambda ring=ring, purpose=purpose: ring.ensure(purpose))
    first = idp.run(lambda: idp.rings[TOKEN_PURPOSE].active(TOKEN_PURPOSE)).kid
    before_rotation = idp.id_token()
    assert idp.rp_fetches().token_kids == [first]

    # the rotation: both purposes get their next key, published now, signing after the lead
    idp.now = rotated_at = T0 + 60
    nxt = idp.run(lambda: idp.rings[TOKEN_PURPOSE].rotate(TOKEN_PURPOSE)).kid
    idp.run(lambda: idp.rings[FEDERATION_PURPOSE].rotate(FEDERATION_PURPOSE))
    published = idp.rp_fetches()
    assert_unique_kids(published)
    assert published.token_kids == [first, nxt], "the next key must be published before it signs"
    assert verifies(idp.id_token(), published, now=idp.now)
    assert verifies(before_rotation, published, now=idp.now)

    # an RP caches the entity configuration for up to 2 h: the oldest one it may still hold
    # at the switch was fetched then, and must already list the next federation key
    switched_at = rotated_at + PUBLISH_LEAD
    idp.now = switched_at - FEDERATION_CACHE_MAX
    assert idp.now > rotated_at
    cached_configuration = idp.rp_fetches().entity_configuration

    idp.now = switched_at - 1
    last_of_old = idp.id_token()  # the old key's last token, one second before the switch

    idp.now = switched_at
    first_of_new = idp.id_token()
    after_switch = idp.rp_fetches()
    assert_unique_kids(after_switch)
    assert after_switch.token_kids == [nxt, first]  # the active key first (keys[1])
    assert verifies(first_of_new, after_switch, now=idp.now)
    assert verifies(first_of_new, published, now=idp.now)  # a JWKS from before the switch
    assert verifies(last_of_old, after_switch, now=idp.now)
    # the signed JWKS is now signed by the next federation key, which the RP's cached
    # entity configuration already lists
    rp_reads_idp(cached_configuration, after_switch.signed_jwks, issuer=idp.issuer, now=idp.now)

    # the old key's last token stays verifiable with a fresh JWKS until it expires
    idp.now = switched_at + ID_TOKEN_LIFETIME - 2
    assert verifies(last_of_old, idp.rp_fetches(), now=idp.now)

    # once everything the old key signed has expired (plus the verifiers' skew), it goes
    retired = idp.run(lambda: idp.rings[TOKEN_PURPOSE].published(TOKEN_PURPOSE))
    old = next(r for r in retired if r.kid == first)
    assert old.expires_at is not None
    assert old.expires_at >= switched_at + ID_TOKEN_LIFETIME + 60  # CLOCK_SKEW_SECONDS
    idp.now = old.expires_at - 1
    assert first in idp.rp_fetches().token_kids
    idp.now = old.expires_at
    assert idp.rp_fetches().token_kids == [nxt]
    assert idp.run(lambda: idp.rings[TOKEN_PURPOSE].prune(TOKEN_PURPOSE)) == [first]


def test_a_published_key_without_its_certificate_chain_does_not_take_the_signed_jwks_down(
    settings: Settings, tmp_path: Path
) -> None:
    """Production reads each token key's chain from a file per kid: the operator installs
    the next key's certificate after `keys rotate token`. Until then the signed JWKS goes on
    serving the active key (the next one signs only after the publish lead)."""
    idp = Issuer(settings, tmp_path)
    for purpose, ring in idp.rings.items():
        idp.run(lambda ring=ring, purpose=purpose: ring.ensure(purpose))
    first = idp.run(lambda: idp.rings[TOKEN_PURPOSE].active(TOKEN_PURPOSE)).kid
    chains = idp.publisher.token_x5c

    def only_the_first(jwk: dict[str, Any]) -> list[str]:
        if jwk["kid"] != first:
            raise runtime.StartupError(f"no certificate chain for token key {jwk['kid']}")
        return chains(jwk)

    idp.publisher = replace(idp.publisher, token_x5c=only_the_first)
    idp.run(lambda: idp.rings[TOKEN_PURPOSE].rotate(TOKEN_PURPOSE))
    assert idp.rp_fetches().token_kids == [first]


# -- an open authorization while the key switches ------------------------------------------
async def _elapse_publish_lead(repository: KeyRingRepository, purpose: str, now: int) -> None:
    """Move the schedule of a rotation made earlier today to its switch at ``now``: the next
    key activates, the current one retires and expires once what it signed has expired. This
    is the state ``plan_rotation`` produces ``PUBLISH_LEAD`` after the rotation."""
    records = await repository.list(purpose)
    nxt = next(r for r in records if r.activate_at > now)
    current = next(r for r in records if r.is_active(now))
    await repository.update(replace(nxt, activate_at=now))
    lifetime = runtime.KEY_PURPOSES[purpose]
    await repository.update(replace(current, retire_at=now, expires_at=now + lifetime))


def _on_the_idp_database(settings: Settings, step: Callable[[runtime.Runtime], Any]) -> Any:
    """``step(runtime)`` on the app's database and key store, as `healthid keys ...` runs."""

    async def go() -> Any:
        rt = await runtime.open_runtime(settings, migrate=False)
        try:
            return await step(rt)
        finally:
            await rt.aclose()

    return asyncio.run(go())


def test_an_authorization_open_while_the_token_key_switches_completes_verifiably(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # every request rereads the key schedule (in production a worker's cached ring lags at
    # most KEY_RING_CACHE_SECONDS; the old key is still published then, so that is harmless)
    monkeypatch.setattr(runtime, "KEY_RING_CACHE_SECONDS", 0)
    import_synthetic_registry(settings, 3, seed=23)
    rp = FakeRp()
    with TestClient(runtime.build_app(settings, resolver=StubResolver(rp)), base_url=IDP) as client:
        wallet = enrolled_wallet(client, settings, tmp_path / "wallet", ROWS[1])

        # a token issued before the rotation
        verifier, challenge = pkce()
        status, body = push(client, rp, challenge)
        assert status == 201, body
        status, body = consent(client, wallet, body["request_uri"])
        status, body = redeem(client, rp, code_of(body["redirect"]), verifier)
        assert status == 200, body
        before_rotation = body["id_token"]
        view_before = rp_fetches_idp(client, settings, now=int(time.time()))
        (first,) = view_before.token_kids
        rp_accepts(view_before, before_rotation, rp, now=int(time.time()))
        assert signing_kid(before_rotation, rp) == first

        # the open authorization: PAR done, the user still in the insurer app
        verifier, challenge = pkce()
        status, body = push(client, rp, challenge)
        assert status == 201, body
        request_uri = body["request_uri"]

        # the operator rotates (`healthid keys rotate token`): the next key is published ...
        nxt = _on_the_idp_database(
            settings, lambda rt: rt.key_ring(TOKEN_PURPOSE).rotate(TOKEN_PURPOSE)
        ).kid
        published = rp_fetches_idp(client, settings, now=int(time.time()))
        assert published.token_kids == [first, nxt]
        # ... and, the publish lead later, signs; the authorization is still open
        _on_the_idp_database(
            settings,
            lambda rt: _elapse_publish_lead(
                SqlKeyRingRepository(rt.engine), TOKEN_PURPOSE, int(time.time())
            ),
        )

        status, body = consent(client, wallet, request_uri)
        assert status == 200, body
        status, body = redeem(client, rp, code_of(body["redirect"]), verifier)
        assert status == 200, body
        after_rotation = body["id_token"]

        view_after = rp_fetches_idp(client, settings, now=int(time.time()))
        assert view_after.token_kids == [nxt, first]
        assert len(set(view_after.kids)) == len(view_after.kids)
        now = int(time.time())
        claims = rp_accepts(view_after, after_rotation, rp, now=now)
        assert claims["aud"] == RP
        # signed with the new key, which the RP that fetched the JWKS before the switch knows
        assert signing_kid(after_rotation, rp) == nxt
        rp_accepts(published, after_rotation, rp, now=now)
        # the token issued before the rotation still verifies with the JWKS after it
        rp_accepts(view_after, before_rotation, rp, now=now)
