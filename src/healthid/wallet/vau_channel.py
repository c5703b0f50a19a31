"""The wallet's end of the VAU channel into the enclave (issue #6 items 3-4).

Order of trust (vau-and-tee.md §4.5, "verify the enclave before trusting the channel key"):

1. fetch the enclave's attestation document for a fresh nonce and verify it under the app's
   pinned policy (:func:`healthid.wallet.tee_verify.verify_enclave`); simulated evidence
   passes only in development mode;
2. run the handshake (``POST /VAU``, then ``POST /VAU/<cid>``; transport §1.2): the signed
   public VAU keys M2 carries must verify under the **attested identity key**
   (:func:`~healthid.protocol.vau.es256_verifier`) before anything is encapsulated to them —
   otherwise no M3 is sent (:class:`~healthid.protocol.vau.VauSignatureError`);
3. M4 proves the peer holds the private VAU keys; from then on every request is one AES-GCM
   message whose counter the enclave refuses to see twice.

An operation's request is the CBOR map ``{"op", "session", "args"}`` inside the channel. The
outer request repeats the non-personal part — ``VAU-Op``, the device session as a bearer
token and the routing arguments in ``VAU-Args`` — for the host to fetch the sealed records
with; the enclave checks that both say the same. Personal values (the eGK certificate, names,
claim values, the history) only ever travel inside.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import urlencode

import cbor2
import httpx

from healthid.protocol import device_auth
from healthid.protocol.tee import TeePolicy, VerifiedAttestation
from healthid.protocol.vau import (
    ClientConfig,
    ClientSession,
    Environment,
    client,
    es256_verifier,
)
from healthid.protocol.vau import cbor as vau_cbor
from healthid.protocol.vau.cbor import CborValue
from healthid.wallet.tee_verify import verify_enclave

VAU_PATH: Final = "/VAU"
CID_HEADER: Final = "VAU-CID"
OP_HEADER: Final = "VAU-Op"
ARGS_HEADER: Final = "VAU-Args"
CBOR: Final = "application/cbor"
OCTETS: Final = "application/octet-stream"
# what a VAU-CID may look like (the Go VAU client's check, vau-and-tee.md §1.2)
CID_PATTERN: Final = re.compile(r"/[A-Za-z0-9\-/]{1,200}")
UNKNOWN_CID_CODE: Final = 9  # ASL error code: the channel is unknown or has expired
MAX_RESPONSE_BYTES: Final = 2 * 1024 * 1024
# Development without a pinned policy: no SGX enclave matches an all-zero MRSIGNER, so only
# the simulated enclave (accepted in development mode alone) gets through.
DEVELOPMENT_ONLY_POLICY: Final = TeePolicy(mrsigners=frozenset({bytes(32)}), isv_prod_id=0)


class ChannelError(Exception):
    """A refusal on the channel: by the transport (HTTP status + error body), by the host
    (its JSON error) or by the enclave's operation (inside the channel)."""

    def __init__(self, status: int, error: str, description: str, *, code: int = 0) -> None:
        super().__init__(f"{status} {error}: {description}")
        self.status = status
        self.error = error
        self.description = description
        self.code = code  # the transport's error code (ASL), 0 otherwise

    @property
    def channel_gone(self) -> bool:
        """The enclave no longer knows the channel: start a new one."""
        return self.status == 404 and self.code == UNKNOWN_CID_CODE


def _refusal(response: httpx.Response) -> ChannelError:
    kind = response.headers.get("content-type", "").split(";")[0].strip()
    if kind == CBOR:
        try:
            body = cbor2.loads(response.content)
        except (ValueError, cbor2.CBORDecodeError):
            body = None
        if isinstance(body, dict) and body.get("MessageType") == "Error":
            return ChannelError(
                response.status_code,
                "vau_error",
                str(body.get("ErrorMessage", "")),
                code=int(body.get("ErrorCode", 0)),
            )
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        return ChannelError(
            response.status_code,
            str(body.get("error", "error")),
            str(body.get("error_description", "")),
        )
    return ChannelError(response.status_code, "error", "the channel request was refused")


def client_config(
    verified: VerifiedAttestation,
    *,
    clock: Callable[[], int] | None = None,
    rng: Callable[[int], bytes] = secrets.token_bytes,
) -> ClientConfig:
    """The channel's client side for an attested enclave: its identity key checks the VAU
    keys; the PU flag is that of its environment (test for the simulated TEE)."""
    return ClientConfig(
        environment=Environment.TEST if verified.simulated else Environment.PRODUCTION,
        verifier=es256_verifier(verified.identity_key),
        clock=clock or (lambda: int(time.time())),
        rng=rng,
    )


class VauChannel:
    """One open channel: the client state (keys, counters) and where to post."""

    def __init__(
        self, http: httpx.Client, base_url: str, *, config: ClientConfig, cid: str
    ) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self._config = config
        self._cid = cid
        self._session: ClientSession | None = None

    @property
    def cid(self) -> str:
        return self._cid

    @classmethod
    def open(
        cls,
        http: httpx.Client,
        base_url: str,
        *,
        policy: TeePolicy | None = None,
        development: bool = False,
    ) -> VauChannel:
        """Verify the enclave (step 1), then run the handshake with its identity key."""
        if policy is None and not development:
            raise ValueError("pin the enclave with a TeePolicy (or use development mode)")
        verified = verify_enclave(
            http, base_url, policy=policy or DEVELOPMENT_ONLY_POLICY, development=development
        )
        return cls.handshake(http, base_url, client_config(verified))

    @classmethod
    def handshake(cls, http: httpx.Client, base_url: str, config: ClientConfig) -> VauChannel:
        """M1-M4; ``config.verifier`` must accept the signed VAU keys before M3 is sent."""
        base = base_url.rstrip("/")
        m1, handshake = client.start(config)
        answer = http.post(base + VAU_PATH, content=m1, headers={"Content-Type": CBOR})
        if answer.status_code != 200:
            raise _refusal(answer)
        cid = answer.headers.get(CID_HEADER, "")
        if not CID_PATTERN.fullmatch(cid):
            raise ChannelError(502, "vau_error", "the server sent no valid VAU-CID")
        # raises VauSignatureError unless the attested identity key signed the VAU keys
        m3, confirmation = client.receive_m2(config, handshake, answer.content)
        answer = http.post(base + cid, content=m3, headers={"Content-Type": CBOR})
        if answer.status_code != 200:
            raise _refusal(answer)
        channel = cls(http, base, config=config, cid=cid)
        channel._session = client.receive_m4(config, confirmation, answer.content)
        return channel

    def call(
        self,
        op: str,
        *,
        session: str = "",
        args: Mapping[str, str] | None = None,
        inner: Mapping[str, CborValue] | None = None,
    ) -> Any:
        """One operation. ``args`` travel inside and outside (routing, never personal);
        ``inner`` only inside, as does ``session``, the session token (outside: its bearer).
        Returns the enclave's result or raises ChannelError."""
        if self._session is None:
            raise ChannelError(409, "vau_error", "the handshake has not finished")
        routing = dict(args or {})
        body: dict[str, CborValue] = {**dict(inner or {}), **routing}
        plaintext = vau_cbor.encode({"op": op, "session": session, "args": body})
        self._session, message = client.encrypt_request(self._config, self._session, plaintext)
        headers = {"Content-Type": OCTETS, OP_HEADER: op}
        if routing:
            headers[ARGS_HEADER] = urlencode(sorted(routing.items()))
        if session:  # the host sees the session's bearer only, never its token
            headers["Authorization"] = f"Bearer {device_auth.session_bearer(session)}"
        answer = self._http.post(self._base + self._cid, content=message, headers=headers)
        if answer.status_code != 200:
            raise _refusal(answer)
        if len(answer.content) > MAX_RESPONSE_BYTES:
            raise ChannelError(502, "vau_error", "the response is too large")
        self._session, raw = client.decrypt_response(self._config, self._session, answer.content)
        reply = cbor2.loads(raw)
        if not isinstance(reply, dict):
            raise ChannelError(502, "vau_error", "the enclave's answer is not a map")
        if "error" in reply:
            error = reply["error"] if isinstance(reply["error"], dict) else {}
            raise ChannelError(
                int(error.get("status", 400)),
                str(error.get("error", "error")),
                str(error.get("error_description", "")),
            )
        return reply.get("ok")
