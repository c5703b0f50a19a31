"""Automatic registration of relying parties through the federation (spec §1.2, §1.3, §4).

:class:`RelyingPartyRegistry` is the I/O shell around the pure
:func:`~healthid.protocol.federation.resolve_relying_party`. On the first PAR of a
``client_id`` it

1. validates ``client_id`` as an entity identifier (https URL, no query, fragment or
   userinfo, bounded length; http only in development mode);
2. discovers the master's ``federation_fetch_endpoint`` from the master's OWN entity
   configuration, fetched from ``<master>/.well-known/openid-federation`` and verified with
   the PINNED master JWKS (spec §4 step 1: the ref skips this check; an endpoint URL from an
   unverified statement is never used);
3. fetches the master's subordinate statement ``?iss=<master>&sub=<client_id>`` (spec §4
   step 2). This comes before any request to ``client_id`` itself, so a client the master
   does not vouch for never makes the IdP contact a URL of the requester's choosing;
4. fetches ``<client_id>/.well-known/openid-federation`` (spec §1.3, §4 step 3);
5. verifies the chain with the pure core and caches the result until the chain's earliest
   ``exp``, at most :data:`MAX_RP_CACHE_SECONDS` (spec §4 step 4), so a member the master
   drops is dropped here within that bound.

Refusals are negative-cached for :data:`NEGATIVE_CACHE_SECONDS` to blunt floods of PARs for a
client that does not resolve; concurrent first uses of one ``client_id`` in this process share
one resolution. Every refusal is one :class:`RelyingPartyError` with a safe message; the PAR
endpoint renders it (``invalid_client``). An unreachable ephemeral store is not a refusal:
:class:`~healthid.store.ephemeral.EphemeralStoreUnavailable` propagates (fail closed, 5xx).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final, Protocol, cast, runtime_checkable
from urllib.parse import urlsplit

from healthid.host.fetch import CONTENT_TYPE_ENTITY_STATEMENT, FetchedDocument, FetchError
from healthid.protocol.federation import (
    FederationError,
    RelyingPartyKeys,
    ResolvedRelyingParty,
    resolve_relying_party,
    verify_entity_statement,
)
from healthid.protocol.jose import JoseError
from healthid.store.ephemeral import EphemeralStore, InvalidValueError

# CONVENTIONS 6: every bound is a named constant next to the code that enforces it.
# gematik client_ids are short https origins (spec §1.3); this also bounds the fetch URL.
MAX_CLIENT_ID_CHARS: Final = 256
# spec §4 step 4 caches until exp; this caps how long a member the master dropped stays usable.
MAX_RP_CACHE_SECONDS: Final = 60 * 60
# The master's fetch endpoint, from its verified entity configuration (spec §8: lives 1-7 d).
MAX_MASTER_CACHE_SECONDS: Final = 60 * 60
# How long a refused client_id is answered from the cache without fetching again.
NEGATIVE_CACHE_SECONDS: Final = 30
# Version of the cached JSON; an entry of another version is a cache miss.
CACHE_FORMAT_VERSION: Final = 2

WELL_KNOWN_FEDERATION_PATH: Final = "/.well-known/openid-federation"  # OpenID Federation §9
_RP_KEY_PREFIX: Final = "federation:rp:"
_REFUSED_KEY_PREFIX: Final = "federation:rp-refused:"
_MASTER_KEY_PREFIX: Final = "federation:master-fetch-endpoint:"


class RelyingPartyError(Exception):
    """The client cannot be registered; ``str(error)`` is safe to show and log.

    ``reason``: ``invalid_client_id`` (not an entity identifier), ``not_vouched`` (the master
    has no statement about it), ``unreachable`` (a fetch failed), ``untrusted`` (a statement or
    the chain was refused) or ``master_unusable`` (the master's own configuration was refused).
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class Fetcher(Protocol):
    """What the registry needs of :class:`~healthid.host.fetch.GuardedFetcher`."""

    @property
    def development(self) -> bool: ...

    async def fetch(
        self,
        url: str,
        *,
        accept: frozenset[str] | str,
        params: Mapping[str, str] | None = None,
    ) -> FetchedDocument: ...


def check_client_id(client_id: object, *, development: bool) -> str:
    """``client_id`` if it is an entity identifier (spec §1.3), else :class:`RelyingPartyError`."""
    if not isinstance(client_id, str) or not 0 < len(client_id) <= MAX_CLIENT_ID_CHARS:
        raise RelyingPartyError("client_id is missing or too long", reason="invalid_client_id")
    if not all(0x21 <= ord(c) <= 0x7E for c in client_id):
        raise RelyingPartyError("client_id has invalid characters", reason="invalid_client_id")
    if "?" in client_id or "#" in client_id:  # OpenID Federation §1.2: no query or fragment
        raise RelyingPartyError(
            "client_id may not carry a query or fragment", reason="invalid_client_id"
        )
    try:
        parts = urlsplit(client_id)
        hostname = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise RelyingPartyError("client_id is not a URL", reason="invalid_client_id") from None
    schemes = {"https", "http"} if development else {"https"}
    if parts.scheme not in schemes:
        raise RelyingPartyError("client_id is not an https URL", reason="invalid_client_id")
    if not hostname or "@" in parts.netloc:
        raise RelyingPartyError(
            "client_id has no host or carries credentials", reason="invalid_client_id"
        )
    return client_id


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def serialise_relying_party(rp: ResolvedRelyingParty) -> bytes:
    """The cache form of ``rp``: JSON of every field (certificates as standard base64)."""
    document = {
        "v": CACHE_FORMAT_VERSION,
        "client_id": rp.client_id,
        "expires_at": rp.expires_at,
        "redirect_uris": list(rp.redirect_uris),
        "scopes": list(rp.scopes),
        "federation_jwks": _plain(rp.federation_jwks),
        "jwks": None if rp.jwks is None else _plain(rp.jwks),
        "signed_jwks_uri": rp.signed_jwks_uri,
        "tls_certificates": [base64.b64encode(c).decode() for c in rp.keys.tls_certificates],
        "encryption_jwk": (
            None if rp.keys.encryption_jwk is None else _plain(rp.keys.encryption_jwk)
        ),
        "id_token_versions_supported": list(rp.id_token_versions_supported),
        "metadata": _plain(rp.metadata),
        "statements": list(rp.statements),
    }
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def deserialise_relying_party(data: bytes) -> ResolvedRelyingParty | None:
    """The cached ``ResolvedRelyingParty``, or ``None`` for an unreadable or foreign entry."""
    try:
        d = json.loads(data)
        if not isinstance(d, dict) or d.get("v") != CACHE_FORMAT_VERSION:
            return None
        return ResolvedRelyingParty(
            client_id=d["client_id"],
            expires_at=int(d["expires_at"]),
            redirect_uris=tuple(d["redirect_uris"]),
            scopes=tuple(d["scopes"]),
            federation_jwks=d["federation_jwks"],
            jwks=d["jwks"],
            signed_jwks_uri=d["signed_jwks_uri"],
            keys=RelyingPartyKeys(
                tls_certificates=tuple(
                    base64.b64decode(c, validate=True) for c in d["tls_certificates"]
                ),
                encryption_jwk=d["encryption_jwk"],
            ),
            id_token_versions_supported=tuple(d["id_token_versions_supported"]),
            metadata=d["metadata"],
            statements=tuple(str(s) for s in d["statements"]),
        )
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None


@runtime_checkable
class CachingResolver(Protocol):
    """A resolver that can answer from its cache alone, without fetching anything."""

    async def resolve(self, client_id: str) -> ResolvedRelyingParty: ...

    async def cached(self, client_id: str) -> ResolvedRelyingParty | None:
        """The relying party if the cache holds it; None where :meth:`resolve` would fetch or
        refuse (it says why)."""
        ...


async def cached_relying_party(resolver: object, client_id: str) -> ResolvedRelyingParty | None:
    """What ``resolver`` knows of ``client_id`` without fetching; None when it cannot tell (a
    resolver without a cache of its own) or would have to fetch."""
    kind = type(resolver)
    caching = _CACHING.get(kind)
    if caching is None:  # a Protocol's isinstance tests each method: once per class
        caching = _CACHING[kind] = isinstance(resolver, CachingResolver)
    if caching:
        return await cast(CachingResolver, resolver).cached(client_id)
    return None


_CACHING: dict[type, bool] = {}


class RelyingPartyRegistry:
    """Resolves ``client_id`` to a :class:`ResolvedRelyingParty`, registering on first use.

    ``master_jwks`` is the PINNED federation master key set (settings
    ``fedmaster_jwks_file``); ``clock`` returns epoch seconds. The development flag is the
    fetcher's: http entity identifiers are accepted only when it allows http.
    """

    def __init__(
        self,
        fetcher: Fetcher,
        store: EphemeralStore,
        *,
        master_entity_id: str,
        master_jwks: Mapping[str, Any],
        clock: Callable[[], float],
    ) -> None:
        self._fetcher = fetcher
        self._store = store
        self._master = master_entity_id
        self._master_jwks = MappingProxyType(dict(master_jwks))
        self._clock = clock
        self._inflight: dict[str, asyncio.Task[ResolvedRelyingParty]] = {}

    async def resolve(self, client_id: str) -> ResolvedRelyingParty:
        """The RP for ``client_id``, from the cache or through the federation (module doc)."""
        client_id = check_client_id(client_id, development=self._fetcher.development)
        digest = _digest(client_id)
        cached, refused = await self._store.get_many(
            [_RP_KEY_PREFIX + digest, _REFUSED_KEY_PREFIX + digest]
        )
        rp = None if cached is None else self._fresh(cached, client_id)
        if rp is not None:
            return rp
        if refused is not None:
            message, _, reason = refused.decode("utf-8", "replace").partition("\n")
            raise RelyingPartyError(message, reason=reason or "untrusted")
        task = self._inflight.get(digest)
        if task is None:
            task = asyncio.create_task(self._register(client_id, digest))
            self._inflight[digest] = task
            task.add_done_callback(self._forget)
        return await asyncio.shield(task)

    async def cached(self, client_id: str) -> ResolvedRelyingParty | None:
        """The RP for ``client_id`` if the cache holds it (one store read, no fetch); None
        when it does not, or for a refused or invalid ``client_id`` (:meth:`resolve` says why)."""
        try:
            client_id = check_client_id(client_id, development=self._fetcher.development)
        except RelyingPartyError:
            return None
        cached = await self._store.get(_RP_KEY_PREFIX + _digest(client_id))
        return None if cached is None else self._fresh(cached, client_id)

    def _fresh(self, cached: bytes, client_id: str) -> ResolvedRelyingParty | None:
        """The cached RP if it is readable, is ``client_id``'s and has not expired."""
        rp = deserialise_relying_party(cached)
        if rp is not None and rp.client_id == client_id and rp.expires_at > self._now():
            return rp
        return None

    def _forget(self, task: asyncio.Task[ResolvedRelyingParty]) -> None:
        for digest, running in list(self._inflight.items()):
            if running is task:
                del self._inflight[digest]
        if not task.cancelled():
            task.exception()  # retrieved: a refusal nobody awaits any more is not "lost"

    def _now(self) -> int:
        return int(self._clock())

    async def _register(self, client_id: str, digest: str) -> ResolvedRelyingParty:
        try:
            rp = await self._resolve_through_federation(client_id)
        except RelyingPartyError as exc:
            refusal = f"{exc}\n{exc.reason}".encode()
            await self._store.put(_REFUSED_KEY_PREFIX + digest, refusal, NEGATIVE_CACHE_SECONDS)
            raise
        ttl = min(rp.expires_at - self._now(), MAX_RP_CACHE_SECONDS)
        if ttl > 0:
            try:
                await self._store.put(_RP_KEY_PREFIX + digest, serialise_relying_party(rp), ttl)
            except InvalidValueError:
                pass  # too large to cache: served, and resolved again next time
        return rp

    async def _resolve_through_federation(self, client_id: str) -> ResolvedRelyingParty:
        fetch_endpoint = await self._master_fetch_endpoint()
        subordinate = await self._fetch_statement(
            fetch_endpoint,
            params={"iss": self._master, "sub": client_id},
            refused="the federation master does not vouch for this client",
        )
        configuration = await self._fetch_statement(
            client_id.rstrip("/") + WELL_KNOWN_FEDERATION_PATH,
            refused="the client's entity configuration could not be fetched",
        )
        try:
            return resolve_relying_party(
                client_id=client_id,
                entity_configuration=configuration,
                subordinate_statement=subordinate,
                master_entity_id=self._master,
                master_jwks=self._master_jwks,
                now=self._now(),
                allow_http=self._fetcher.development,
            )
        except (JoseError, FederationError) as exc:
            # Both hierarchies' messages name the failed check, never statement content.
            raise RelyingPartyError(
                f"the client's trust chain is refused: {exc}", reason="untrusted"
            ) from None

    async def _fetch_statement(
        self, url: str, *, refused: str, params: Mapping[str, str] | None = None
    ) -> str:
        try:
            document = await self._fetcher.fetch(
                url, accept=CONTENT_TYPE_ENTITY_STATEMENT, params=params
            )
            return document.text()
        except FetchError as exc:
            # spec §1.2: the master answers an unknown subject with 400 (code 6011), some
            # masters with 404; anything else is a transport-level failure.
            vouch = params is not None and exc.status_code in {400, 404}
            raise RelyingPartyError(
                refused if vouch else f"{refused}: {exc}",
                reason="not_vouched" if vouch else "unreachable",
            ) from None

    async def _master_fetch_endpoint(self) -> str:
        key = _MASTER_KEY_PREFIX + _digest(self._master)
        cached = await self._store.get(key)
        if cached is not None:
            return cached.decode("utf-8")
        token = await self._fetch_statement(
            self._master.rstrip("/") + WELL_KNOWN_FEDERATION_PATH,
            refused="the federation master's entity configuration could not be fetched",
        )
        now = self._now()
        try:
            statement = verify_entity_statement(token, jwks=self._master_jwks, now=now)
        except (JoseError, FederationError) as exc:
            raise RelyingPartyError(
                f"the federation master's entity configuration is refused: {exc}",
                reason="master_unusable",
            ) from None
        if statement.iss != self._master or statement.sub != self._master:
            raise RelyingPartyError(
                "the federation master's entity configuration is not self-issued",
                reason="master_unusable",
            )
        entity = statement.metadata.get("federation_entity", {})
        endpoint = entity.get("federation_fetch_endpoint") if isinstance(entity, Mapping) else None
        if not isinstance(endpoint, str) or not endpoint:
            raise RelyingPartyError(
                "the federation master publishes no federation_fetch_endpoint",
                reason="master_unusable",
            )
        ttl = min(statement.exp - now, MAX_MASTER_CACHE_SECONDS)
        if ttl > 0:
            await self._store.put(key, endpoint.encode("utf-8"), ttl)
        return endpoint
