"""The sectoral IdP's OAuth flow on the host (issue #4 items 3-5): PAR over mTLS, the
authorization request handed to the insurer app, consent with a device-key login, and the
token endpoint whose ID token the enclave builds.

State between the steps lives in the ephemeral store, single use where the spec says so: the
PAR under its request_uri (90 s, consumed by the consent), the code (60 s, consumed by the
token request). Decisions are the pure core's (``healthid.protocol.oauth``); this module only
fetches, stores and calls.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import secrets
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import fields
from typing import Any, Protocol, TypeVar

from healthid.enclave.api import (
    EnclaveClient,
    EnclaveError,
    EnclaveUnavailable,
    IdTokenRequest,
    SessionRefused,
)
from healthid.host import json_io
from healthid.host.federation_api import TOKEN_PURPOSE, FederationPublisher
from healthid.host.rate_limits import OidcLimits, RateLimit, RateLimiter, counter_key
from healthid.host.relying_parties import RelyingPartyError
from healthid.host.wallet_service import TooManyRequests, WalletError, WalletService
from healthid.protocol.audit import AuditKind, AuditOutcome
from healthid.protocol.federation import ResolvedRelyingParty
from healthid.protocol.jose.keys import b64url_decode
from healthid.protocol.oauth import authorize, par, token
from healthid.protocol.oauth.client import RegisteredClient
from healthid.protocol.oauth.errors import (
    AccessDeniedError,
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    OAuthError,
    ServerError,
    TemporarilyUnavailableError,
)
from healthid.protocol.oidc.loa import AMR_SSO, Assurance, single_sign_on
from healthid.store.ephemeral import EphemeralStore
from healthid.store.sql.audit import AuditRecorder, AuditSink
from healthid.store.sql.policyholders import PolicyholderRepository

ID_TOKEN_LIFETIME = token.ID_TOKEN_LIFETIME
ACCESS_TOKEN_BYTES = 32
SERVER_SIDE_REASONS = frozenset({"unreachable", "master_unusable"})
# A device login younger than this counts as the login for this authorisation; an older one
# (within the SSO window) is single sign-on.
FRESH_LOGIN_SECONDS = 120


class SlowDown(TemporarilyUnavailableError):  # noqa: N818 - named after what it asks
    """A rate limit refused the request: HTTP 429 with ``Retry-After`` (RFC 6585 §4).

    RFC 6749 has no error code for it and gematik-sectoral-idp.md prescribes none, so the body
    is ``temporarily_unavailable`` (RFC 6749 §4.1.2.1), the status 429.
    """

    default_status = 429

    def __init__(self, description: str, *, retry_after: int) -> None:
        super().__init__(description)
        self.retry_after = retry_after


def client_subject(client_id: str) -> str:
    """The counter subject of a relying party: its entity identifier is a URL of any length,
    a key is at most 256 characters, so the SHA-256 of it (hex)."""
    return hashlib.sha256(client_id.encode()).hexdigest()


T = TypeVar("T")

# What we issue: a request_uri is the RFC 9126 URN and 43 base64url characters, a code 43
# base64url characters. Anything else is unknown without asking the store (whose keys must be
# printable and short: a malformed value would be refused there as a server-side error).
_REQUEST_URI = re.compile(re.escape(par.REQUEST_URI_PREFIX) + r"[A-Za-z0-9_-]{43}")
_CODE = re.compile(r"[A-Za-z0-9_-]{43}")


def _par_key(request_uri: str) -> str | None:
    return f"par:{request_uri}" if _REQUEST_URI.fullmatch(request_uri) else None


class RelyingPartyResolver(Protocol):
    async def resolve(self, client_id: str) -> ResolvedRelyingParty: ...


_FIELD_NAMES: dict[type[Any], frozenset[str]] = {}


def _field_names(cls: type[Any]) -> frozenset[str]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = frozenset(f.name for f in fields(cls))
    return names


def _flat(value: Any) -> dict[str, Any]:
    """A flat dataclass's fields (text, numbers, None, tuples of text) as JSON takes them:
    what ``asdict`` gives, without its recursion and deep copy of every value."""
    return {name: getattr(value, name) for name in _field_names(type(value))}


def _dump(value: Any) -> bytes:
    return json_io.dumps(_flat(value))


def _load(cls: type[T], raw: bytes) -> T:
    return _from_dict(cls, json_io.loads(raw))


def _from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    """The dataclass from what :func:`_flat` made of it, after a JSON round trip (lists back
    to tuples; unknown keys ignored)."""
    names = _field_names(cls)
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names})


def _assurance_dict(assurance: Assurance) -> dict[str, Any]:
    return {
        "acr": assurance.acr,
        "amr_v1": list(assurance.amr_v1),
        "amr_v2": list(assurance.amr_v2),
        "reproof_due_at": assurance.reproof_due_at,
        "extra_claims_v2": dict(assurance.extra_claims_v2),
    }


def _assurance_from(data: Mapping[str, Any]) -> Assurance:
    return Assurance(
        acr=str(data["acr"]),
        amr_v1=tuple(data["amr_v1"]),
        amr_v2=tuple(data["amr_v2"]),
        reproof_due_at=int(data["reproof_due_at"]),
        extra_claims_v2=dict(data["extra_claims_v2"]),
    )


def registered_client(rp: ResolvedRelyingParty) -> RegisteredClient:
    return RegisteredClient(
        client_id=rp.client_id,
        redirect_uris=rp.redirect_uris,
        scopes=frozenset(rp.scopes),
        tls_client_certs=rp.keys.tls_certificates,
        id_token_versions_supported=rp.id_token_versions_supported,
    )


class OidcService:
    def __init__(
        self,
        *,
        issuer: str,
        resolver: RelyingPartyResolver,
        store: EphemeralStore,
        wallet: WalletService,
        enclave: EnclaveClient,
        policyholders: PolicyholderRepository,
        publisher: FederationPublisher,
        clock: Callable[[], float] = time.time,
        rng: Callable[[int], bytes] = secrets.token_bytes,
        sso_window: int = 0,
        development: bool = False,
        audit: AuditSink | None = None,
        limits: OidcLimits | None = None,
    ) -> None:
        self._event = AuditRecorder(audit, clock)
        self._limits = limits or OidcLimits()
        self._rate = RateLimiter(store)
        self._issuer = issuer
        self._development = development
        self._sso_window = sso_window
        self._resolver = resolver
        self._store = store
        self._wallet = wallet
        self._enclave = enclave
        self._policyholders = policyholders
        self._publisher = publisher
        self._clock = clock
        self._rng = rng

    def _now(self) -> int:
        return int(self._clock())

    async def _client(self, client_id: str) -> ResolvedRelyingParty:
        try:
            return await self._resolver.resolve(client_id)
        except RelyingPartyError as exc:
            if exc.reason in SERVER_SIDE_REASONS:  # not the client's fault: try again later
                raise TemporarilyUnavailableError(
                    f"relying party cannot be resolved: {exc}"
                ) from None
            raise InvalidClientError(f"relying party not registered: {exc}") from None

    async def _take(self, name: str, subject: str, rule: RateLimit) -> None:
        try:
            await self._rate.take(name, subject, rule)
        except TooManyRequests as exc:
            raise SlowDown(exc.description, retry_after=exc.retry_after) from None

    # -- PAR (RFC 9126, spec §2 step 2) -----------------------------------------------------
    async def push(
        self, form: Mapping[str, Sequence[str]], client_cert: bytes | None, *, ip: str
    ) -> par.ParResponse:
        """``ip``: the caller's address (the trusted proxy's X-Forwarded-For) for its limit.

        Every PAR counts against its address, an accepted one also against its client, each
        counter one Redis round trip unless they share one. So the address is counted as
        early as it must be, and no earlier:

        - before the RP is resolved when resolving may fetch (the resolver's cache does not
          hold it): a flood of PARs for unknown clients stops before anything is fetched;
        - else, for an accepted PAR, in the one round trip that counts the client and stores
          the request: the work before it is parsing and comparing, without I/O;
        - for a refused PAR, before its refusal is recorded (over the limit, the answer is
          429 and nothing is recorded: a flood does not reach the audit trail).
        """
        from healthid.host.relying_parties import cached_relying_party

        ip_limit = self._limits.par_per_ip
        # everything that needs no RP metadata, in gsi order
        try:
            params = par.parse_par(form, allow_http=self._development)
        except Exception:
            await self._take("par_ip", ip, ip_limit)
            raise
        rp = await cached_relying_party(self._resolver, params.client_id)
        ip_counted = rp is None
        if ip_counted:  # resolving may fetch: count the address first
            await self._take("par_ip", ip, ip_limit)
        try:
            if rp is None:
                rp = await self._client(params.client_id)
            request = par.validate_par(
                form,
                client=registered_client(rp),
                client_cert=client_cert,
                now=self._now(),
                allow_http=self._development,
                parsed=params,
            )
        except OAuthError as exc:
            if not ip_counted:
                await self._take("par_ip", ip, ip_limit)
            self._event(
                AuditKind.AUTHORIZATION_REQUEST,
                AuditOutcome.FAILURE,
                client_id=params.client_id,
                error=exc.error,
            )
            raise
        request_uri = par.new_request_uri(self._rng)
        # (an accepted PAR is not recorded: the consent and the token that follow it are)
        # Counted against the client only now that its certificate matched, and in the same
        # round trip that stores it (refused, nothing is stored); the address first, unless
        # it was counted before the RP was resolved.
        checks = [] if ip_counted else [("par_ip", ip, ip_limit)]
        checks.append(
            ("par_client", client_subject(request.client_id), self._limits.par_per_client)
        )
        try:
            await self._rate.take_all_and_put(
                checks, f"par:{request_uri}", _dump(request), par.REQUEST_URI_TTL
            )
        except TooManyRequests as exc:
            raise SlowDown(exc.description, retry_after=exc.retry_after) from None
        return par.ParResponse(request_uri=request_uri)

    # -- authorization (spec §2 steps 3-5) --------------------------------------------------
    async def pending(self, query: Mapping[str, Sequence[str]]) -> par.ParRequest:
        """The PAR behind ``authorization_endpoint?client_id&request_uri`` (not consumed)."""
        request = authorize.parse_authorization_request(query)
        key = _par_key(request.request_uri)
        raw = None if key is None else await self._store.get(key)
        stored = None if raw is None else _load(par.ParRequest, raw)
        return authorize.check_authorization_request(request, stored, now=self._now())

    async def authorize_with_device(
        self, *, client_id: str, request_uri: str, session: str, selected_claims: Collection[str]
    ) -> str:
        """The insurer app's answer: consent + a fresh device-key login. Returns the Location."""
        query = {"client_id": [client_id], "request_uri": [request_uri]}
        request = authorize.parse_authorization_request(query)
        try:
            session_keys = self._wallet.session_keys(session)
        except WalletError:
            session_keys = None  # refused below, once the request itself has been checked
        # one round trip: the PAR (single use) and the device session with its revocation mark
        par_key = _par_key(request.request_uri)
        session_raw: list[bytes | None] = [None, None]
        if par_key is None:
            raw = None
        elif session_keys is None:
            raw = await self._store.consume(par_key)
        else:
            raw, session_raw = await self._store.consume_and_get(par_key, list(session_keys))
        stored = None if raw is None else _load(par.ParRequest, raw)
        pending = authorize.check_authorization_request(request, stored, now=self._now())
        try:
            if session_keys is None:
                self._wallet.session_keys(session)  # raises the session error
            state, assurance = self._wallet.session_from(*session_raw)
        except WalletError as exc:
            self._event(
                AuditKind.CONSENT,
                AuditOutcome.DENIED,
                client_id=pending.client_id,
                reason="no valid device session",
            )
            return authorize.error_redirect(pending, AccessDeniedError(exc.description))
        pseudonym, auth_time = state["pseudonym"], int(state["auth_time"])
        age = self._now() - auth_time
        if age > FRESH_LOGIN_SECONDS:
            if not self._sso_window or age > self._sso_window:  # SSO off, or too old
                return authorize.error_redirect(
                    pending, AccessDeniedError("the device login is too old; log in again")
                )
            assurance = single_sign_on(assurance)
        try:
            given = authorize.consent(pending, selected_claims)
            authorize.check_assurance(pending, assurance)
        except OAuthError as exc:
            self._event(
                AuditKind.CONSENT,
                AuditOutcome.DENIED,
                actor=pseudonym,
                client_id=pending.client_id,
                error=exc.error,
            )
            if not exc.redirectable:
                raise
            return authorize.error_redirect(pending, exc)
        location, issued = authorize.issue_code(
            pending, consent=given, now=self._now(), rng=self._rng
        )
        record = {
            "issued": _flat(issued),
            "pseudonym": pseudonym,
            "assurance": _assurance_dict(assurance),
            "auth_time": auth_time,
            # the enclave takes whom and how strongly from the login's ticket, not from here
            "ticket": state["ticket"],
            "sso": assurance.amr_v1 == (AMR_SSO,),
        }
        await self._store.put(
            f"code:{issued.code}", json_io.dumps(record), authorize.AUTHORIZATION_CODE_TTL
        )
        self._event(AuditKind.CONSENT, actor=pseudonym, client_id=pending.client_id)
        return location

    # -- token (spec §2 steps 6-7) ----------------------------------------------------------
    async def exchange(
        self, form: Mapping[str, Sequence[str]], client_cert: bytes | None
    ) -> dict[str, Any]:
        """The token endpoint; every answer is recorded in the audit trail."""
        try:
            answer, pseudonym, client_id, acr = await self._exchange(form, client_cert)
        except OAuthError as exc:
            self._event(AuditKind.TOKEN_REQUEST, AuditOutcome.FAILURE, error=exc.error)
            raise
        self._event(AuditKind.TOKEN_REQUEST, actor=pseudonym, client_id=client_id, acr=acr)
        return answer

    async def _exchange(
        self, form: Mapping[str, Sequence[str]], client_cert: bytes | None
    ) -> tuple[dict[str, Any], str, str, str]:
        request = token.parse_token_request(form)
        # single use, atomic; a code that was there counts against the client named with it in
        # the same round trip (only a redeemable code can spend a client's budget)
        token_limit = self._limits.token_per_client
        client_counter = counter_key("token_client", client_subject(request.client_id))
        raw, redeemed = (
            await self._store.consume_and_incr(
                f"code:{request.code}", client_counter, token_limit.window
            )
            if _CODE.fullmatch(request.code)
            else (None, None)
        )
        record = None if raw is None else json_io.loads(raw)
        issued = None if record is None else _from_dict(authorize.IssuedCode, record["issued"])
        rp = await self._client(request.client_id)
        grant = token.redeem_code(
            request, issued, client=registered_client(rp), client_cert=client_cert, now=self._now()
        )
        if record is None:  # redeem_code refuses an unknown code; this keeps the types honest
            raise InvalidGrantError("unknown code")
        # the client is authenticated (certificate and code): refuse it over its limit before
        # the enclave works (counted above, with the code)
        if redeemed is not None and redeemed > token_limit.limit:
            remaining = await self._store.ttl(client_counter)
            raise SlowDown(
                "too many token requests; try again later",
                retry_after=int(remaining or token_limit.window) + 1,
            )
        if rp.keys.encryption_jwk is None:
            raise InvalidClientError("the relying party publishes no encryption key (use: enc)")
        sealed = await self._policyholders.get(record["pseudonym"])
        if sealed is None or sealed.wrapped_key is None:
            raise InvalidGrantError("the account behind this code no longer exists")
        token_key = await self._publisher.token_ring.active(TOKEN_PURPOSE)
        assurance = _assurance_from(record["assurance"])
        try:
            id_token = await self._enclave.mint_id_token(
                IdTokenRequest(
                    sealed=sealed,
                    issuer=self._issuer,
                    grant=grant,
                    ticket=b64url_decode(record["ticket"]),
                    single_sign_on=bool(record["sso"]),
                    kid=token_key.kid,
                    x5c=tuple(self._publisher.token_x5c(dict(token_key.public_jwk))),
                    rp_statements=rp.statements,
                    rp_encryption_jwk=dict(rp.keys.encryption_jwk),
                )
            )
        except EnclaveUnavailable:
            raise  # 503 temporarily_unavailable
        except SessionRefused:  # the login behind the code is not the enclave's (or expired)
            raise InvalidGrantError("the login behind this code is no longer valid") from None
        except (ValueError, EnclaveError):
            raise ServerError("the ID token could not be built") from None
        answer = {
            "id_token": id_token,
            # RFC 6749 §5.1 requires one; no resource server accepts it (spec §2 step 7)
            "access_token": base64.urlsafe_b64encode(self._rng(ACCESS_TOKEN_BYTES))
            .rstrip(b"=")
            .decode(),
            "token_type": "Bearer",
            "expires_in": ID_TOKEN_LIFETIME,
        }
        return answer, record["pseudonym"], grant.client_id, assurance.acr


def client_certificate(
    headers: Mapping[str, str], peer: str | None, trusted_proxies: Collection[str]
) -> bytes | None:
    """The mTLS client certificate (DER) forwarded by the TLS terminator in ``X-SSL-CERT``
    (URL-encoded PEM) — believed only from a configured trusted proxy address."""
    value = headers.get("x-ssl-cert")
    if not value or peer is None or peer not in trusted_proxies:
        return None
    if len(value) > MAX_CERT_HEADER_CHARS:
        raise InvalidRequestError("client certificate header too large")
    return _certificate_der(value)


@functools.lru_cache(maxsize=1024)
def _certificate_der(value: str) -> bytes:
    """The DER of a URL-encoded PEM certificate; the few RPs' certificates come again and
    again, so each is parsed once (a malformed one raises and is not cached)."""
    from urllib.parse import unquote

    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    try:
        cert = x509.load_pem_x509_certificate(unquote(value).encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise InvalidRequestError("client certificate header is not a PEM certificate") from None
    return cert.public_bytes(Encoding.DER)


MAX_CERT_HEADER_CHARS = 16 * 1024
