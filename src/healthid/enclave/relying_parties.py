"""Whom an ID token may be encrypted to: the enclave verifies the relying party's trust chain
itself, from the federation anchor pinned in its own (measured) configuration.

The host resolves relying parties (fetches, caches, checks PAR and mTLS against them) and
hands the enclave the two statements it verified: the master's subordinate statement about
the RP and the RP's entity configuration. The enclave verifies them again with the pure core
(:func:`healthid.protocol.federation.resolve_relying_party`) and takes the RP's encryption key
from the result, so a host cannot have an ID token encrypted to a key of its own. Verified
chains are cached by their digest until they expire (public data, no personal data).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from healthid.enclave import api
from healthid.protocol.federation import FederationError, resolve_relying_party
from healthid.protocol.jose import JoseError

MAX_CACHED_CHAINS: Final = 4096
MAX_STATEMENT_CHARS: Final = 64 * 1024


@dataclass(frozen=True, kw_only=True)
class FederationAnchor:
    """The federation master the enclave trusts: its entity id and pinned JWKS.

    ``allow_http``: http entity identifiers (a loopback development federation only).
    """

    entity_id: str
    jwks: Mapping[str, Any] = field(repr=False)
    allow_http: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "jwks", MappingProxyType(dict(self.jwks)))


class RelyingPartyRefused(api.EnclaveError):
    """The relying party's trust chain does not verify: no token is encrypted to it."""


class TrustedRelyingParties:
    def __init__(self, anchor: FederationAnchor) -> None:
        self._anchor = anchor
        self._verified: OrderedDict[bytes, tuple[str, int, Mapping[str, Any]]] = OrderedDict()

    @property
    def anchor(self) -> FederationAnchor:
        return self._anchor

    def encryption_key(
        self, client_id: str, statements: Sequence[str], *, now: int
    ) -> Mapping[str, Any]:
        """The ``use: enc`` key of ``client_id`` per its verified trust chain ``statements``
        (subordinate statement, entity configuration)."""
        if len(statements) != 2 or any(len(s) > MAX_STATEMENT_CHARS for s in statements):
            raise RelyingPartyRefused("the relying party's trust chain is missing")
        digest = hashlib.sha256("\n".join((client_id, *statements)).encode()).digest()
        cached = self._verified.get(digest)
        if cached is not None and cached[1] > now:
            self._verified.move_to_end(digest)
            return cached[2]
        subordinate, configuration = statements
        try:
            rp = resolve_relying_party(
                client_id=client_id,
                entity_configuration=configuration,
                subordinate_statement=subordinate,
                master_entity_id=self._anchor.entity_id,
                master_jwks=self._anchor.jwks,
                now=now,
                allow_http=self._anchor.allow_http,
            )
        except (JoseError, FederationError) as exc:
            raise RelyingPartyRefused(
                f"the relying party's trust chain is refused: {exc}"
            ) from None
        key = rp.keys.encryption_jwk
        if key is None:
            raise RelyingPartyRefused("the relying party publishes no encryption key")
        self._verified[digest] = (client_id, rp.expires_at, key)
        while len(self._verified) > MAX_CACHED_CHAINS:
            self._verified.popitem(last=False)
        return key
