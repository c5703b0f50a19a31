"""The eService's session state machine of the eID-Interface (TR-03130-1 v2.4.0 §3.2), pure.

States and transitions (state goes in and out explicitly; nothing is kept behind the caller's
back)::

    (none) --useID ok--> EidSession(last_counter=0)             open_session
    EidSession(n) --getResult noResultYet--> EidSession(n+1)     next_request_counter
    EidSession(n) --getResult any other answer--> finished       (no state is handed back)

- useID is called once per session (§3.2.1.1): a session exists only as the result of one
  useID answer.
- RequestCounter starts at 1 and is incremented by 1 for each getResult call (§3.2.2.1).
- After any answer other than ``noResultYet`` the session SHALL no longer be used (§3.2.2.1):
  the client hands back no state then, so there is nothing left to call getResult with; store
  the state with an atomic take (GETDEL) so that two workers cannot both poll it.
- If we sent a PSK, the response MUST carry the same one, else abort (§3.2.1.2).
- A successful result must meet the requested LoA / eID types (§3.3.12) and deliver every
  REQUIRED attribute unless the chip does not hold it (NOTONCHIP, §3.3.22).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from healthid.eid.assurance import check_assurance
from healthid.eid.errors import EidProtocolError, SessionError
from healthid.eid.model import (
    AttributeRequest,
    AttributeResponse,
    GetResultOutcome,
    PreSharedKey,
    UseIdRequest,
    UseIdResult,
)

# RequestCounter is an xs:int (§3.2.2.1); a session cannot be polled past its maximum.
MAX_REQUEST_COUNTER = 2**31 - 1


@dataclass(frozen=True, kw_only=True)
class EidSession:
    """An open eID-Interface session: what we asked for, and the last RequestCounter used."""

    session_id: str
    psk: PreSharedKey
    ecard_server_address: str | None
    request: UseIdRequest = field(repr=False)
    last_counter: int = 0


def open_session(request: UseIdRequest, result: UseIdResult) -> EidSession:
    """The state after a successful useID; refuses a PSK other than the one we sent."""
    # TR-03130-1 §3.2.1.2: "If the PSK sent in this message differs from the PSK sent in the
    # request the eService SHALL abort the Online-Authentication."
    if request.psk is not None and not request.psk.matches(result.psk):
        raise EidProtocolError("TR-03130-1 §3.2.1.2: the PSK differs from the one we sent")
    return EidSession(
        session_id=result.session_id,
        psk=result.psk,
        ecard_server_address=result.ecard_server_address,
        request=request,
    )


def next_request_counter(session: EidSession) -> tuple[int, EidSession]:
    """The RequestCounter of the next getResult call and the state that has used it."""
    if session.last_counter >= MAX_REQUEST_COUNTER:
        raise SessionError("the RequestCounter of this session is exhausted")
    counter = session.last_counter + 1  # §3.2.2.1: incremented by 1 for each call
    return counter, replace(session, last_counter=counter)


def accept_outcome(session: EidSession, outcome: GetResultOutcome) -> GetResultOutcome:
    """Check a successful getResult against the request; return it unchanged or raise."""
    check_assurance(
        session.request.policy,
        level_of_assurance=outcome.level_of_assurance,
        eid_type=outcome.eid_type,
    )
    for attribute, wanted in session.request.attributes.items():
        if wanted is not AttributeRequest.REQUIRED:
            continue
        released = outcome.operations_allowed.get(attribute, AttributeResponse.PROHIBITED)
        if released is AttributeResponse.NOTONCHIP:
            continue
        if released is not AttributeResponse.ALLOWED:
            raise EidProtocolError(f"the required attribute {attribute} was not released")
        if not outcome.personal_data.has(attribute):
            raise EidProtocolError(f"the required attribute {attribute} is missing")
    return outcome
