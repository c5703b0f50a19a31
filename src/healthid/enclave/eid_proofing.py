"""eID result handling inside the enclave (issue #3 item 1, issue #5 "eID result handling").

The enclave itself talks to the eID-Server (TR-03130 useID / getResult), so the personal data
of the getResult answer is parsed and kept inside the trust boundary; the host only relays the
TC Token values the wallet needs and learns the outcome of the match.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from healthid.eid.client import EidClient
from healthid.eid.errors import EidError, EidResultError, ResultStillPending
from healthid.eid.model import PersonalData, StructuredPlace
from healthid.eid.session import EidSession
from healthid.enclave import api
from healthid.enclave.proofing import ProvenAttributes

EID_SESSION_TTL = 600.0  # seconds from useID to the last getResult
MAX_EID_SESSIONS = 10_000


@dataclass(kw_only=True)
class _Open:
    session: EidSession
    created: float


def proven_attributes(data: PersonalData) -> ProvenAttributes:
    """The attributes of a getResult answer that identity matching uses."""
    postal = (
        data.place_of_residence.zip_code
        if isinstance(data.place_of_residence, StructuredPlace)
        else None
    )
    return ProvenAttributes(
        method="eid",
        given_names=data.given_names,
        family_names=data.family_names,
        birth_name=data.birth_name,
        birth_date=data.date_of_birth_iso,
        postal_code=postal,
        restricted_id=data.restricted_id,
    )


class EidProofing:
    """Open eID sessions, keyed by an opaque handle the host holds."""

    def __init__(
        self,
        client_factory: Callable[[], EidClient] | None,
        begin_proof: Callable[[ProvenAttributes], api.IdentityLookup],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._factory = client_factory
        self._begin_proof = begin_proof
        self._clock = clock
        self._open: OrderedDict[str, _Open] = OrderedDict()

    def _client(self) -> EidClient:
        if self._factory is None:
            raise api.ProofRejected("no eID-Server is configured (HEALTHID_EID_SERVER_URL)")
        return self._factory()

    async def start(self) -> api.EidStarted:
        self._expire()
        try:
            async with self._client() as client:
                result, session = await client.use_id()
        except EidError as exc:
            raise api.ProofRejected(f"the eID-Server refused the session: {_reason(exc)}") from None
        while len(self._open) >= MAX_EID_SESSIONS:
            self._open.popitem(last=False)
        handle = secrets.token_urlsafe(18)
        self._open[handle] = _Open(session=session, created=self._clock())
        return api.EidStarted(
            handle=handle,
            psk_id=result.psk_id,
            psk_key=result.psk_key,
            ecard_server_address=result.ecard_server_address,
        )

    async def collect(self, handle: str) -> api.IdentityLookup | None:
        """The proof once the user has finished (None: not yet; ask again)."""
        self._expire()
        entry = self._open.pop(handle, None)  # taken out: one getResult in flight per session
        if entry is None:
            raise api.ProofRejected("unknown or expired eID session")
        try:
            async with self._client() as client:
                outcome = await client.get_result(entry.session)
        except ResultStillPending as pending:
            self._open[handle] = _Open(session=pending.session, created=entry.created)
            return None
        except EidError as exc:
            raise api.ProofRejected(f"eID authentication failed: {_reason(exc)}") from None
        return self._begin_proof(proven_attributes(outcome.personal_data))

    def _expire(self) -> None:
        now = self._clock()
        while self._open:
            key, entry = next(iter(self._open.items()))
            if now - entry.created <= EID_SESSION_TTL:
                break
            del self._open[key]


def _reason(exc: EidError) -> str:
    if isinstance(exc, EidResultError):
        return str(type(exc).description)
    return type(exc).__name__
