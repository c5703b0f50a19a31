"""Security checklist §B5 "Outbound fetch slow or huge": while the IdP resolves a relying
party's trust chain on its first PAR, a federation answer that is slow, endless or a redirect
gives a clean OAuth JSON error within the fetch bounds, does not block the worker for other
clients, and leaves nothing cached as a valid registration.

The federation runs on a real loopback HTTP server (``faults_testlib.LoopbackFederation``);
the IdP is the real app with the real registry and guarded fetcher (development mode: http on
loopback), unit-tested in ``tests/host/test_fetch.py``; here the bounds are seen through PAR.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from faults_testlib import (
    FETCH_PATH,
    WELL_KNOWN,
    FederatedIdp,
    LoopbackFederation,
    member_form,
    push,
)

from healthid.host import fetch
from healthid.settings import Settings
from rp_testlib import FakeRp, pkce

# What "quickly" means for a refused PAR whose fetch misbehaves: the fetch deadline it hit,
# plus the rest of the PAR (two good fetches, signature checks) on a shared, busy machine.
MARGIN_SECONDS = 2.5


def par(
    idp: FederatedIdp, federation: LoopbackFederation, client_id: str
) -> tuple[int, dict[str, Any]]:
    _, challenge = pkce()
    rp = federation.members[client_id].rp
    return push(idp.client, rp, challenge, **member_form(federation, client_id))


def timed_par(
    idp: FederatedIdp, federation: LoopbackFederation, client_id: str
) -> tuple[float, int, dict[str, Any]]:
    started = time.monotonic()
    status, body = par(idp, federation, client_id)
    return time.monotonic() - started, status, body


def assert_refused_cleanly(status: int, body: dict[str, Any], why: str) -> None:
    """An OAuth JSON error of the PAR endpoint naming the failed guard, not a 500."""
    assert status == 503, body
    assert body["error"] == "temporarily_unavailable"
    assert why in body["error_description"], body
    assert "request_uri" not in body


def test_par_for_a_trust_chain_that_resolves_on_loopback_is_accepted(
    settings: Settings, federation: LoopbackFederation
) -> None:
    """The baseline the fault cases below depart from: the good chain registers."""
    good = federation.add_rp("good", FakeRp())
    with FederatedIdp(settings, federation) as idp:
        status, body = par(idp, federation, good)
    assert status == 201, body
    assert idp.cache.cached_as_valid(good)
    assert federation.hits[f"/rp/good{WELL_KNOWN}"] == 1


@pytest.mark.parametrize(
    "target", ["rp_configuration", "master_statement"], ids=["rp-config", "master-fetch"]
)
def test_a_federation_answer_slower_than_the_read_timeout_refuses_only_that_par(
    settings: Settings, federation: LoopbackFederation, target: str
) -> None:
    """The real read timeout bounds the PAR; a concurrent PAR of a cached RP is served while
    the slow fetch hangs (the event loop is not blocked), and the slow RP is not cached."""
    good = federation.add_rp("good", FakeRp())
    slow = federation.add_rp("slow", FakeRp())
    key = f"/rp/slow{WELL_KNOWN}" if target == "rp_configuration" else f"{FETCH_PATH}:{slow}"
    federation.behaviour[key] = "slow"
    with FederatedIdp(settings, federation) as idp:
        assert par(idp, federation, good)[0] == 201  # registered and cached

        outcome: list[tuple[float, int, dict[str, Any]]] = []
        hanging = threading.Thread(target=lambda: outcome.append(timed_par(idp, federation, slow)))
        hanging.start()
        try:
            assert federation.arrival(key).wait(5), "the slow fetch never reached the server"
            elapsed, status, body = timed_par(idp, federation, good)
            assert status == 201, body
            assert elapsed < 2.0, f"a cached RP's PAR waited {elapsed:.1f} s for a slow fetch"
            assert hanging.is_alive(), "the slow PAR was answered before the good one"
        finally:
            hanging.join(timeout=fetch.READ_TIMEOUT_SECONDS + MARGIN_SECONDS + 5)
        assert not hanging.is_alive()
        ((elapsed, status, body),) = outcome
        assert_refused_cleanly(status, body, "timed out")
        assert (
            fetch.READ_TIMEOUT_SECONDS - 0.5
            <= elapsed
            <= (fetch.READ_TIMEOUT_SECONDS + MARGIN_SECONDS)
        )
        federation.release()
        # refused again (from the negative cache or a new fetch), never from a cached success
        assert par(idp, federation, slow)[0] != 201
    assert not idp.cache.cached_as_valid(slow)


def test_a_trickling_answer_is_cut_at_the_total_deadline(
    settings: Settings, federation: LoopbackFederation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slowloris keeps every read within the read timeout; the total deadline ends it."""
    assert fetch.TOTAL_TIMEOUT_SECONDS <= 10  # the production bound this test scales down
    monkeypatch.setattr(fetch, "TOTAL_TIMEOUT_SECONDS", 1.5)
    client_id = federation.add_rp("trickle", FakeRp())
    federation.behaviour[f"/rp/trickle{WELL_KNOWN}"] = "slowloris"
    with FederatedIdp(settings, federation) as idp:
        elapsed, status, body = timed_par(idp, federation, client_id)
    assert_refused_cleanly(status, body, "total deadline")
    assert elapsed <= 1.5 + MARGIN_SECONDS
    assert not idp.cache.cached_as_valid(client_id)


@pytest.mark.parametrize("behaviour", ["huge", "huge_declared"])
@pytest.mark.parametrize(
    "target", ["rp_configuration", "master_configuration"], ids=["rp-config", "master-config"]
)
def test_an_answer_over_the_byte_cap_is_cut_off(
    settings: Settings, federation: LoopbackFederation, behaviour: str, target: str
) -> None:
    client_id = federation.add_rp("huge", FakeRp())
    key = f"/rp/huge{WELL_KNOWN}" if target == "rp_configuration" else WELL_KNOWN
    federation.behaviour[key] = behaviour
    with FederatedIdp(settings, federation) as idp:
        elapsed, status, body = timed_par(idp, federation, client_id)
    assert_refused_cleanly(status, body, "larger than allowed")
    assert elapsed <= MARGIN_SECONDS
    # the IdP hung up long before the server's own limit (it reads at most 128 KiB)
    assert federation.huge_bytes_sent < 16 * 1024 * 1024
    assert not idp.cache.cached_as_valid(client_id)


@pytest.mark.parametrize(
    "target", ["rp_configuration", "master_statement"], ids=["rp-config", "master-fetch"]
)
def test_a_redirect_to_the_genuine_statement_is_not_followed(
    settings: Settings, federation: LoopbackFederation, target: str
) -> None:
    """The redirect target serves the genuine statement: following it would register."""
    client_id = federation.add_rp("moved", FakeRp())
    key = f"/rp/moved{WELL_KNOWN}" if target == "rp_configuration" else f"{FETCH_PATH}:{client_id}"
    federation.behaviour[key] = "redirect"
    with FederatedIdp(settings, federation) as idp:
        elapsed, status, body = timed_par(idp, federation, client_id)
    assert_refused_cleanly(status, body, "redirect")
    assert elapsed <= MARGIN_SECONDS
    assert federation.hits[key] == 1  # only the redirecting answer: /moved/... never asked
    assert not idp.cache.cached_as_valid(client_id)
