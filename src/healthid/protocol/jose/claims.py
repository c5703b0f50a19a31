"""Registered time claims with an injected clock (RFC 7519 §4.1.4-§4.1.6).

The caller passes ``now`` (seconds since the epoch, from its clock port); nothing here reads the
system clock (CONVENTIONS 2). The one tolerance is :data:`CLOCK_SKEW_SECONDS` (rule 6).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from healthid.protocol.jose.errors import Expired, InvalidClaims, NotYetValid

# Allowed difference between our clock and the issuer's, either way (RFC 7519 §4.1.4: "some
# small leeway"). An ID token lives 300 s (spec §8), so the skew must stay well below that.
CLOCK_SKEW_SECONDS: Final = 60


def int_claim(claims: Mapping[str, Any], name: str, *, required: bool) -> int | None:
    """``claims[name]`` as a NumericDate (an integer; a JSON boolean is not one)."""
    if name not in claims:
        if required:
            raise InvalidClaims(f"the {name} claim is missing")
        return None
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidClaims(f"the {name} claim is not an integer")
    return value


def check_times(claims: Mapping[str, Any], *, now: int, require_iat: bool = True) -> int:
    """Refuse expired, not-yet-valid or future-issued claims; return ``exp``.

    RFC 7519 §4.1.4: reject on or after ``exp``; §4.1.5: reject before ``nbf``; an ``iat`` in the
    future is refused too (OpenID Federation §3: ``iat`` is the issuing time).
    """
    exp = int_claim(claims, "exp", required=True)
    if exp is None:  # unreachable: required=True raises instead
        raise InvalidClaims("the exp claim is missing")
    iat = int_claim(claims, "iat", required=require_iat)
    nbf = int_claim(claims, "nbf", required=False)
    if now >= exp + CLOCK_SKEW_SECONDS:
        raise Expired("the token has expired")
    if nbf is not None and nbf > now + CLOCK_SKEW_SECONDS:
        raise NotYetValid("the token is not valid yet (nbf)")
    if iat is not None and iat > now + CLOCK_SKEW_SECONDS:
        raise NotYetValid("the token was issued in the future (iat)")
    return exp
