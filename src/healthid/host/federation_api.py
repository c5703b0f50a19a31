"""The IdP's federation membership endpoints (issue #4 item 1, spec §1.1, §3, §3.1).

``/.well-known/openid-federation``: the entity configuration, signed with the active
federation key, listing every published federation key (the next one before it signs, the
retiring one until its statements expired). ``/jws.json`` (``signed_jwks_uri``): the
signed JWKS with every published ID-token key and its component-PKI certificate chain: the
active one first, then the next one (published before it signs) and the retiring ones (until
every ID token they signed has expired), so that a key rotation never leaves a relying party
with an ID token it cannot verify (security checklist §B5 "Signing-key rotation mid-flight";
gematik C_12299: a transition phase instead of a hard cutover). Neither document carries
personal data; both are signed by the key store (HSM in production).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from healthid.host.json_io import JSONResponse
from healthid.keys.base import SigningKeyStore
from healthid.keys.rotation import KeyRecord, KeyRing
from healthid.protocol.federation.provider import (
    ProviderConfiguration,
    sign_entity_configuration,
    sign_signed_jwks_with_keys,
)

ENTITY_STATEMENT_TYPE = "application/entity-statement+jwt;charset=UTF-8"  # spec §1.1
SIGNED_JWKS_TYPE = "application/jwk-set+json;charset=UTF-8"  # spec §1.1
SIGNED_JWKS_PATH = "/jws.json"
FEDERATION_PURPOSE = "federation"
TOKEN_PURPOSE = "token"  # noqa: S105 - a key purpose, not a secret

LOG = logging.getLogger("healthid.federation")


@dataclass(frozen=True, kw_only=True)
class FederationPublisher:
    config: ProviderConfiguration
    key_store: SigningKeyStore
    federation_ring: KeyRing
    token_ring: KeyRing
    token_x5c: Callable[[dict[str, Any]], list[str]]
    clock: Callable[[], float] = time.time

    async def entity_configuration(self) -> str:
        active = await self.federation_ring.active(FEDERATION_PURPOSE)
        published = [
            dict(r.public_jwk) for r in await self.federation_ring.published(FEDERATION_PURPOSE)
        ]
        return await asyncio.to_thread(
            sign_entity_configuration,
            self.config,
            federation_keys=published,
            kid=active.kid,
            signer=self.key_store.sign,
            now=int(self.clock()),
        )

    async def signed_jwks(self) -> str:
        federation = await self.federation_ring.active(FEDERATION_PURPOSE)
        active = await self.token_ring.active(TOKEN_PURPOSE)
        published = await self.token_ring.published(TOKEN_PURPOSE)
        token_keys = [(dict(active.public_jwk), self.token_x5c(dict(active.public_jwk)))]
        for record in published:  # the next key and the retiring ones, after the active one
            if record.kid != active.kid and (chained := self._chained(record)) is not None:
                token_keys.append(chained)
        return await asyncio.to_thread(
            sign_signed_jwks_with_keys,
            issuer=self.config.issuer,
            federation_key=dict(federation.public_jwk),
            token_keys=token_keys,
            signer=self.key_store.sign,
            now=int(self.clock()),
        )

    def _chained(self, record: KeyRecord) -> tuple[dict[str, Any], list[str]] | None:
        """A published token key that does not sign now, with its certificate chain; ``None``
        (and a warning) while its chain is not available yet: a key whose certificate the
        operator has not installed cannot be verified by a relying party anyway (SIGNED_JWKS_004),
        and a missing chain must not take the whole signed JWKS down."""
        jwk = dict(record.public_jwk)
        try:
            return jwk, self.token_x5c(jwk)
        except Exception:  # the chain source is configuration: a file per kid, or the test CA
            LOG.warning("token key %s is published without a certificate chain yet", record.kid)
            return None


@dataclass(frozen=True, kw_only=True)
class AppLinks:
    """Which apps open our authorization URLs (spec §2 step 4: the authorization endpoint is an
    Android App Link / iOS Universal Link of the insurer's app)."""

    android_packages: tuple[str, ...] = ()
    android_cert_digests: tuple[str, ...] = ()  # SHA-256 of the signing certificates, hex
    apple_app_ids: tuple[str, ...] = ()  # "<TeamID>.<bundle id>"
    path: str = "/auth"

    def assetlinks(self) -> list[dict[str, Any]]:
        fingerprints = [
            ":".join(d[i : i + 2] for i in range(0, len(d), 2)).upper()
            for d in self.android_cert_digests
        ]
        return [
            {
                "relation": ["delegate_permission/common.handle_all_urls"],
                "target": {
                    "namespace": "android_app",
                    "package_name": package,
                    "sha256_cert_fingerprints": fingerprints,
                },
            }
            for package in self.android_packages
        ]

    def apple_app_site_association(self) -> dict[str, Any]:
        return {
            "applinks": {
                "details": [
                    {"appIDs": list(self.apple_app_ids), "components": [{"/": f"{self.path}*"}]}
                ]
                if self.apple_app_ids
                else []
            }
        }


def app_link_routes(links: Callable[[], AppLinks]) -> list[Route]:
    async def assetlinks(_request: Request) -> Response:
        return JSONResponse(links().assetlinks())

    async def aasa(_request: Request) -> Response:
        return JSONResponse(links().apple_app_site_association())

    return [
        Route("/.well-known/assetlinks.json", assetlinks, methods=["GET"]),
        Route("/.well-known/apple-app-site-association", aasa, methods=["GET"]),
    ]


def federation_routes(publisher: Callable[[], FederationPublisher]) -> list[Route]:
    async def entity_configuration(_request: Request) -> Response:
        body = await publisher().entity_configuration()
        return Response(
            body, media_type=ENTITY_STATEMENT_TYPE, headers={"Cache-Control": "no-cache"}
        )

    async def signed_jwks(_request: Request) -> Response:
        body = await publisher().signed_jwks()
        return Response(body, media_type=SIGNED_JWKS_TYPE, headers={"Cache-Control": "no-cache"})

    return [
        Route("/.well-known/openid-federation", entity_configuration, methods=["GET"]),
        Route(SIGNED_JWKS_PATH, signed_jwks, methods=["GET"]),
    ]
