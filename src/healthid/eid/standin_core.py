"""Decisions of the local eID-Server stand-in (TR-03130-1 v2.4.0 §3.2, §3.4.1), no HTTP.

Sessions live in memory, bounded in number (:data:`MAX_OPEN_SESSIONS`) and lifetime
(:data:`DEFAULT_SESSION_TTL_SECONDS`). Each method runs without awaiting, so under one event
loop a session is read and changed atomically.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from healthid.eid.assurance import EID_TYPE_LEVEL, eid_type_accepted
from healthid.eid.model import (
    PSK_ID_BYTES,
    PSK_KEY_BYTES,
    VERIFICATION_OPERATIONS,
    Attribute,
    AttributeRequest,
    AttributeResponse,
    EidType,
    PersonalData,
    PreSharedKey,
    UseIdRequest,
)
from healthid.eid.results import ResultMinor
from healthid.eid.server_messages import (
    build_error_response,
    build_get_result_response,
    build_use_id_response,
    parse_get_result_request,
    parse_use_id_request,
)
from healthid.eid.soap import Operation

# Open sessions at once (useID#tooManyOpenSessions beyond), and how long one lives.
MAX_OPEN_SESSIONS = 64
DEFAULT_SESSION_TTL_SECONDS = 600.0
# §3.3.1: session IDs are random, at least 32 hex characters.
SESSION_ID_BYTES = 16
# A PSK sent by the eService shorter than this is useID#invalidPSK (our choice).
MIN_PSK_KEY_BYTES = PSK_KEY_BYTES
# The stand-in's "terminal certificate": every data group, no verification functions.
STANDIN_TERMINAL_RIGHTS = frozenset(set(Attribute) - VERIFICATION_OPERATIONS)
# What the development hook may answer instead of an identity.
COMPLETION_ERRORS: Mapping[str, ResultMinor] = {
    "cancelled": ResultMinor.CANCELLATION_BY_USER,
    "invalidDocument": ResultMinor.INVALID_DOCUMENT,
    "deniedDocument": ResultMinor.DENIED_DOCUMENT,
    "internalError": ResultMinor.INTERNAL_ERROR,
}


@dataclass(frozen=True, kw_only=True)
class StandinIdentity:
    """A test identity: its data groups and the eID type it authenticates with."""

    personal_data: PersonalData
    eid_type: EidType = EidType.CARD_CERTIFIED


@dataclass(kw_only=True)
class _Session:
    """Server-side state of one session (mutable: this is the server's store)."""

    session_id: str
    psk: PreSharedKey
    request: UseIdRequest
    expires_at: float
    last_counter: int = 0
    identity: StandinIdentity | None = None
    error: ResultMinor | None = None

    @property
    def completed(self) -> bool:
        return self.identity is not None or self.error is not None


def _operations(request: UseIdRequest, data: PersonalData) -> dict[Attribute, AttributeResponse]:
    """§3.3.22: ALLOWED if requested and on the chip, NOTONCHIP if absent, else PROHIBITED."""
    operations = {}
    for attribute in Attribute:
        if request.requested(attribute) is AttributeRequest.PROHIBITED:
            operations[attribute] = AttributeResponse.PROHIBITED
        elif data.has(attribute):
            operations[attribute] = AttributeResponse.ALLOWED
        else:
            operations[attribute] = AttributeResponse.NOTONCHIP
    return operations


class StandinCore:
    """The stand-in's session store and the answers of useID, getResult and the hook."""

    def __init__(
        self,
        identities: Mapping[str, StandinIdentity],
        *,
        max_open_sessions: int,
        session_ttl_seconds: float,
        terminal_rights: frozenset[Attribute],
        ecard_server_address: str | None,
        clock: Callable[[], float],
        random_bytes: Callable[[int], bytes],
    ) -> None:
        self._identities = dict(identities)
        self._max_open_sessions = max_open_sessions
        self._ttl = session_ttl_seconds
        self._rights = terminal_rights
        self._ecard_server_address = ecard_server_address
        self._clock = clock
        self._random_bytes = random_bytes
        self._sessions: dict[str, _Session] = {}
        self._by_psk_id: dict[str, str] = {}

    # --- store ----------------------------------------------------------------------------

    def _prune(self) -> None:
        now = self._clock()
        for session in [s for s in self._sessions.values() if s.expires_at <= now]:
            self._drop(session)

    def _drop(self, session: _Session) -> None:
        self._sessions.pop(session.session_id, None)
        self._by_psk_id.pop(session.psk.id.lower(), None)

    @property
    def open_sessions(self) -> int:
        self._prune()
        return len(self._sessions)

    # --- SOAP -----------------------------------------------------------------------------

    @staticmethod
    def schema_violation(operation: Operation) -> bytes:
        return build_error_response(operation, ResultMinor.SCHEMA_VIOLATION)

    def _use_id_refusal(self, request: UseIdRequest) -> ResultMinor | None:
        asked = {a for a in Attribute if request.requested(a) is not AttributeRequest.PROHIBITED}
        if Attribute.AGE_VERIFICATION in asked and request.age_verification is None:
            return ResultMinor.MISSING_ARGUMENT
        if Attribute.PLACE_VERIFICATION in asked and request.place_verification is None:
            return ResultMinor.MISSING_ARGUMENT
        if asked - self._rights:
            return ResultMinor.MISSING_TERMINAL_RIGHTS
        if request.psk is not None and (
            len(bytes.fromhex(request.psk.key)) < MIN_PSK_KEY_BYTES
            or request.psk.id.lower() in self._by_psk_id
        ):
            return ResultMinor.INVALID_PSK
        if len(self._sessions) >= self._max_open_sessions:
            return ResultMinor.TOO_MANY_OPEN_SESSIONS
        return None

    def use_id(self, message: Any) -> bytes:
        """§3.2.1: open a session, or answer the useID error of §3.4.1."""
        self._prune()
        request = parse_use_id_request(message)
        refusal = self._use_id_refusal(request)
        if refusal is not None:
            return build_error_response(Operation.USE_ID, refusal)
        psk = request.psk or PreSharedKey(
            id=self._random_bytes(PSK_ID_BYTES).hex(), key=self._random_bytes(PSK_KEY_BYTES).hex()
        )
        session = _Session(
            session_id=self._random_bytes(SESSION_ID_BYTES).hex(),
            psk=psk,
            request=request,
            expires_at=self._clock() + self._ttl,
        )
        self._sessions[session.session_id] = session
        self._by_psk_id[psk.id.lower()] = session.session_id
        return build_use_id_response(
            session_id=session.session_id,
            psk=psk,
            ecard_server_address=self._ecard_server_address,
        )

    def get_result(self, message: Any) -> bytes:
        """§3.2.2: the result, noResultYet, or the getResult error of §3.4.1."""
        self._prune()
        session_id, counter = parse_get_result_request(message)
        session = self._sessions.get(session_id.lower())
        if session is None:
            return build_error_response(Operation.GET_RESULT, ResultMinor.INVALID_SESSION)
        if counter != session.last_counter + 1:  # §3.2.2.1: +1 per call
            self._drop(session)  # §3.2.2.2: any answer but noResultYet ends the session
            return build_error_response(Operation.GET_RESULT, ResultMinor.INVALID_COUNTER)
        session.last_counter = counter
        if not session.completed:
            return build_error_response(Operation.GET_RESULT, ResultMinor.NO_RESULT_YET)
        self._drop(session)
        if session.error is not None or session.identity is None:
            return build_error_response(
                Operation.GET_RESULT, session.error or ResultMinor.INTERNAL_ERROR
            )
        return self._result(session.request, session.identity)

    @staticmethod
    def _result(request: UseIdRequest, identity: StandinIdentity) -> bytes:
        policy = request.policy
        if not eid_type_accepted(policy, identity.eid_type):  # §3.3.12
            return build_error_response(Operation.GET_RESULT, ResultMinor.DENIED_DOCUMENT)
        return build_get_result_response(
            personal_data=identity.personal_data,
            operations=_operations(request, identity.personal_data),
            level_of_assurance=(
                None if policy.level_of_assurance is None else EID_TYPE_LEVEL[identity.eid_type]
            ),
            eid_type=identity.eid_type if policy.eid_types else None,
        )

    # --- development hook -----------------------------------------------------------------

    def complete(self, psk_id: str, payload: object) -> tuple[int, dict[str, str]]:
        """Finish the session of ``psk_id`` as the eID-Client + card would."""
        self._prune()
        session_id = self._by_psk_id.get(psk_id.lower())
        session = None if session_id is None else self._sessions.get(session_id)
        if session is None:
            return 404, {"error": "unknown_session"}
        if session.completed:
            return 409, {"error": "already_completed"}
        if not isinstance(payload, dict) or len(payload) != 1:
            return 400, {"error": "expected exactly one of identity or error"}
        identity_key, error = payload.get("identity"), payload.get("error")
        if isinstance(error, str) and error in COMPLETION_ERRORS:
            session.error = COMPLETION_ERRORS[error]
            return 200, {"status": "completed"}
        if isinstance(identity_key, str) and identity_key in self._identities:
            session.identity = self._identities[identity_key]
            return 200, {"status": "completed"}
        return 400, {"error": "unknown identity or error"}
