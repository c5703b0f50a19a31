"""The one OAuth / OIDC error hierarchy (RFC 6749 §4.1.2.1 and §5.2, RFC 9126 §2.3, OIDC Core
§3.1.2.6), rendered as gematik does: ``{"error", "error_description"}`` as
``application/json; charset=utf-8`` (gematik-sectoral-idp.md §7, gsi ``GsiExceptionHandler``).

``redirectable`` says whether the error may be sent to the client's ``redirect_uri``; that is
only allowed once the client and its ``redirect_uri`` are validated (CONVENTIONS 4). Errors
about the client itself, the request_uri or the token request are always rendered.

A description names the check that failed; it never repeats personal data (CONVENTIONS 15).
"""

from __future__ import annotations

import json
from typing import ClassVar


class OAuthError(Exception):
    """A refused OAuth / OIDC request."""

    error: ClassVar[str] = "invalid_request"
    default_status: ClassVar[int] = 400
    redirectable: ClassVar[bool] = False

    def __init__(self, description: str, *, status_code: int | None = None) -> None:
        super().__init__(description)
        self.description = description
        self.status_code = self.default_status if status_code is None else status_code

    def to_dict(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.description!r}, status_code={self.status_code})"


class InvalidRequestError(OAuthError):
    error = "invalid_request"
    redirectable = True


class InvalidClientError(OAuthError):
    error = "invalid_client"
    default_status = 401  # RFC 6749 §5.2


class InvalidGrantError(OAuthError):
    error = "invalid_grant"


class UnauthorizedClientError(OAuthError):
    error = "unauthorized_client"
    redirectable = True


class UnsupportedGrantTypeError(OAuthError):
    error = "unsupported_grant_type"


class InvalidScopeError(OAuthError):
    error = "invalid_scope"
    redirectable = True


class AccessDeniedError(OAuthError):
    error = "access_denied"
    default_status = 403
    redirectable = True


class UnsupportedResponseTypeError(OAuthError):
    error = "unsupported_response_type"
    redirectable = True


class LoginRequiredError(OAuthError):
    """OIDC Core §3.1.2.6: ``prompt=none`` but the user must authenticate."""

    error = "login_required"
    redirectable = True


class ServerError(OAuthError):
    error = "server_error"
    default_status = 500
    redirectable = True


class TemporarilyUnavailableError(OAuthError):
    error = "temporarily_unavailable"
    default_status = 503
    redirectable = True


class InvalidRequestUriError(OAuthError):
    """RFC 9126 §2.2 / RFC 9101 §7: unknown or expired ``request_uri``.

    Rendered, never redirected: without a valid request_uri there is no validated redirect_uri.
    """

    error = "invalid_request_uri"
