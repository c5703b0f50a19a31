"""The host's composition root: builds the parts of a healthid host process from
:class:`Settings`.

The only module that wires host and enclave together; in the embedded default the enclave
runs in-process (``tee: simulated``), built by the enclave's own composition root,
:mod:`healthid.enclave_runtime` (its names are re-exported here). The enclave process imports
that module, never this one: this one imports the web app and the stores.
"""

from __future__ import annotations

import base64
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from healthid.enclave.rpc.client import RemoteEnclave
from healthid.enclave.service import Enclave
from healthid.enclave_runtime import (
    EGK_TEST_CA_DIR,
    IDENTITY_KEY_FILE,
    ROOT_KEY_FILE,
    SGX_ROOT_KEY_FILE,
    SGX_SEALED_ROOT_DIR,
    StartupError,
    apple_config,
    build_enclave,
    build_key_store,
    eid_client_factory,
    enclave_dir,
    enclave_evidence,
    federation_anchor,
    key_release_policy,
    load_egk_cas,
    pinned_master_jwks,
    root_key_sealer,
)
from healthid.host.app import HostDeps, create_app
from healthid.host.attestation import AttestationPolicy
from healthid.host.federation_api import SIGNED_JWKS_PATH, AppLinks, FederationPublisher
from healthid.host.fetch import GuardedFetcher
from healthid.host.oidc_service import OidcService, RelyingPartyResolver
from healthid.host.relying_parties import RelyingPartyRegistry
from healthid.host.wallet_service import DEVICE_SESSION_TTL, WalletService
from healthid.keys.base import SigningKeyStore
from healthid.keys.rotation import KeyRing
from healthid.protocol.federation import ResolvedRelyingParty
from healthid.protocol.federation.provider import ProviderConfiguration
from healthid.protocol.oauth.errors import InvalidClientError
from healthid.settings import Settings
from healthid.store.ephemeral import EphemeralStore, open_ephemeral_store
from healthid.store.sql.audit import AuditLog
from healthid.store.sql.devices import DeviceRepository
from healthid.store.sql.engine import create_engine, upgrade
from healthid.store.sql.keyring import SqlKeyRingRepository
from healthid.store.sql.policyholders import PolicyholderRepository

__all__ = [
    "CLOCK_SKEW",
    "DEV_FEDMASTER_URL",
    "EGK_TEST_CA_DIR",
    "IDENTITY_KEY_FILE",
    "KEY_PURPOSES",
    "KEY_RING_CACHE_SECONDS",
    "KOMP_TEST_CA_DIR",
    "ROOT_KEY_FILE",
    "SGX_ROOT_KEY_FILE",
    "SGX_SEALED_ROOT_DIR",
    "Runtime",
    "StartupError",
    "apple_config",
    "attestation_policy",
    "build_app",
    "build_enclave",
    "build_key_store",
    "eid_client_factory",
    "enclave_dir",
    "enclave_evidence",
    "federation_anchor",
    "key_release_policy",
    "load_egk_cas",
    "open_runtime",
    "pinned_master_jwks",
    "prepare_for_workers",
    "provider_configuration",
    "root_key_sealer",
    "token_certificate_chains",
    "worker_app",
]

CLOCK_SKEW = 300  # seconds verifiers may be off; added to what a key signed may live
# Signing key purposes and the longest lifetime of anything each signs (seconds):
# entity statements and signed JWKS live 2 h (gematik-sectoral-idp.md §3), ID tokens 300 s.
KEY_PURPOSES: dict[str, int] = {
    "federation": 2 * 60 * 60 + CLOCK_SKEW,
    "token": 300 + CLOCK_SKEW,
}
KEY_RING_CACHE_SECONDS = 5  # each worker rereads the signing-key schedule this often
DEV_FEDMASTER_URL = "http://127.0.0.1:8081"  # `healthid fedmaster` in development
KOMP_TEST_CA_DIR = "komp-test-ca"


def provider_configuration(settings: Settings) -> ProviderConfiguration:
    """Our entity configuration's variable parts (spec §1.1: two base URLs, mTLS for PAR and
    token)."""
    base = settings.public_url.rstrip("/")
    mtls = (settings.mtls_public_url or settings.public_url).rstrip("/")
    try:
        return ProviderConfiguration(
            issuer=base,
            authorization_endpoint=f"{base}/auth",
            token_endpoint=f"{mtls}/token",
            pushed_authorization_request_endpoint=f"{mtls}/PAR_Auth",
            signed_jwks_uri=f"{base}{SIGNED_JWKS_PATH}",
            organization_name=settings.organization_name,
            logo_uri=settings.logo_uri or f"{base}/logo.svg",
            authority_hints=(settings.fedmaster_url or DEV_FEDMASTER_URL,),
            federation_name=settings.organization_name,
            federation_organization_name=settings.organization_name,
            contacts=tuple(settings.federation_contacts),
            homepage_uri=settings.homepage_uri or base,
            allow_http=settings.development,
        )
    except ValueError as exc:
        raise StartupError(f"federation settings: {exc}") from exc


def token_certificate_chains(settings: Settings) -> Callable[[dict[str, Any]], list[str]]:
    """x5c for an ID-token key: configured Komp-PKI chains, or the test CA in development;
    read once per key and process (every ID token carries it)."""
    chains = _token_certificate_chains(settings)
    memo: dict[str, list[str]] = {}

    def cached(jwk: dict[str, Any]) -> list[str]:
        kid = str(jwk["kid"])
        if kid not in memo:
            memo[kid] = chains(jwk)
        return list(memo[kid])

    return cached


def _token_certificate_chains(settings: Settings) -> Callable[[dict[str, Any]], list[str]]:
    if settings.token_certificates_dir is not None:
        directory = settings.token_certificates_dir

        def configured(jwk: dict[str, Any]) -> list[str]:
            path = directory / f"{jwk['kid']}.pem"
            try:
                chain = x509.load_pem_x509_certificates(path.read_bytes())
            except (OSError, ValueError) as exc:
                raise StartupError(f"no certificate chain for token key {jwk['kid']}") from exc
            return [
                base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode("ascii")
                for c in chain
            ]

        return configured
    if not settings.development:
        raise StartupError("HEALTHID_TOKEN_CERTIFICATES_DIR is required in production")
    from healthid.demo.komp_test_ca import TestKompCa

    ca = TestKompCa.create(settings.data_dir / KOMP_TEST_CA_DIR)
    return ca.x5c_for


def attestation_policy(settings: Settings) -> AttestationPolicy:
    """Which device attestations the wallet API accepts, from the settings (Apple App
    Attest as the enclave checks it, :func:`healthid.enclave_runtime.apple_config`)."""
    from healthid.protocol.attestation import AndroidConfig, google_hardware_attestation_roots

    android = None
    if settings.android_package_names and settings.android_signing_cert_digests:
        try:
            android = AndroidConfig(
                roots=tuple(google_hardware_attestation_roots()),
                package_names=frozenset(settings.android_package_names),
                signing_cert_digests=frozenset(
                    bytes.fromhex(d) for d in settings.android_signing_cert_digests
                ),
                require_strongbox=settings.android_require_strongbox,
                min_os_patch_level=settings.android_min_patch_level,
            )
        except ValueError as exc:
            raise StartupError(f"device attestation settings: {exc}") from exc
    return AttestationPolicy(
        app_id=settings.wallet_app_id,
        allow_software=settings.development,
        apple=apple_config(settings),
        android=android,
    )


@dataclass(kw_only=True)
class Runtime:
    settings: Settings
    engine: AsyncEngine
    enclave: Enclave | RemoteEnclave
    policyholders: PolicyholderRepository
    ephemeral: EphemeralStore
    key_store: SigningKeyStore
    devices: DeviceRepository
    audit: AuditLog

    def wallet_service(self) -> WalletService:
        return WalletService(
            audit=self.audit,
            enclave=self.enclave,
            policyholders=self.policyholders,
            devices=self.devices,
            ephemeral=self.ephemeral,
            attestation=attestation_policy(self.settings),
            session_ttl=max(DEVICE_SESSION_TTL, self.settings.sso_window),
        )

    def key_ring(self, purpose: str) -> KeyRing:
        if purpose not in KEY_PURPOSES:
            raise StartupError(f"unknown key purpose {purpose!r}: {', '.join(KEY_PURPOSES)}")
        return KeyRing(
            store=self.key_store,
            repository=SqlKeyRingRepository(self.engine),
            clock=lambda: int(time.time()),
            max_signed_lifetime=KEY_PURPOSES[purpose],
            cache_seconds=KEY_RING_CACHE_SECONDS,
        )

    def federation_publisher(self) -> FederationPublisher:
        return FederationPublisher(
            config=provider_configuration(self.settings),
            key_store=self.key_store,
            federation_ring=self.key_ring("federation"),
            token_ring=self.key_ring("token"),
            token_x5c=token_certificate_chains(self.settings),
        )

    async def ensure_keys(self) -> None:
        """Create the first signing key of every purpose that has none (active at once)."""
        for purpose in KEY_PURPOSES:
            await self.key_ring(purpose).ensure(purpose)

    async def aclose(self) -> None:
        await self.audit.aclose()  # what is still queued is written first
        with contextlib.suppress(Exception):  # then signed, if the enclave still answers
            await self.audit.checkpoint(self.enclave)
        close_keys = getattr(self.key_store, "close", None)
        if callable(close_keys):
            close_keys()
        self.enclave.close()
        await self.ephemeral.aclose()
        await self.engine.dispose()


async def open_runtime(settings: Settings, *, migrate: bool | None = None) -> Runtime:
    """Open the stores and the enclave. Development mode applies migrations by default."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_engine(settings.sql_url, pool_size=settings.database_pool_size)
    if settings.development if migrate is None else migrate:
        await upgrade(engine)
    key_store = build_key_store(settings)
    return Runtime(
        settings=settings,
        engine=engine,
        enclave=(
            RemoteEnclave(settings.enclave_socket)
            if settings.enclave_socket is not None
            else RemoteEnclave(port=settings.enclave_port)
            if settings.enclave_port is not None
            else build_enclave(settings, key_store.sign)
        ),
        policyholders=PolicyholderRepository(engine),
        ephemeral=open_ephemeral_store(settings.redis_url, prefix=settings.redis_prefix),
        key_store=key_store,
        devices=DeviceRepository(engine),
        audit=AuditLog(engine),
    )


class _UnconfiguredFederation:
    async def resolve(self, client_id: str) -> ResolvedRelyingParty:
        raise InvalidClientError("relying parties cannot be resolved: no federation configured")


def build_app(
    settings: Settings,
    *,
    extra_routes: Sequence[BaseRoute] = (),
    resolver: RelyingPartyResolver | None = None,
    prepared: bool = False,
) -> Starlette:
    """The host ASGI app for ``healthid serve``; stores open in the app's lifespan.

    ``prepared``: the database is migrated and the first keys exist (one of several
    workers, whose parent did that once): the app neither migrates nor creates keys.
    """
    holder: list[Runtime] = []
    fetchers: list[GuardedFetcher] = []

    async def deps() -> HostDeps:
        rt = await open_runtime(settings, migrate=False if prepared else None)
        holder.append(rt)
        registry = None
        if resolver is None and settings.fedmaster_url and settings.fedmaster_jwks_file:
            fetcher = GuardedFetcher(development=settings.development)
            fetchers.append(fetcher)
            registry = RelyingPartyRegistry(
                fetcher,
                rt.ephemeral,
                master_entity_id=settings.fedmaster_url,  # exactly the master's iss
                master_jwks=pinned_master_jwks(settings.fedmaster_jwks_file),
                clock=time.time,
            )
        if settings.development and not prepared:
            await rt.ensure_keys()
        wallet = rt.wallet_service()
        publisher = rt.federation_publisher()
        oidc = OidcService(
            issuer=settings.public_url.rstrip("/"),
            resolver=resolver or registry or _UnconfiguredFederation(),
            store=rt.ephemeral,
            wallet=wallet,
            enclave=rt.enclave,
            policyholders=rt.policyholders,
            publisher=publisher,
            sso_window=settings.sso_window,
            development=settings.development,
            audit=rt.audit,
        )
        # the audit trail: queued by the services, written every second, and checkpointed
        # (signed) by the enclave every minute
        rt.audit.start(rt.enclave)
        return HostDeps(
            mode=settings.mode.value,
            public_url=settings.public_url,
            enclave=rt.enclave,
            engine=rt.engine,
            ephemeral=rt.ephemeral,
            wallet=wallet,
            federation=publisher,
            oidc=oidc,
            trusted_proxies=tuple(settings.trusted_proxies),
            app_links=AppLinks(
                android_packages=tuple(settings.android_package_names),
                android_cert_digests=tuple(settings.android_signing_cert_digests),
                apple_app_ids=tuple(
                    [f"{settings.apple_team_id}.{settings.apple_bundle_id}"]
                    if settings.apple_team_id and settings.apple_bundle_id
                    else []
                ),
            ),
        )

    async def close() -> None:
        while fetchers:
            await fetchers.pop().aclose()
        while holder:
            await holder.pop().aclose()

    return create_app(deps, close, extra_routes=extra_routes)


def worker_app() -> Starlette:
    """One worker of ``healthid serve --workers N`` (uvicorn imports this factory in each
    worker process): settings from the environment and HEALTHID_CONFIG, like the parent's;
    the parent has migrated the database and created the first keys."""
    from healthid.gc_tuning import tune_for_serving
    from healthid.settings import load_settings

    app = build_app(load_settings(), prepared=True)
    tune_for_serving()
    return app


async def prepare_for_workers(settings: Settings) -> None:
    """What the workers must not race on, done once before they start: migrations (in
    development) and the first signing keys."""
    rt = await open_runtime(settings)
    try:
        await rt.ensure_keys()
    finally:
        await rt.aclose()
