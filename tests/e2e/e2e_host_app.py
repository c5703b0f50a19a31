"""The host process of the end-to-end tests (issue #5): uvicorn's app factory.

    python -m uvicorn e2e_host_app:create_app --factory ...   (PYTHONPATH = tests/e2e)

The IdP app of ``healthid serve`` built from the HEALTHID_* environment the test sets
(PostgreSQL, Redis, ``HEALTHID_ENCLAVE_SOCKET`` of the enclave process), with a resolver that
knows the test's relying parties instead of a federation. Their public material (TLS
certificate, encryption key) lies in ``HEALTHID_E2E_RP_FILE``; the host never sees a private
key of a relying party. Logs go to stderr at INFO level (the test captures them to a file).

Kept small on purpose: whatever this process holds in memory is searched for personal data.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from starlette.applications import Starlette

from healthid.host.relying_parties import RelyingPartyError
from healthid.protocol.federation import ResolvedRelyingParty
from healthid.protocol.federation.trust_chain import RelyingPartyKeys

RP_FILE_ENV = "HEALTHID_E2E_RP_FILE"
SCOPES = (
    "openid",
    "urn:telematik:versicherter",
    "urn:telematik:given_name",
    "urn:telematik:family_name",
    "urn:telematik:display_name",
    "urn:telematik:geburtsdatum",
)
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def public_registration(
    *, client_id: str, redirect_uri: str, cert_pem: str, enc_jwk: dict[str, Any]
) -> dict[str, Any]:
    """What the host may know of a relying party (written by the test, read here)."""
    return {
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "cert_pem": cert_pem,
        "enc_jwk": enc_jwk,
    }


def resolved(entry: dict[str, Any]) -> ResolvedRelyingParty:
    """The registration the IdP would derive from a verified trust chain."""
    cert = x509.load_pem_x509_certificate(entry["cert_pem"].encode("ascii"))
    return ResolvedRelyingParty(
        client_id=entry["client_id"],
        expires_at=2**31,
        redirect_uris=(entry["redirect_uri"],),
        scopes=SCOPES,
        federation_jwks={"keys": []},
        jwks=None,
        signed_jwks_uri=None,
        keys=RelyingPartyKeys(
            tls_certificates=(cert.public_bytes(serialization.Encoding.DER),),
            encryption_jwk=entry["enc_jwk"],
        ),
        id_token_versions_supported=("1.0.0", "2.0.0"),
        metadata={},
    )


class KnownRelyingParties:
    """Resolves the test's relying parties only; anything else is not vouched for."""

    def __init__(self, entries: list[dict[str, Any]]) -> None:
        self._known = {e["client_id"]: resolved(e) for e in entries}

    async def resolve(self, client_id: str) -> ResolvedRelyingParty:
        found = self._known.get(client_id)
        if found is None:
            raise RelyingPartyError("unknown relying party", reason="not_vouched")
        return found


def create_app() -> Starlette:
    """uvicorn's factory: settings from the environment, stores migrated, keys created."""
    from healthid.runtime import build_app
    from healthid.settings import load_settings

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=LOG_FORMAT)
    entries = json.loads(Path(os.environ[RP_FILE_ENV]).read_text(encoding="utf-8"))
    return build_app(load_settings(), resolver=KnownRelyingParties(entries), prepared=True)
