"""The enclave's composition root: builds the enclave service from :class:`Settings`.

Everything the enclave process (``healthid enclave serve``, :mod:`healthid.enclave_cli`)
assembles comes from here: the evidence provider, the root-key sealer, the key-release
policy, the signing key store, the eGK trust anchors, the eID-Server client and the federation
anchor. The host's composition root (:mod:`healthid.runtime`) builds its in-process enclave
(``tee: simulated``) with the same functions.

This module is part of the enclave's trusted computing base: under Gramine-SGX every module
it imports is a measured, trusted file (deploy/gramine). So it imports nothing of the host
(``healthid.host``, ``healthid.store``, the ASGI, SQL and Redis libraries);
tests/test_architecture.py checks what ``import healthid.enclave_cli`` loads.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509

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
from healthid.enclave.sealed_keys import load_or_create_key
from healthid.enclave.sealing import GramineSealer, RootKeySealer, SimulatedFileSealer
from healthid.enclave.vault import Vault
from healthid.keys.base import SigningKeyStore
from healthid.keys.file import FileKeyStore
from healthid.protocol.attestation import AppleConfig, apple_app_attestation_roots
from healthid.protocol.tee import TeePolicy, TeePolicyError
from healthid.settings import KeyBackend, Settings, TeeKind

ROOT_KEY_FILE = "root-key.simulated-tee.INSECURE.json"
# tee=sgx: the root key on Gramine's _sgx_mrenclave encrypted mount (healthid.enclave.sealing)
SGX_SEALED_ROOT_DIR = "sealed-root"
SGX_ROOT_KEY_FILE = "root-key.sgx-sealed.json"
IDENTITY_KEY_FILE = "identity-key.sealed.json"  # the enclave's attested identity key
EGK_TEST_CA_DIR = "egk-test-ca"


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
        apple=apple_config(settings),
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


def pinned_master_jwks(path: Path) -> dict[str, Any]:
    """The federation master's pinned key(s): a JWKS or a single JWK file."""
    try:
        pinned = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StartupError(f"HEALTHID_FEDMASTER_JWKS_FILE: {path} is not a JWK/JWKS file") from exc
    if not isinstance(pinned, dict):
        raise StartupError(f"HEALTHID_FEDMASTER_JWKS_FILE: {path} is not a JWK/JWKS file")
    return pinned if "keys" in pinned else {"keys": [pinned]}


def apple_config(settings: Settings) -> AppleConfig | None:
    """Apple App Attest for this app (None: not configured). The enclave checks App Attest
    assertions at login with it; the host's device-attestation policy carries the same."""
    if not (settings.apple_team_id and settings.apple_bundle_id):
        return None
    try:
        return AppleConfig(
            team_id=settings.apple_team_id,
            bundle_id=settings.apple_bundle_id,
            roots=tuple(apple_app_attestation_roots()),
            production=not settings.apple_development_environment,
        )
    except ValueError as exc:
        raise StartupError(f"device attestation settings: {exc}") from exc


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
