"""The wallet's check of the enclave: fetch its attestation document and verify it.

Source: ../shared/spec/vau-and-tee.md §4.5 (client rule: verify the enclave before trusting the
channel key; production builds reject ``tee == "simulated"``). The wallet sends a fresh random
nonce to ``GET {base_url}/attestation?nonce=<base64url>`` and accepts the enclave's keys only
from a document that :func:`healthid.protocol.tee.verify_attestation_document` accepts under
the app's pinned policy. Simulated evidence is accepted only with ``development=True``.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Final

import httpx

from healthid.protocol.jose.keys import b64url_encode
from healthid.protocol.tee import (
    MAX_DOCUMENT_BYTES,
    Collateral,
    TeePolicy,
    VerifiedAttestation,
    verify_attestation_document,
)

ATTESTATION_PATH: Final = "/attestation"
NONCE_BYTES: Final = 32
FETCH_TIMEOUT_SECONDS: Final = 10.0


class AttestationFetchError(Exception):
    """The attestation document could not be fetched (HTTP status, size, transport)."""


def fetch_attestation_document(http: httpx.Client, base_url: str, nonce: bytes) -> bytes:
    """The raw document for ``nonce``; the body is capped at MAX_DOCUMENT_BYTES while read."""
    url = base_url.rstrip("/") + ATTESTATION_PATH
    params = {"nonce": b64url_encode(nonce)}
    try:
        with http.stream(
            "GET",
            url,
            params=params,
            headers={"Accept": "application/json"},
            timeout=FETCH_TIMEOUT_SECONDS,
            follow_redirects=False,
        ) as response:
            if response.status_code != httpx.codes.OK:
                raise AttestationFetchError(f"{url} answered HTTP {response.status_code}")
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise AttestationFetchError(
                        f"the attestation document exceeds {MAX_DOCUMENT_BYTES} bytes"
                    )
    except httpx.HTTPError as exc:
        raise AttestationFetchError(f"fetching {url} failed: {exc}") from exc
    return bytes(body)


def verify_enclave(
    http: httpx.Client,
    base_url: str,
    *,
    policy: TeePolicy,
    collateral: Collateral | None = None,
    development: bool = False,
    now: datetime | None = None,
    nonce: bytes | None = None,
) -> VerifiedAttestation:
    """Fetch and verify the enclave's attestation document; return its attested keys.

    ``collateral``: Intel collateral for the quote (else the stapled one is used).
    ``development``: accept simulated evidence (development mode only; never in a release).
    ``now`` and ``nonce`` default to the clock and 32 random bytes.
    """
    nonce = secrets.token_bytes(NONCE_BYTES) if nonce is None else nonce
    body = fetch_attestation_document(http, base_url, nonce)
    return verify_attestation_document(
        body,
        nonce=nonce,
        policy=policy,
        collateral=collateral,
        now=datetime.now(UTC) if now is None else now,
        allow_simulated=development,
    )
