"""Isolation between policyholders, end to end (issue #5): the enclave and the host as separate
processes on PostgreSQL + Redis, driven over HTTP like the relying parties and the app.

- A sealed record moved to another policyholder in the database makes the ID token of either
  fail (no token carries the other's data). The vault-level half — a record or wrapped key
  opened under another pseudonym fails — is tests/enclave/test_vault.py
  (``test_record_refuses_other_owner_type_or_version``,
  ``test_wrapped_key_refuses_other_pseudonym``); here the operator edits PostgreSQL and the
  token endpoint is asked.
- One-time artefacts cannot be carried to another user or client: a code is redeemed once,
  not with another flow's PKCE verifier, not by another client; an authorization request
  consented by one user cannot be consented by another.
- 50 concurrent logins of 50 different people: each decrypted ID token carries exactly the
  person who logged in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from e2e_testlib import (
    Authorization,
    FlowDriver,
    RelyingParty,
    Stack,
    Wallet,
    async_client,
    claims_match,
    database_connection,
    running_stack,
)

from healthid.demo.synthetic import synthetic_rows

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

RP_A = "https://rp-a.e2e.example"
RP_B = "https://rp-b.e2e.example"
CONCURRENT = 50
SEED = 707
# wallet slots: 0..49 concurrent logins, then two per test below
REPLAY, PKCE, OTHER_CLIENT, CONSENT, RACE = 50, 52, 54, 56, 58
MOVED = {"swap record ciphertexts": 60, "move a record row": 62, "copy the sealed bundle": 64}
PEOPLE = 66


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with running_stack(list(synthetic_rows(PEOPLE, seed=SEED)), [RP_A, RP_B]) as running:
        yield running


@pytest.fixture(scope="module")
def wallets(stack: Stack) -> list[Wallet]:
    """One enrolled phone per synthetic person (eGK proofing through the host process)."""

    async def enrol_all() -> list[Wallet]:
        async with async_client(stack) as http:
            driver = FlowDriver(http, stack)
            return [await driver.enrol(row) for row in synthetic_rows(PEOPLE, seed=SEED)]

    return asyncio.run(enrol_all())


def rp(stack: Stack, client_id: str = RP_A) -> RelyingParty:
    return stack.rps[client_id]


def error_of(response: httpx.Response) -> str:
    """The OAuth error code of a refusal (a JSON body), or the status for anything else."""
    try:
        return str(response.json().get("error", response.status_code))
    except ValueError:
        return str(response.status_code)


def refused_without_token(response: httpx.Response) -> None:
    assert response.status_code >= 400, response.text[:300]
    assert "id_token" not in response.text


# -- 50 concurrent logins ------------------------------------------------------------------------
async def test_fifty_concurrent_logins_each_get_exactly_their_own_claims(
    stack: Stack, wallets: list[Wallet]
) -> None:
    group = wallets[:CONCURRENT]
    assert len({w.row["kvnr"] for w in group}) == CONCURRENT  # 50 different people
    async with async_client(stack, connections=CONCURRENT + 8) as http:
        driver = FlowDriver(http, stack)
        await driver.token_jwks()
        results = await asyncio.gather(
            *(driver.complete_login(w, rp(stack, (RP_A, RP_B)[i % 2])) for i, w in enumerate(group))
        )
    for wallet, claims in zip(group, results, strict=True):
        assert claims_match(claims, wallet.row) == [], wallet.device_id
        assert claims["urn:telematik:claims:id"] == wallet.row["kvnr"]
    assert len({c["sub"] for c in results}) == CONCURRENT  # pairwise subjects never repeat


# -- one-time artefacts ----------------------------------------------------------------------------
async def test_a_code_is_redeemed_once(stack: Stack, wallets: list[Wallet]) -> None:
    alice = wallets[REPLAY]
    async with async_client(stack) as http:
        driver = FlowDriver(http, stack)
        auth, code = await driver.authorize(alice, rp(stack))
        first = await driver.token_response(code, verifier=auth.verifier, rp=auth.rp)
        assert claims_match(await driver.id_token_claims(first, auth), alice.row) == []
        again = await driver.token_response(code, verifier=auth.verifier, rp=auth.rp)
    refused_without_token(again)
    assert error_of(again) == "invalid_grant"


async def test_a_code_with_another_users_pkce_verifier_is_refused(
    stack: Stack, wallets: list[Wallet]
) -> None:
    alice, bob = wallets[PKCE], wallets[PKCE + 1]
    async with async_client(stack) as http:
        driver = FlowDriver(http, stack)
        auth_a, code_a = await driver.authorize(alice, rp(stack))
        auth_b, code_b = await driver.authorize(bob, rp(stack))
        crossed = [
            await driver.token_response(code_a, verifier=auth_b.verifier, rp=auth_a.rp),
            await driver.token_response(code_b, verifier=auth_a.verifier, rp=auth_b.rp),
        ]
        # the failed attempt consumed the code (single use, consumed before it is checked)
        later = await driver.token_response(code_a, verifier=auth_a.verifier, rp=auth_a.rp)
    for response in crossed:
        refused_without_token(response)
        # RFC 7636 §4.6 names invalid_grant; the gematik reference (gsi) answers invalid_request
        assert error_of(response) in {"invalid_grant", "invalid_request"}
    refused_without_token(later)
    assert error_of(later) == "invalid_grant"


async def test_a_code_presented_by_another_client_is_refused(
    stack: Stack, wallets: list[Wallet]
) -> None:
    alice = wallets[OTHER_CLIENT]
    other = rp(stack, RP_B)
    async with async_client(stack) as http:
        driver = FlowDriver(http, stack)
        # relying party B redeems A's code as itself (its client_id, certificate, redirect)
        auth, code = await driver.authorize(alice, rp(stack))
        as_b = await driver.token_response(code, verifier=auth.verifier, rp=other)
        # ... or claims to be A but holds B's TLS certificate (mTLS binding of the client)
        auth, code = await driver.authorize(alice, rp(stack))
        wrong_cert = await driver.http.post(
            "/token",
            headers=other.mtls,
            data={
                "grant_type": "authorization_code",
                "code": code,
                "code_verifier": auth.verifier,
                "client_id": auth.rp.client_id,
                "redirect_uri": auth.rp.redirect_uri,
            },
        )
    refused_without_token(as_b)
    assert error_of(as_b) in {"invalid_grant", "invalid_client"}
    refused_without_token(wrong_cert)
    assert error_of(wrong_cert) in {"invalid_grant", "invalid_client"}


def code_of(response: httpx.Response) -> str | None:
    """The code in a consent's redirect (None: refused, or redirected with an error)."""
    if response.status_code != 200:
        return None
    codes = parse_qs(urlsplit(str(response.json().get("redirect", ""))).query).get("code")
    return codes[0] if codes else None


async def test_a_request_consented_by_one_user_cannot_be_consented_by_another(
    stack: Stack, wallets: list[Wallet]
) -> None:
    alice, bob = wallets[CONSENT], wallets[CONSENT + 1]
    async with async_client(stack) as http:
        driver = FlowDriver(http, stack)
        auth = await driver.par(rp(stack))
        claims = await driver.requested_claims(auth)
        code = await driver.consent(await driver.login(alice), auth, claims)
        second = await driver.consent_response(await driver.login(bob), auth, claims)
        assert code_of(second) is None, second.text
        assert second.status_code >= 400, second.text
        token = await driver.token_response(code, verifier=auth.verifier, rp=auth.rp)
        assert claims_match(await driver.id_token_claims(token, auth), alice.row) == []


async def test_two_users_racing_for_one_request_get_one_code_for_one_of_them(
    stack: Stack, wallets: list[Wallet]
) -> None:
    pair = wallets[RACE : RACE + 2]
    async with async_client(stack) as http:
        driver = FlowDriver(http, stack)
        auth = await driver.par(rp(stack))
        claims = await driver.requested_claims(auth)
        sessions = [await driver.login(w) for w in pair]
        answers = await asyncio.gather(
            *(driver.consent_response(s, auth, claims) for s in sessions)
        )
        codes = [code_of(a) for a in answers]
        assert sum(c is not None for c in codes) == 1, [a.text for a in answers]
        winner = next(w for w, c in zip(pair, codes, strict=True) if c is not None)
        code = next(c for c in codes if c is not None)
        token = await driver.token_response(code, verifier=auth.verifier, rp=auth.rp)
        assert claims_match(await driver.id_token_claims(token, auth), winner.row) == []


# -- sealed records moved between policyholders ----------------------------------------------------
async def pseudonym_of(conn: Any, wallet: Wallet) -> str:
    return str(
        await conn.fetchval("SELECT pseudonym FROM devices WHERE device_id = $1", wallet.device_id)
    )


async def move_sealed_data(stack: Stack, variant: str, a: Wallet, b: Wallet) -> None:
    """The operator's raw SQL: B's sealed master data ends up under A (or both are swapped)."""
    conn = await database_connection(stack.db_name)
    try:
        pa, pb = await pseudonym_of(conn, a), await pseudonym_of(conn, b)
        async with conn.transaction():
            if variant == "swap record ciphertexts":
                changed = await conn.execute(
                    "UPDATE records r SET ciphertext = o.ciphertext FROM records o"
                    " WHERE r.record_type = o.record_type AND r.pseudonym <> o.pseudonym"
                    " AND r.pseudonym IN ($1, $2) AND o.pseudonym IN ($1, $2)",
                    pa,
                    pb,
                )
            elif variant == "move a record row":
                await conn.execute("DELETE FROM records WHERE pseudonym = $1", pa)
                changed = await conn.execute(
                    "UPDATE records SET pseudonym = $1 WHERE pseudonym = $2", pa, pb
                )
            else:  # B's wrapped data key and record under A's pseudonym and KVNR index
                await conn.execute(
                    "UPDATE policyholders a SET wrapped_key = b.wrapped_key,"
                    " root_key_id = b.root_key_id FROM policyholders b"
                    " WHERE a.pseudonym = $1 AND b.pseudonym = $2",
                    pa,
                    pb,
                )
                changed = await conn.execute(
                    "UPDATE records a SET ciphertext = b.ciphertext, version = b.version"
                    " FROM records b WHERE a.record_type = b.record_type"
                    " AND a.pseudonym = $1 AND b.pseudonym = $2",
                    pa,
                    pb,
                )
        assert changed.split()[-1] != "0", changed  # the statement hit rows
    finally:
        await conn.close()


@pytest.mark.parametrize("variant", sorted(MOVED))
async def test_a_sealed_record_moved_to_another_policyholder_mints_no_token(
    stack: Stack, wallets: list[Wallet], variant: str
) -> None:
    a, b = wallets[MOVED[variant]], wallets[MOVED[variant] + 1]
    # whose token must now fail: the one who got foreign data, and whose data was taken away
    fails = {"copy the sealed bundle": (True, False)}.get(variant, (True, True))
    async with async_client(stack) as http:
        driver = FlowDriver(http, stack)
        for wallet in (a, b):  # both log in fine before the operator's edit
            assert claims_match(await driver.complete_login(wallet, rp(stack)), wallet.row) == []
        issued: list[tuple[Authorization, str]] = [
            await driver.authorize(w, rp(stack)) for w in (a, b)
        ]
        await move_sealed_data(stack, variant, a, b)
        for person, (auth, code), must_fail in zip((a, b), issued, fails, strict=True):
            response = await driver.token_response(
                code, verifier=auth.verifier, rp=auth.rp, new_connection=True
            )
            if not must_fail:  # untouched: still exactly this person
                claims = await driver.id_token_claims(response, auth)
                assert claims_match(claims, person.row) == []
                continue
            refused_without_token(response)
            for someone in (a, b):  # nothing of either person comes back in the refusal
                assert someone.row["kvnr"] not in response.text
                assert someone.row["family_name"] not in response.text
