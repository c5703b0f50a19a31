"""PKCE (RFC 7636), S256 only: ``plain`` is refused (gematik-sectoral-idp.md §2 step 2,
gsi-testsuite PAR TC 003 expects 400 ``invalid_request`` for ``plain``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from healthid.protocol.oauth.errors import InvalidRequestError

S256 = "S256"
CODE_VERIFIER_MIN_LENGTH = 43  # RFC 7636 §4.1
CODE_VERIFIER_MAX_LENGTH = 128  # RFC 7636 §4.1
S256_CHALLENGE_LENGTH = 43  # BASE64URL(SHA-256) without padding, RFC 7636 §4.2

_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")  # RFC 7636 §4.1: unreserved characters
_S256_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")


def check_challenge_method(method: str) -> None:
    """Only S256 (RFC 7636 §4.2; gsi ``@Pattern(regexp = "S256")``)."""
    if method != S256:
        raise InvalidRequestError("code_challenge_method must be S256")


def check_challenge(challenge: str) -> None:
    """An S256 challenge is exactly 43 base64url characters (RFC 7636 §4.2)."""
    if _S256_CHALLENGE.fullmatch(challenge) is None:
        raise InvalidRequestError("code_challenge is not an S256 challenge")


def check_verifier(verifier: str) -> None:
    """43 to 128 characters of the unreserved set (RFC 7636 §4.1)."""
    if _VERIFIER.fullmatch(verifier) is None:
        raise InvalidRequestError("code_verifier must be 43 to 128 unreserved characters")


def s256(verifier: str) -> str:
    """BASE64URL-ENCODE(SHA256(ASCII(code_verifier))) (RFC 7636 §4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def verify(verifier: str, challenge: str) -> bool:
    """Whether ``verifier`` matches the stored S256 ``challenge``, in constant time."""
    check_verifier(verifier)
    # CONVENTIONS 8: constant-time comparison of the derived challenge
    return hmac.compare_digest(s256(verifier).encode("ascii"), challenge.encode("ascii"))
