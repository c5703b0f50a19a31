"""Security checklist §B5 "Clock skew": our clock 30 s ahead of or behind the relying party's
and the federation master's must not break the flow: their statements issued up to 30 s "in
the future" are accepted, and the ID token we mint verifies at their end (``iat``, ``exp``).
A statement more than 60 s in the future (CLOCK_SKEW_SECONDS) is refused.

Every party has its own injected clock: the loopback federation signs with the peers' clock,
the IdP's registry resolves with ours, and the relying party verifies at its own ``now``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from faults_testlib import (
    FederatedIdp,
    LoopbackFederation,
    RecordingStore,
    code_of,
    consent,
    enrolled_wallet,
    member_form,
    push,
    redeem,
    rp_accepts,
    rp_fetches_idp,
)

from healthid.demo.rp_protocol import DemoRpError
from healthid.demo.synthetic import synthetic_rows
from healthid.protocol.jose import CLOCK_SKEW_SECONDS, decrypt_id_token
from healthid.protocol.jose.keys import b64url_decode
from healthid.settings import Settings
from rp_testlib import FakeRp, pkce
from stack_testlib import import_synthetic_registry

SKEW = 30  # seconds: the drift the checklist says the platform must survive
REJECT_BEYOND = 60  # seconds: the checklist's "reject beyond +60 s" (CLOCK_SKEW_SECONDS honours it)
ROWS = list(synthetic_rows(3, seed=31))


def payload(token: str) -> dict[str, Any]:
    return dict(json.loads(b64url_decode(token.split(".")[1])))


@pytest.mark.parametrize("ours_ahead_by", [SKEW, -SKEW], ids=["ours-ahead", "ours-behind"])
def test_the_flow_survives_our_clock_30_seconds_off_the_peers(
    settings: Settings, federation: LoopbackFederation, tmp_path: Path, ours_ahead_by: int
) -> None:
    def peers() -> float:  # the master's and the RP's clock
        return time.time() - ours_ahead_by

    federation.clock = peers
    rp = FakeRp()
    client_id = federation.add_rp("skewed", rp)
    form = member_form(federation, client_id)
    import_synthetic_registry(settings, 3, seed=31)
    with FederatedIdp(settings, federation, clock=time.time) as idp:
        wallet = enrolled_wallet(idp.client, settings, tmp_path / "wallet", ROWS[0])
        verifier, challenge = pkce()
        status, body = push(idp.client, rp, challenge, **form)
        assert status == 201, body  # the chain's iat lies up to 30 s in our future: accepted
        status, body = consent(idp.client, wallet, body["request_uri"], client_id=client_id)
        assert status == 200, body
        status, body = redeem(idp.client, rp, code_of(body["redirect"]), verifier, **form)
        assert status == 200, body

        # the RP, on its clock, verifies our entity configuration, signed JWKS and ID token
        rp_now = int(peers())
        view = rp_fetches_idp(idp.client, settings, now=rp_now)
        claims = rp_accepts(view, body["id_token"], rp, now=rp_now, client_id=client_id)
    assert abs(claims["iat"] - rp_now - ours_ahead_by) <= 2  # the skew was real
    assert claims["exp"] - claims["iat"] == 300
    assert idp.cache.cached_as_valid(client_id)


@pytest.mark.parametrize(
    ("whose", "ahead", "refused"),
    [
        ("rp", CLOCK_SKEW_SECONDS, False),
        ("rp", REJECT_BEYOND + 1, True),
        ("master", CLOCK_SKEW_SECONDS, False),
        ("master", REJECT_BEYOND + 1, True),
    ],
    ids=["rp-at-tolerance", "rp-61s-refused", "master-at-tolerance", "master-61s-refused"],
)
def test_a_statement_more_than_60_seconds_in_the_future_is_refused(
    settings: Settings, federation: LoopbackFederation, whose: str, ahead: int, refused: bool
) -> None:
    """Frozen clocks make the boundary exact: ``iat = our now + ahead``."""
    ours = float(int(time.time()))
    future = ours + ahead
    rp = FakeRp()
    if whose == "rp":
        client_id = federation.add_rp("early", rp, clock=lambda: future)
        federation.clock = lambda: ours
    else:
        client_id = federation.add_rp("early", rp, clock=lambda: ours)
        federation.clock = lambda: future
    with FederatedIdp(settings, federation, clock=lambda: ours) as idp:
        _, challenge = pkce()
        status, body = push(idp.client, rp, challenge, **member_form(federation, client_id))
    cache: RecordingStore = idp.cache
    if not refused:
        assert status == 201, body
        assert cache.cached_as_valid(client_id)
        return
    assert "future" in body["error_description"], body
    if whose == "rp":  # the client's own statement: the client is refused
        assert (status, body["error"]) == (401, "invalid_client")
    else:  # the master's statement: not the client's fault, try again later
        assert (status, body["error"]) == (503, "temporarily_unavailable")
    assert not cache.cached_as_valid(client_id)


def test_our_id_token_is_refused_by_a_relying_party_more_than_60_seconds_behind(
    settings: Settings, federation: LoopbackFederation, tmp_path: Path
) -> None:
    """The other side of the bound, at the relying party: why our clock is NTP-monitored.
    The RP's ``now`` is set relative to the token's own ``iat``, so the boundary is exact."""
    rp = FakeRp()
    client_id = federation.add_rp("strict", rp)
    form = member_form(federation, client_id)
    import_synthetic_registry(settings, 3, seed=31)
    with FederatedIdp(settings, federation, clock=time.time) as idp:
        wallet = enrolled_wallet(idp.client, settings, tmp_path / "wallet", ROWS[1])
        verifier, challenge = pkce()
        status, body = push(idp.client, rp, challenge, **form)
        status, body = consent(idp.client, wallet, body["request_uri"], client_id=client_id)
        status, body = redeem(idp.client, rp, code_of(body["redirect"]), verifier, **form)
        assert status == 200, body
        id_token = body["id_token"]
        iat = payload(decrypt_id_token(id_token, private_key=rp.enc_key))["iat"]
        view = rp_fetches_idp(idp.client, settings, now=iat)
    rp_accepts(view, id_token, rp, now=iat - CLOCK_SKEW_SECONDS, client_id=client_id)
    with pytest.raises(DemoRpError, match=r"future|not valid yet"):
        rp_accepts(view, id_token, rp, now=iat - REJECT_BEYOND - 1, client_id=client_id)
    # and at the far end of its life: 300 s, plus the RP's tolerance
    rp_accepts(view, id_token, rp, now=iat + 300 + CLOCK_SKEW_SECONDS - 1, client_id=client_id)
    with pytest.raises(DemoRpError, match="expired"):
        rp_accepts(view, id_token, rp, now=iat + 300 + CLOCK_SKEW_SECONDS, client_id=client_id)
