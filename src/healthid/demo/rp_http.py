"""The DEMO relying party's HTTP calls to the federation and the IdP (spec §1.1, §2).

:class:`IdpClient` is the I/O shell around :mod:`healthid.demo.rp_protocol`: it fetches the
statements and answers, bounded (:data:`MAX_RESPONSE_BYTES`, :data:`TIMEOUT_SECONDS`, no
redirects), and hands them to the pure functions.

mTLS (spec §7, RFC 8705 ``self_signed_tls_client_auth``): to an ``https`` PAR or token endpoint
the client presents its self-signed certificate in the TLS handshake. In a development
federation on loopback there is no TLS; the RP then sends its certificate the way the IdP's TLS
terminator would forward it, URL-encoded PEM in ``X-SSL-CERT``, and the IdP believes that header
only from its trusted proxies (loopback in development). The header is always sent; a real
terminator overwrites it with the certificate it verified.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import httpx

from healthid.demo.rp_keys import TLS_CERT_FILE, TLS_KEY_FILE, DemoRpKeys
from healthid.demo.rp_protocol import (
    DemoRpError,
    IdpMetadata,
    idp_metadata,
    master_fetch_endpoint,
    request_uri_of,
    verify_idp_first_use,
    verify_idp_through_master,
    verify_signed_jwks,
)
from healthid.protocol.federation import EntityStatement

# CONVENTIONS 6: bounds on every call.
TIMEOUT_SECONDS: Final = 10.0
MAX_RESPONSE_BYTES: Final = 128 * 1024
MAX_ERROR_TEXT_CHARS: Final = 300
WELL_KNOWN_FEDERATION_PATH: Final = "/.well-known/openid-federation"  # OpenID Federation §9
CLIENT_CERT_HEADER: Final = "X-SSL-CERT"  # spec §7: GsiConstants.TLS_CLIENT_CERT_HEADER_NAME
TRUST_MASTER: Final = "federation master"
TRUST_FIRST_USE: Final = "trust on first use (DEMO ONLY: no federation master configured)"


def _text(value: object) -> str:
    text = value if isinstance(value, str) else ""
    return text[:MAX_ERROR_TEXT_CHARS]


def oauth_error_text(body: bytes) -> str:
    """``error: error_description`` of an OAuth error body (spec §7), shortened; or ``""``."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return ""
    if not isinstance(data, dict):
        return ""
    error, description = _text(data.get("error")), _text(data.get("error_description"))
    return f"{error}: {description}" if description else error


class IdpClient:
    """Discovers and talks to one IdP (spec §2 steps 1, 2, 6, 8) for one client_id.

    ``master_jwks`` None means trust on first use of the IdP's self-signed configuration (DEMO
    ONLY; the keys are pinned in memory for the life of the process).
    """

    def __init__(
        self,
        *,
        client_id: str,
        idp_entity_id: str,
        master_entity_id: str,
        master_jwks: Mapping[str, Any] | None,
        keys: DemoRpKeys,
        key_dir: Path,
        clock: Callable[[], float],
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._client_id = client_id
        self._idp = idp_entity_id
        self._master = master_entity_id
        self._master_jwks = master_jwks
        self._keys = keys
        self._clock = clock
        self._pinned: Mapping[str, Any] | None = None
        context = ssl.create_default_context()
        # RFC 8705 §2.2: present the self-signed client certificate to an https endpoint.
        context.load_cert_chain(key_dir / TLS_CERT_FILE, key_dir / TLS_KEY_FILE)
        self._http = httpx.AsyncClient(
            transport=transport,
            verify=context,
            timeout=TIMEOUT_SECONDS,
            follow_redirects=False,
            trust_env=False,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    def _now(self) -> int:
        return int(self._clock())

    async def _call(
        self,
        method: str,
        url: str,
        *,
        what: str,
        params: Mapping[str, str] | None = None,
        data: Mapping[str, str] | None = None,
        mtls: bool = False,
    ) -> tuple[int, bytes]:
        headers = {"Accept-Encoding": "identity"}
        if mtls:
            headers[CLIENT_CERT_HEADER] = quote(self._keys.certificate_pem(), safe="")
        try:
            async with self._http.stream(
                method, url, params=params, data=data, headers=headers
            ) as response:
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_RESPONSE_BYTES:
                        raise DemoRpError(f"{what}: the answer is too large", status_code=502)
                return response.status_code, bytes(body)
        except httpx.HTTPError:
            raise DemoRpError(f"{what}: {url} is not reachable", status_code=502) from None

    async def _get_ok(self, url: str, *, what: str, params: Mapping[str, str] | None = None) -> str:
        status, body = await self._call("GET", url, what=what, params=params)
        if status != 200:
            detail = oauth_error_text(body)
            raise DemoRpError(
                f"{what}: HTTP {status}" + (f" ({detail})" if detail else ""), status_code=502
            )
        try:
            return body.decode("ascii").strip()
        except UnicodeDecodeError:
            raise DemoRpError(f"{what}: the answer is not a compact JWS", status_code=502) from None

    async def discover(self) -> IdpMetadata:
        """spec §2 step 1: the IdP's verified configuration and endpoints."""
        configuration = await self._get_ok(
            self._idp + WELL_KNOWN_FEDERATION_PATH, what="the IdP's entity configuration"
        )
        now = self._now()
        if self._master_jwks is None:
            statement = verify_idp_first_use(
                configuration, idp_entity_id=self._idp, pinned_jwks=self._pinned, now=now
            )
            self._pinned = statement.jwks
            return idp_metadata(statement, trust=TRUST_FIRST_USE)
        return idp_metadata(await self._through_master(configuration, now), trust=TRUST_MASTER)

    async def _through_master(self, configuration: str, now: int) -> EntityStatement:
        assert self._master_jwks is not None  # noqa: S101 - checked by the caller
        master_configuration = await self._get_ok(
            self._master + WELL_KNOWN_FEDERATION_PATH,
            what="the federation master's entity configuration",
        )
        fetch_endpoint = master_fetch_endpoint(
            master_configuration,
            master_entity_id=self._master,
            master_jwks=self._master_jwks,
            now=now,
        )
        subordinate = await self._get_ok(
            fetch_endpoint,
            what="the master's statement about the IdP",
            params={"iss": self._master, "sub": self._idp},
        )
        return verify_idp_through_master(
            subordinate_statement=subordinate,
            entity_configuration=configuration,
            master_entity_id=self._master,
            master_jwks=self._master_jwks,
            idp_entity_id=self._idp,
            now=now,
        )

    async def push(self, idp: IdpMetadata, form: Mapping[str, str]) -> str:
        """spec §2 step 2: PAR over mTLS; the ``request_uri`` of the 201 answer."""
        status, body = await self._call(
            "POST",
            idp.pushed_authorization_request_endpoint,
            what="PAR",
            data=form,
            mtls=True,
        )
        if status != 201:
            detail = oauth_error_text(body) or f"HTTP {status}"
            raise DemoRpError(f"the IdP refused the pushed authorization request: {detail}")
        return request_uri_of(_json(body, "the PAR answer"))

    async def redeem(self, idp: IdpMetadata, form: Mapping[str, str]) -> object:
        """spec §2 steps 6/7: the token request over mTLS; the (encrypted) ``id_token``."""
        status, body = await self._call(
            "POST", idp.token_endpoint, what="the token request", data=form, mtls=True
        )
        if status != 200:
            detail = oauth_error_text(body) or f"HTTP {status}"
            raise DemoRpError(f"the IdP refused the token request: {detail}")
        answer = _json(body, "the token answer")
        return answer.get("id_token")

    async def token_keys(self, idp: IdpMetadata) -> dict[str, Any]:
        """spec §2 step 8: the ID-token keys from the IdP's verified signed JWKS."""
        token = await self._get_ok(idp.signed_jwks_uri, what="the IdP's signed JWKS")
        return verify_signed_jwks(token, idp=idp, now=self._now())


def _json(body: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise DemoRpError(f"{what} is not JSON", status_code=502) from None
    if not isinstance(value, dict):
        raise DemoRpError(f"{what} is not a JSON object", status_code=502)
    return value
