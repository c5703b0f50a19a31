"""dss:Result of the eID-Interface and the mapping of every ResultMinor to an exception.

TR-03130-1 v2.4.0 §3.4: ResultMajor is ``…/resultmajor#ok`` or ``#error`` (TR-03112-1
§4.1.2); ResultMinor is ``http://www.bsi.bund.de/eid/server/2.0/resultminor/`` followed by one
of the codes of §3.4.1, or an eCard-API code of TR-03112-1 §4.2 ("in addition to"). The
optional ResultMessage is never kept: a server may echo card data in it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from healthid.eid import errors
from healthid.eid.soap import dss

RESULT_MAJOR_OK = "http://www.bsi.bund.de/ecard/api/1.1/resultmajor#ok"
RESULT_MAJOR_ERROR = "http://www.bsi.bund.de/ecard/api/1.1/resultmajor#error"
RESULT_MINOR_PREFIX = "http://www.bsi.bund.de/eid/server/2.0/resultminor/"
ECARD_MINOR_PREFIX = "http://www.bsi.bund.de/ecard/api/1.1/resultminor/"


class ResultMinor(StrEnum):
    """§3.4.1 Table 6, plus the eCard-API user cancellation."""

    INTERNAL_ERROR = RESULT_MINOR_PREFIX + "common#internalError"
    SCHEMA_VIOLATION = RESULT_MINOR_PREFIX + "common#schemaViolation"
    INVALID_PSK = RESULT_MINOR_PREFIX + "useID#invalidPSK"
    TOO_MANY_OPEN_SESSIONS = RESULT_MINOR_PREFIX + "useID#tooManyOpenSessions"
    MISSING_ARGUMENT = RESULT_MINOR_PREFIX + "useID#missingArgument"
    MISSING_TERMINAL_RIGHTS = RESULT_MINOR_PREFIX + "useID#missingTerminalRights"
    NO_RESULT_YET = RESULT_MINOR_PREFIX + "getResult#noResultYet"
    INVALID_SESSION = RESULT_MINOR_PREFIX + "getResult#invalidSession"
    INVALID_COUNTER = RESULT_MINOR_PREFIX + "getResult#invalidCounter"
    DENIED_DOCUMENT = RESULT_MINOR_PREFIX + "getResult#deniedDocument"
    INVALID_DOCUMENT = RESULT_MINOR_PREFIX + "getResult#invalidDocument"
    CANCELLATION_BY_USER = ECARD_MINOR_PREFIX + "sal#cancellationByUser"


MINOR_ERRORS: Mapping[ResultMinor, type[errors.EidResultError]] = MappingProxyType(
    {
        ResultMinor.INTERNAL_ERROR: errors.InternalError,
        ResultMinor.SCHEMA_VIOLATION: errors.SchemaViolation,
        ResultMinor.INVALID_PSK: errors.InvalidPsk,
        ResultMinor.TOO_MANY_OPEN_SESSIONS: errors.TooManyOpenSessions,
        ResultMinor.MISSING_ARGUMENT: errors.MissingArgument,
        ResultMinor.MISSING_TERMINAL_RIGHTS: errors.MissingTerminalRights,
        ResultMinor.NO_RESULT_YET: errors.NoResultYet,
        ResultMinor.INVALID_SESSION: errors.InvalidSession,
        ResultMinor.INVALID_COUNTER: errors.InvalidCounter,
        ResultMinor.DENIED_DOCUMENT: errors.DeniedDocument,
        ResultMinor.INVALID_DOCUMENT: errors.InvalidDocument,
        ResultMinor.CANCELLATION_BY_USER: errors.CancelledByUser,
    }
)


@dataclass(frozen=True, kw_only=True)
class DssResult:
    major: str
    minor: str | None = None

    @property
    def ok(self) -> bool:
        return self.major == RESULT_MAJOR_OK


def collapse(text: str | None) -> str:
    """XML Schema whitespace collapse (anyURI, hexBinary, enumerations, numbers)."""
    return " ".join((text or "").split())


def read_result(message: Any) -> DssResult:
    """The dss:Result child of a schema-valid response element."""
    result = message.find(dss("Result"))
    minor = result.find(dss("ResultMinor"))
    return DssResult(
        major=collapse(result.findtext(dss("ResultMajor"))),
        minor=None if minor is None else collapse(minor.text),
    )


def raise_for_result(result: DssResult) -> None:
    """Return if ResultMajor is ok; otherwise raise the exception of its ResultMinor."""
    if result.ok:
        return
    if result.major != RESULT_MAJOR_ERROR or result.minor is None:
        raise errors.UnknownResultError(result.minor)
    try:
        known = ResultMinor(result.minor)
    except ValueError:
        raise errors.UnknownResultError(result.minor) from None
    raise MINOR_ERRORS[known](result.minor)
