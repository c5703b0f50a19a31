"""RFC 7636 with S256 only (gematik-sectoral-idp.md §2 step 2)."""

from __future__ import annotations

import pytest
from oauth_factory import CODE_CHALLENGE, CODE_VERIFIER

from healthid.protocol.oauth import pkce
from healthid.protocol.oauth.errors import InvalidRequestError


def test_s256_matches_the_testsuite_vector() -> None:
    assert pkce.s256(CODE_VERIFIER) == CODE_CHALLENGE
    assert pkce.verify(CODE_VERIFIER, CODE_CHALLENGE)


def test_s256_matches_rfc7636_appendix_b() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert pkce.s256(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_pkce_rejects_plain_method() -> None:
    with pytest.raises(InvalidRequestError):
        pkce.check_challenge_method("plain")


def test_pkce_rejects_wrong_verifier() -> None:
    assert not pkce.verify("a" * 43, CODE_CHALLENGE)


@pytest.mark.parametrize("verifier", ["a" * 42, "a" * 129, "a" * 42 + "!", "a" * 42 + "="])
def test_pkce_rejects_verifier_outside_rfc7636_syntax(verifier: str) -> None:
    with pytest.raises(InvalidRequestError):
        pkce.verify(verifier, CODE_CHALLENGE)


def test_pkce_accepts_verifier_bounds() -> None:
    for verifier in ("a" * 43, "-._~" * 32):
        assert pkce.verify(verifier, pkce.s256(verifier))


@pytest.mark.parametrize("challenge", [CODE_CHALLENGE[:-1], CODE_CHALLENGE + "=", "+" * 43])
def test_pkce_rejects_challenge_that_is_not_s256(challenge: str) -> None:
    with pytest.raises(InvalidRequestError):
        pkce.check_challenge(challenge)
