"""The one error hierarchy (CONVENTIONS 4; gematik-sectoral-idp.md §7 error format)."""

from __future__ import annotations

import json

import pytest

from healthid.protocol.oauth import errors

CODES = {
    errors.InvalidRequestError: ("invalid_request", 400, True),
    errors.InvalidClientError: ("invalid_client", 401, False),
    errors.InvalidGrantError: ("invalid_grant", 400, False),
    errors.UnauthorizedClientError: ("unauthorized_client", 400, True),
    errors.UnsupportedGrantTypeError: ("unsupported_grant_type", 400, False),
    errors.InvalidScopeError: ("invalid_scope", 400, True),
    errors.AccessDeniedError: ("access_denied", 403, True),
    errors.UnsupportedResponseTypeError: ("unsupported_response_type", 400, True),
    errors.LoginRequiredError: ("login_required", 400, True),
    errors.ServerError: ("server_error", 500, True),
    errors.TemporarilyUnavailableError: ("temporarily_unavailable", 503, True),
    errors.InvalidRequestUriError: ("invalid_request_uri", 400, False),
}


@pytest.mark.parametrize(
    ("cls", "expected"), CODES.items(), ids=lambda v: getattr(v, "__name__", "")
)
def test_error_code_status_and_redirectability(
    cls: type[errors.OAuthError], expected: tuple[str, int, bool]
) -> None:
    error = cls("what failed")
    assert issubclass(cls, errors.OAuthError)
    assert (error.error, error.status_code, error.redirectable) == expected
    assert json.loads(error.to_json()) == {"error": expected[0], "error_description": "what failed"}


def test_error_status_can_be_overridden_per_instance() -> None:
    assert errors.UnauthorizedClientError("x", status_code=401).status_code == 401


def test_error_json_uses_snake_case_error_description() -> None:
    assert '"error_description"' in errors.InvalidRequestError("ä").to_json()
