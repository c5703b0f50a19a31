"""The composition root: builds the parts of a healthid process from :class:`Settings`.

The only module that wires host and enclave together; in the embedded default the enclave
runs in-process (``tee: simulated``).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from healthid.eid.client import EidClient, EidClientConfig
from healthid.eid.transport import TransportConfig
from healthid.enclave.attestation import (
    EvidenceProvider,
    GramineAttestationError,
    GramineEvidence,
)
from healthid.enclave.audit_signer import AuditSigner
from healthid.enclave.key_release import (
    KeyReleaseService,
    MeasuredSimulatedEvidence,
    ReleasingEnclave,
    simulated_body,
)
from healthid.enclave.relying_parties import FederationAnchor
from healthid.enclave.rpc.client import RemoteEnclave
from healthid.enclave.sealed_keys import load_or_create_key
from healthid.enclave.sealing import GramineSealer, RootKeySealer, SimulatedFileSealer
from healthid.enclave.service import Enclave
from healthid.enclave.vault import Vault
from healthid.host.app import HostDeps, create_app
from healthid.host.attestation import AttestationPolicy
from healthid.host.federation_api import SIGNED_JWKS_PATH, AppLinks, FederationPublisher
from healthid.host.fetch import GuardedFetcher
from healthid.host.oidc_service import OidcService, RelyingPartyResolver
from healthid.host.relying_parties import RelyingPartyRegistry
from healthid.host.wallet_service import DEVICE_SESSION_TTL, WalletService
from healthid.keys.base import SigningKeyStore
from healthid.keys.file import FileKeyStore
from healthid.keys.rotation import KeyRing
from healthid.protocol.federation import ResolvedRelyingParty
from healthid.protocol.federation.provider import ProviderConfiguration
from healthid.protocol.oauth.errors import InvalidClientError
from healthid.protocol.tee import TeePolicy, TeePolicyError
from healthid.settings import KeyBackend, Settings, TeeKind
from healthid.store.ephemeral import EphemeralStore, open_ephemeral_store
from healthid.store.sql.audit import AuditLog
from healthid.store.sql.devices import DeviceRepository
from healthid.store.sql.engine import create_engine, upgrade
from healthid.store.sql.keyring import SqlKeyRingRepository
from healthid.store.sql.policyholders import PolicyholderRepository

ROOT_KEY_FILE = "root-key.simulated-tee.INSECURE.json"
# tee=sgx: the root key on Gramine's _sgx_mrenclave encrypted mount (healthid.enclave.sealing)
SGX_SEALED_ROOT_DIR = "sealed-root"
SGX_ROOT_KEY_FILE = "root-key.sgx-sealed.json"
CLOCK_SKEW = 300  # seconds verifiers may be off; added to what a key signed may live
# Signing key purposes and the longest lifetime of anything each signs (seconds):
# entity statements and signed JWKS live 2 h (gematik-sectoral-idp.md §3), ID tokens 300 s.
KEY_PURPOSES: dict[str, int] = {
    "federation": 2 * 60 * 60 + CLOCK_SKEW,
    "token": 300 + CLOCK_SKEW,
}


class StartupError(Exception):
    """The process cannot be assembled from these settings."""


def enclave_dir(settings: Settings) -> Path:
    return settings.data_dir / "enclave"


def build_key_store(settings: Settings) -> SigningKeyStore:
    """The signing key store: key files in development, the HSM (PKCS#11) in production."""
    if settings.key_backend is KeyBackend.FILE:
        return FileKeyStore(settings.data_dir / "keys")
    from healthid.keys.pkcs11 import Pkcs11KeyStore

    if not (settings.pkcs11_module and settings.pkcs11_token_label and settings.pkcs11_pin):
        raise StartupError("key_backend=pkcs11 needs HEALTHID_PKCS11_MODULE, _TOKEN_LABEL and _PIN")
    return Pkcs11KeyStore(
        settings.pkcs11_module,
        settings.pkcs11_token_label,
        settings.pkcs11_pin.get_secret_value(),
    )


def enclave_evidence(settings: Settings) -> EvidenceProvider:
    """The enclave's evidence: simulated (with its SIMULATED report body) in development, an
    SGX DCAP quote from Gramine with tee=sgx (refused outside Gramine-SGX)."""
    if settings.tee is TeeKind.SIMULATED:
        try:
            return MeasuredSimulatedEvidence(body=simulated_body(settings.simulated_measurement))
        except ValueError as exc:
            raise StartupError(f"HEALTHID_SIMULATED_MEASUREMENT: {exc}") from exc
    provider = GramineEvidence()
    try:
        provider.check_available()
    except GramineAttestationError as exc:
        raise StartupError(
            f"tee=sgx: {exc}. The enclave runs as its own process under Gramine-SGX; a host "
            "reaches it through HEALTHID_ENCLAVE_SOCKET"
        ) from exc
    return provider


def root_key_sealer(settings: Settings) -> RootKeySealer:
    """Where the root key is sealed: a file marked insecure (simulated), or Gramine's
    ``_sgx_mrenclave`` encrypted mount (sgx; see healthid.enclave.sealing)."""
    if settings.tee is TeeKind.SIMULATED:
        return SimulatedFileSealer(enclave_dir(settings) / ROOT_KEY_FILE)
    return GramineSealer(settings.data_dir / SGX_SEALED_ROOT_DIR / SGX_ROOT_KEY_FILE)


def key_release_policy(settings: Settings) -> TeePolicy | None:
    """The configured key-release policy (None: the same enclave as this one)."""
    if settings.key_release_policy is None:
        return None
    try:
        return TeePolicy.from_json(settings.key_release_policy.read_text(encoding="utf-8"))
    except (OSError, TeePolicyError) as exc:
        raise StartupError(f"HEALTHID_KEY_RELEASE_POLICY: {exc}") from exc


def build_enclave(
    settings: Settings, token_signer: Callable[[str, bytes], bytes] | None = None
) -> ReleasingEnclave:
    """The enclave service: in-process for the host in development (simulated TEE), or in the
    enclave process (``healthid enclave serve``; tee=sgx only under Gramine-SGX)."""
    evidence = enclave_evidence(settings)  # first: tee=sgx outside Gramine creates nothing
    policy = key_release_policy(settings)
    root = root_key_sealer(settings).load_or_create()
    workers = settings.enclave_workers or os.cpu_count() or 1
    identity = load_or_create_key(root, "identity", enclave_dir(settings) / IDENTITY_KEY_FILE)
    anchor = federation_anchor(settings)
    if anchor is None and settings.tee is not TeeKind.SIMULATED:
        raise StartupError(
            "tee=sgx: the enclave verifies relying parties itself and needs the federation "
            "master: HEALTHID_FEDMASTER_URL and HEALTHID_FEDMASTER_JWKS_FILE"
        )
    return ReleasingEnclave(
        Vault(root),
        key_release=KeyReleaseService(
            root=root, identity=identity.public_key(), evidence=evidence, policy=policy
        ),
        root=root,
        workers=workers,
        tee=settings.tee.value,
        allow_test_kvnr=settings.development,
        egk_cas=load_egk_cas(settings),
        eid_client_factory=eid_client_factory(settings),
        token_signer=token_signer,
        identity_key=identity,
        audit=AuditSigner.load_or_create(root, enclave_dir(settings)),
        evidence=evidence,
        federation=anchor,
        apple=attestation_policy(settings).apple,
    )


def federation_anchor(settings: Settings) -> FederationAnchor | None:
    """The federation master the enclave trusts (to verify relying parties before it
    encrypts an ID token to them), when one is configured."""
    if not (settings.fedmaster_url and settings.fedmaster_jwks_file):
        return None
    return FederationAnchor(
        entity_id=settings.fedmaster_url,
        jwks=pinned_master_jwks(settings.fedmaster_jwks_file),
        allow_http=settings.development,
    )


IDENTITY_KEY_FILE = "identity-key.sealed.json"  # the enclave's attested identity key
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
    """Which device attestations the wallet API accepts, from the settings."""
    from healthid.protocol.attestation import (
        AndroidConfig,
        AppleConfig,
        apple_app_attestation_roots,
        google_hardware_attestation_roots,
    )

    apple = android = None
    try:
        if settings.apple_team_id and settings.apple_bundle_id:
            apple = AppleConfig(
                team_id=settings.apple_team_id,
                bundle_id=settings.apple_bundle_id,
                roots=tuple(apple_app_attestation_roots()),
                production=not settings.apple_development_environment,
            )
        if settings.android_package_names and settings.android_signing_cert_digests:
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
        apple=apple,
        android=android,
    )


def eid_client_factory(settings: Settings) -> Callable[[], EidClient] | None:
    """How the enclave reaches the eID-Server (None: eID proofing is not configured)."""
    if settings.eid_server_url is None:
        return None
    config = EidClientConfig(
        endpoint=settings.eid_server_url,
        poll_attempts=1,  # the wallet asks again; the enclave never blocks on a user
        transport=TransportConfig(allow_plain_http=settings.development),
    )
    return lambda: EidClient(config)


EGK_TEST_CA_DIR = "egk-test-ca"


def load_egk_cas(settings: Settings) -> list[x509.Certificate]:
    """The configured eGK CA certificates; development mode adds the test eGK CA."""
    cas: list[x509.Certificate] = []
    for path in settings.egk_ca_files:
        raw = path.read_bytes()
        try:
            cas.append(
                x509.load_pem_x509_certificate(raw)
                if b"-----BEGIN" in raw
                else x509.load_der_x509_certificate(raw)
            )
        except ValueError as exc:
            raise StartupError(f"HEALTHID_EGK_CA_FILES: {path} is not a certificate") from exc
    if settings.development:
        from healthid.demo.egk_test_ca import TestEgkCa

        cas.append(TestEgkCa.create(settings.data_dir / EGK_TEST_CA_DIR).certificate)
    return cas


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
    engine = create_engine(settings.sql_url)
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


def pinned_master_jwks(path: Path) -> dict[str, Any]:
    """The federation master's pinned key(s): a JWKS or a single JWK file."""
    try:
        pinned = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StartupError(f"HEALTHID_FEDMASTER_JWKS_FILE: {path} is not a JWK/JWKS file") from exc
    if not isinstance(pinned, dict):
        raise StartupError(f"HEALTHID_FEDMASTER_JWKS_FILE: {path} is not a JWK/JWKS file")
    return pinned if "keys" in pinned else {"keys": [pinned]}


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
    from healthid.settings import load_settings

    return build_app(load_settings(), prepared=True)


async def prepare_for_workers(settings: Settings) -> None:
    """What the workers must not race on, done once before they start: migrations (in
    development) and the first signing keys."""
    rt = await open_runtime(settings)
    try:
        await rt.ensure_keys()
    finally:
        await rt.aclose()
