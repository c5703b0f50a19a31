"""Refusals of the wallet API: an HTTP status and an OAuth-style error code, safe to show."""

from __future__ import annotations


class WalletError(Exception):
    """A refusal with an HTTP status and an OAuth-style error code; safe to show."""

    status = 400
    error = "invalid_request"

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class NotFound(WalletError):  # noqa: N818 - named after the HTTP status
    status = 404
    error = "not_found"


class Forbidden(WalletError):  # noqa: N818
    status = 403
    error = "access_denied"


class Unauthorized(WalletError):  # noqa: N818
    status = 401
    error = "invalid_token"


class TooManyRequests(WalletError):  # noqa: N818
    status = 429
    error = "slow_down"

    def __init__(self, description: str, retry_after: int) -> None:
        super().__init__(description)
        self.retry_after = retry_after


class Conflict(WalletError):  # noqa: N818
    status = 409
    error = "conflict"
