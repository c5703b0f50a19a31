"""The relying party as the protocol core sees it, and its mTLS client authentication.

Sources: gematik-sectoral-idp.md §4 (automatic registration; the metadata used) and §7
(``self_signed_tls_client_auth``, RFC 8705 §2.2: the presented certificate must equal one the
RP published; gsi ``RequestValidator.validateCertificate``).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from healthid.protocol.oauth.acr_amr import DEFAULT_RP_ID_TOKEN_VERSIONS
from healthid.protocol.oauth.errors import InvalidRequestError, UnauthorizedClientError

UNAUTHORIZED_CLIENT_STATUS = 401  # gsi, PAR TC 006 and token TC 004 expect 401


@dataclass(frozen=True, kw_only=True)
class RegisteredClient:
    """The RP after automatic registration (the caller verified its trust chain).

    ``scopes`` and ``redirect_uris`` are the effective metadata (the master's statement about
    the RP overrides the RP's own, falling back to it); ``tls_client_certs`` are the DER
    certificates of its ``use: sig`` keys with ``x5c`` (entity statement or signed JWKS).
    """

    client_id: str
    redirect_uris: tuple[str, ...]
    scopes: frozenset[str]
    tls_client_certs: tuple[bytes, ...]
    id_token_versions_supported: tuple[str, ...] = DEFAULT_RP_ID_TOKEN_VERSIONS


def check_client_cert(client: RegisteredClient, client_cert: bytes | None) -> None:
    """The mTLS certificate (DER) must equal one the RP published; several allow rotation."""
    if client_cert is None:
        raise InvalidRequestError("client certificate is missing")
    # RFC 8705 §2.2 self_signed_tls_client_auth; rotation: PAR TC 019
    if not any(hmac.compare_digest(client_cert, known) for known in client.tls_client_certs):
        raise UnauthorizedClientError(
            "client certificate in tls handshake does not match any certificate in entity"
            " statement/signed_jwks",
            status_code=UNAUTHORIZED_CLIENT_STATUS,
        )
