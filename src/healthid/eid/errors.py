"""The one error hierarchy of the eID-Server client (BSI TR-03130-1 eID-Interface).

Every exception derives from :class:`EidError`. Messages name the rule that failed and never
contain personal data, the PSK, or text the eID-Server sent (its ``ResultMessage`` may repeat
what it read from the card), so they are safe to log (CONVENTIONS.md rule 15).

- :class:`MalformedMessageError`: our hardened parser or our XSD refused a message (either
  direction): too large, not well-formed, a DTD, or not our schema.
- :class:`TransportError`: HTTP failed (timeout, status, redirect, size cap, TLS).
- :class:`SoapFaultError`: the eID-Server answered with a SOAP 1.1 Fault instead of a message.
- :class:`EidProtocolError`: a schema-valid answer breaks TR-03130-1 (PSK differs, weaker eID
  type than requested, a required element missing, ...).
- :class:`SessionError`: the caller misused the session state machine.
- :class:`EidResultError`: the eID-Server answered ``ResultMajor#error``; one subclass per
  ``ResultMinor`` of TR-03130-1 §3.4.1 (plus user cancellation, TR-03112-1 §4.2), and
  :class:`UnknownResultError` for any other code. These classes carry the name of their
  ResultMinor code (``getResult#invalidSession`` -> :class:`InvalidSession`) so a reader finds
  them by the rule's name; hence no ``Error`` suffix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from healthid.eid.session import EidSession


class EidError(Exception):
    """Base of every eID-Interface error."""


class MalformedMessageError(EidError):
    """A message is too large, not well-formed, carries a DTD, or does not match our XSD."""


class TransportError(EidError):
    """The HTTP exchange with the eID-Server failed."""


class SoapFaultError(EidError):
    """The eID-Server answered with a SOAP Fault; ``faultcode`` is its local name."""

    def __init__(self, faultcode: str) -> None:
        self.faultcode = faultcode
        super().__init__(f"the eID-Server answered with a SOAP fault ({faultcode})")


class EidProtocolError(EidError):
    """A schema-valid answer that TR-03130-1 does not allow; the session is abandoned."""


class AssuranceNotMetError(EidProtocolError):
    """The eID-Server said ok, but the eID type or level of assurance is weaker than requested.

    TR-03130-1 §3.3.12: the server MUST NOT accept a weaker eID type unless it was explicitly
    ALLOWED; we re-check its answer rather than trusting it.
    """


class SessionError(EidError):
    """The session cannot be used for this call (e.g. the RequestCounter is exhausted)."""


# --- ResultMinor (TR-03130-1 §3.4.1) ---------------------------------------------------------


class EidResultError(EidError):
    """``ResultMajor#error``; ``minor`` is the ResultMinor URI (``None`` if there was none)."""

    description: ClassVar[str] = "the eID-Server reported an error"

    def __init__(self, minor: str | None = None) -> None:
        self.minor = minor
        super().__init__(self.description)


class InternalError(EidResultError):
    """``common#internalError``: also the only answer to a bad WS-Security signature (§3.5.2)."""

    description = "the eID-Server reported an internal error"


class SchemaViolation(EidResultError):  # noqa: N818 (named after the ResultMinor code)
    """``common#schemaViolation``: the eID-Server's schema rejected our request."""

    description = "the eID-Server rejected our request as a schema violation"


class InvalidPsk(EidResultError):  # noqa: N818 (named after the ResultMinor code)
    """``useID#invalidPSK``: the PSK we sent cannot be processed."""

    description = "the eID-Server refused the pre-shared key we sent"


class TooManyOpenSessions(EidResultError):  # noqa: N818 (named after the ResultMinor code)
    """``useID#tooManyOpenSessions``: the eID-Server's session limit for us is reached."""

    description = "the eID-Server has too many open sessions for this eService"


class MissingArgument(EidResultError):  # noqa: N818 (named after the ResultMinor code)
    """``useID#missingArgument``: an age/place verification lacks its request element."""

    description = "the eID-Server reports a missing useID argument"


class MissingTerminalRights(EidResultError):  # noqa: N818 (named after the ResultMinor code)
    """``useID#missingTerminalRights``: our terminal certificate lacks a requested right."""

    description = "our terminal authorization certificate lacks a requested right"


class NoResultYet(EidResultError):  # noqa: N818 (named after the ResultMinor code)
    """``getResult#noResultYet``: the user has not finished yet; the session stays usable."""

    description = "the eID-Server has no result yet"


class ResultStillPending(NoResultYet):
    """Polling ended with ``noResultYet`` after the bounded number of attempts.

    ``session`` is the state to keep (its RequestCounter has advanced) for a later call of
    ``EidClient.get_result``; it is the only error that hands a usable session back.
    """

    description = "the eID-Server still has no result after the allowed number of attempts"

    def __init__(self, minor: str | None, session: EidSession) -> None:
        super().__init__(minor)
        self.session = session


class InvalidSession(EidResultError):  # noqa: N818 (named after the ResultMinor code)
    """``getResult#invalidSession``: unknown, expired, finished, or not our session."""

    description = "the eID-Server does not know this session (expired, finished or not ours)"


class InvalidCounter(EidResultError):  # noqa: N818 (named after the ResultMinor code)
    """``getResult#invalidCounter``: the RequestCounter did not increase by one."""

    description = "the eID-Server refused the RequestCounter"


class DeniedDocument(EidResultError):  # noqa: N818 (named after the ResultMinor code)
    """``getResult#deniedDocument``: the eID type is below the requested LoA or was denied."""

    description = "the eID type used does not meet the requested level of assurance"


class InvalidDocument(EidResultError):  # noqa: N818 (named after the ResultMinor code)
    """``getResult#invalidDocument``: passive authentication or the revocation check failed."""

    description = "the identity document is invalid (authenticity or revocation check failed)"


class CancelledByUser(EidResultError):  # noqa: N818 (named after the ResultMinor code)
    """``sal#cancellationByUser`` (eCard-API, TR-03112-1 §4.2): the user aborted.

    TR-03130-1 §3.4 lets the eID-Server use the eCard-API codes in addition to its own.
    """

    description = "the user cancelled the online authentication"


class UnknownResultError(EidResultError):
    """An error answer whose ResultMinor is missing or not one we know."""

    description = "the eID-Server reported an error with an unknown result code"
