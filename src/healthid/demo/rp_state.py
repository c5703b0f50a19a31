"""Flow state of the DEMO relying party: started logins, in memory (spec §2 steps 2 and 6).

Keyed by ``state``, bounded (:data:`MAX_PENDING_LOGINS`, oldest evicted first), expiring after
:data:`PENDING_LOGIN_TTL_SECONDS`, and removed atomically by :meth:`PendingLogins.take`
(CONVENTIONS 14: a replayed callback finds nothing).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from healthid.demo.rp_protocol import IdpMetadata, LoginSecrets

# The user may take a while in the insurer app; the IdP's request_uri lives only 90 s anyway.
PENDING_LOGIN_TTL_SECONDS: Final = 10 * 60
MAX_PENDING_LOGINS: Final = 1000  # oldest evicted first


@dataclass(frozen=True, kw_only=True)
class PendingLogin:
    """One started login: its secrets, the IdP it went to, and the browser it is bound to."""

    secrets: LoginSecrets
    idp: IdpMetadata
    browser_binding: str | None  # the cookie value; None for a headless (format=url) login
    expires_at: float


class PendingLogins:
    """Bounded, TTL'd, in-memory flow state; :meth:`take` removes atomically (CONVENTIONS 14)."""

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        ttl: int = PENDING_LOGIN_TTL_SECONDS,
        capacity: int = MAX_PENDING_LOGINS,
    ) -> None:
        self._clock, self._ttl, self._capacity = clock, ttl, capacity
        self._items: OrderedDict[str, PendingLogin] = OrderedDict()
        self._lock = threading.Lock()

    def start(
        self, secrets_: LoginSecrets, idp: IdpMetadata, browser_binding: str | None
    ) -> PendingLogin:
        login = PendingLogin(
            secrets=secrets_,
            idp=idp,
            browser_binding=browser_binding,
            expires_at=self._clock() + self._ttl,
        )
        with self._lock:
            self._evict()
            self._items[secrets_.state] = login
        return login

    def take(self, state: str) -> PendingLogin | None:
        with self._lock:
            login = self._items.pop(state, None)
        if login is None or login.expires_at <= self._clock():
            return None
        return login

    def _evict(self) -> None:
        now = self._clock()
        for state in [s for s, login in self._items.items() if login.expires_at <= now]:
            del self._items[state]
        while len(self._items) >= self._capacity:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
