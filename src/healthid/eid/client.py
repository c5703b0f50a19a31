"""The eService's client of an eID-Server (BSI TR-03130-1 v2.4.0 §3, SOAP eID-Interface).

:meth:`EidClient.use_id` opens a session (§3.2.1) and returns what goes into the TC Token plus
the session state; :meth:`EidClient.get_result` polls getResult (§3.2.2) with a strictly
increasing RequestCounter while the answer is ``noResultYet``, for a bounded number of attempts,
and returns the checked :class:`GetResultOutcome`. The state machine itself is pure and lives
in :mod:`healthid.eid.session`; this module adds only I/O.

Every request is validated against our XSD before it is sent, every response is parsed by the
hardened parser and validated before it is read (:mod:`healthid.eid.soap`).

Message signatures: the messages are not yet WS-Security signed, and responses are not yet
verified. TR-03130-1 §3.5.2 requires an XML signature on every message in both directions:
WS-Security with one of the suites Basic256Sha256, Basic192Sha256 or Basic128Sha256; our
X.509 InitiatorToken and the server's RecipientToken referenced by issuer and serial number
(IncludeToken/Never, RequireIssuerSerialReference), a timestamp included, the Body signed. The
eService SHALL NOT process a response that is unsigned or signed with an invalid certificate,
and the signature must be verified against the pinned RecipientToken before PersonalData is
read (spec §1.4). Until then this client relies on mutually authenticated TLS alone (§3.5.1),
which is not conformant for a production eID-Server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType

import httpx

from healthid.eid.errors import (
    MalformedMessageError,
    NoResultYet,
    ResultStillPending,
    SoapFaultError,
    TransportError,
)
from healthid.eid.messages import (
    build_get_result_request,
    build_use_id_request,
    parse_get_result_response,
    parse_use_id_response,
)
from healthid.eid.model import (
    DEFAULT_ATTRIBUTES,
    NATIONAL_LEVELS,
    PSK_KEY_BYTES,
    VERIFICATION_OPERATIONS,
    AssurancePolicy,
    Attribute,
    AttributeRequest,
    GetResultOutcome,
    PreSharedKey,
    UseIdRequest,
    UseIdResult,
)
from healthid.eid.session import (
    EidSession,
    accept_outcome,
    next_request_counter,
    open_session,
)
from healthid.eid.soap import Operation, fault_code, is_fault, open_envelope
from healthid.eid.transport import TransportConfig, build_http_client, check_endpoint, post_soap

# getResult polling (§3.2.2.1: call until the answer is no longer noResultYet), bounded.
GET_RESULT_MAX_ATTEMPTS = 10
GET_RESULT_POLL_DELAY_SECONDS = 0.5
# Upper bounds a configuration may choose (a request must not hang for minutes).
MAX_POLL_ATTEMPTS = 60
MAX_POLL_DELAY_SECONDS = 5.0

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, kw_only=True)
class EidClientConfig:
    """The eID-Server endpoint and what we ask it for, validated at construction."""

    endpoint: str
    attributes: Mapping[Attribute, AttributeRequest] = field(
        default_factory=lambda: DEFAULT_ATTRIBUTES
    )
    policy: AssurancePolicy = field(default_factory=AssurancePolicy)
    poll_attempts: int = GET_RESULT_MAX_ATTEMPTS
    poll_delay_seconds: float = GET_RESULT_POLL_DELAY_SECONDS
    transport: TransportConfig = field(default_factory=TransportConfig)

    def __post_init__(self) -> None:
        check_endpoint(self.endpoint, self.transport)
        check_request(self.attributes, self.policy)
        if not 1 <= self.poll_attempts <= MAX_POLL_ATTEMPTS:
            raise ValueError(f"poll_attempts must be between 1 and {MAX_POLL_ATTEMPTS}")
        if not 0 <= self.poll_delay_seconds <= MAX_POLL_DELAY_SECONDS:
            raise ValueError(f"poll_delay_seconds must be between 0 and {MAX_POLL_DELAY_SECONDS}")


def check_request(
    attributes: Mapping[Attribute, AttributeRequest], policy: AssurancePolicy
) -> None:
    """Refuse a useID request this client cannot evaluate (a configuration error)."""
    asked = {a for a, r in attributes.items() if r is not AttributeRequest.PROHIBITED}
    if asked & VERIFICATION_OPERATIONS:
        raise ValueError("age and place verification are not supported by this client")
    if attributes.get(Attribute.RESTRICTED_ID) is not AttributeRequest.REQUIRED:
        raise ValueError("RestrictedID must be REQUIRED: it is the linking key")
    # TR-03130-1 §3.3.12: only the bsi.bund.de LoA values in a national context.
    if policy.level_of_assurance is not None and policy.level_of_assurance not in NATIONAL_LEVELS:
        raise ValueError("only the bsi.bund.de levels of assurance are used nationally")


class EidClient:
    """Async client of one eID-Server; use as ``async with EidClient(config) as client``."""

    def __init__(
        self,
        config: EidClientConfig,
        *,
        http_transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        """``http_transport`` replaces the network (tests: ``httpx.ASGITransport``)."""
        self._config = config
        self._http = build_http_client(config.transport, http_transport)
        self._sleep = sleep

    async def __aenter__(self) -> EidClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, operation: Operation, body: bytes) -> bytes:
        status, data = await post_soap(
            self._http,
            self._config.endpoint,
            operation,
            body,
            max_response_bytes=self._config.transport.max_response_bytes,
        )
        if status == 200:
            return data
        # SOAP 1.1 §6.2: HTTP 500 carries a Fault; anything else with it is refused.
        try:
            message = open_envelope(data)
        except MalformedMessageError:
            message = None
        if message is not None and is_fault(message):
            raise SoapFaultError(fault_code(message))
        raise TransportError(f"the eID-Server answered HTTP {status} without a SOAP fault")

    async def use_id(
        self,
        *,
        psk: PreSharedKey | None = None,
        attributes: Mapping[Attribute, AttributeRequest] | None = None,
        policy: AssurancePolicy | None = None,
    ) -> tuple[UseIdResult, EidSession]:
        """§3.2.1 useID: open a session. Put ``result.psk_*`` and the address in the TC Token.

        ``psk``: a PSK of our own (see :meth:`PreSharedKey.generate`); the server must echo it.
        """
        request = UseIdRequest(
            attributes=self._config.attributes if attributes is None else attributes,
            policy=self._config.policy if policy is None else policy,
            psk=psk,
        )
        check_request(request.attributes, request.policy)
        if psk is not None and len(bytes.fromhex(psk.key)) < PSK_KEY_BYTES:
            raise ValueError(f"a PSK we send has at least {PSK_KEY_BYTES} random bytes")
        result = parse_use_id_response(
            await self._call(Operation.USE_ID, build_use_id_request(request))
        )
        return result, open_session(request, result)

    async def get_result(self, session: EidSession) -> GetResultOutcome:
        """§3.2.2 getResult, polled while the answer is ``noResultYet``.

        Returns the outcome of a successful authentication, checked against what useID asked
        for. Any other answer raises, and the session is finished (no state is handed back).
        After :attr:`EidClientConfig.poll_attempts` ``noResultYet`` answers,
        :class:`ResultStillPending` carries the advanced state for a later call.
        """
        state, attempt = session, 0
        while True:
            attempt += 1
            counter, state = next_request_counter(state)
            body = build_get_result_request(session_id=state.session_id, request_counter=counter)
            try:
                outcome = parse_get_result_response(await self._call(Operation.GET_RESULT, body))
            except NoResultYet as pending:
                if attempt >= self._config.poll_attempts:
                    raise ResultStillPending(pending.minor, state) from None
                await self._sleep(self._config.poll_delay_seconds)
                continue
            return accept_outcome(state, outcome)
