"""The enclave's attestation document, relayed by the host (issue #5 item 3).

``GET /attestation?nonce=<base64url, 16..64 bytes>`` answers the document the enclave made for
that nonce: its public keys bound into its evidence (a DCAP quote under SGX; marked simulated
evidence in development). The host only relays it: whoever verifies it (``healthid attest
verify``, the wallet SDK) trusts the evidence, not the host.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from typing import Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from healthid.enclave.api import EnclaveClient, EnclaveError, EnclaveUnavailable
from healthid.host.json_io import JSONResponse

MIN_NONCE_BYTES: Final = 16
MAX_NONCE_BYTES: Final = 64
_B64URL: Final = re.compile(r"[A-Za-z0-9_-]{22,86}")  # 16..64 bytes, unpadded
NO_STORE: Final = {"Cache-Control": "no-store"}


def _error(status: int, code: str, description: str) -> JSONResponse:
    return JSONResponse(
        {"error": code, "error_description": description}, status_code=status, headers=NO_STORE
    )


def _nonce(text: str) -> bytes | None:
    if not _B64URL.fullmatch(text):
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != text:  # canonical form only
        return None
    return raw if MIN_NONCE_BYTES <= len(raw) <= MAX_NONCE_BYTES else None


def enclave_routes(enclave: Callable[[], EnclaveClient]) -> list[Route]:
    async def attestation(request: Request) -> Response:
        nonce = _nonce(request.query_params.get("nonce", ""))
        if nonce is None or len(request.query_params.getlist("nonce")) != 1:
            return _error(
                400,
                "invalid_request",
                f"nonce: one base64url value of {MIN_NONCE_BYTES} to {MAX_NONCE_BYTES} bytes",
            )
        try:
            document = await enclave().attest(nonce)
        except EnclaveUnavailable:
            raise  # the app answers 503
        except EnclaveError as exc:
            return _error(503, "temporarily_unavailable", f"no attestation: {exc}")
        return Response(document, media_type="application/json", headers=NO_STORE)

    return [Route("/attestation", attestation, methods=["GET"])]
