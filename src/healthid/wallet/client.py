"""The reference wallet: a Python SDK that plays the insurer's app against the wallet API.

Its device key is a P-256 key in a wallet directory (``device-key.pem``, mode 0600) — the
software stand-in for a key in the phone's secure element, attested with the reference
client's software attestation (development only). ``state.json`` keeps the device id and the
signature counter, which goes up with every login.

Everything that carries personal data goes through the VAU channel into the enclave
(:mod:`healthid.wallet.vau_channel`, issue #6): the eGK certificate at enrolment, the
person's own data (:meth:`WalletClient.me`), the consent screen with the claim values
(:meth:`WalletClient.consent_claims`) and the history (:meth:`WalletClient.history`). The
channel is opened only to an enclave whose attestation verifies under ``enclave_policy``;
the simulated enclave is accepted with ``development=True`` alone. The plain wallet API
carries the rest (challenges, device binding, login, devices, consent by claim name).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from healthid.keys import es256
from healthid.protocol import device_auth
from healthid.protocol.attestation import make_software_attestation
from healthid.protocol.tee import TeePolicy
from healthid.wallet.vau_channel import ChannelError, VauChannel

KEY_FILE = "device-key.pem"
STATE_FILE = "state.json"
SOFTWARE_FORMAT = "healthid-software"
DEFAULT_APP_ID = "de.healthid.wallet.dev"
EID_POLLS = 10  # getResult attempts after the eID client finished
APP_VERSION = "1.0.0"  # what an app reports at the plain claims call (/auth?app_version)


class WalletClientError(Exception):
    """The IdP refused a wallet request; carries the HTTP status and the error body."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.error = str(body.get("error", "error"))
        self.description = str(body.get("error_description", ""))
        super().__init__(f"{status} {self.error}: {self.description}")


class HttpResponse(Protocol):
    status_code: int

    def json(self) -> Any: ...


class Card(Protocol):
    """An eGK as the phone sees it after PACE and PIN: its certificate, and signing."""

    certificate_der: bytes

    def sign(self, challenge: bytes) -> bytes: ...


def b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, kw_only=True)
class Login:
    """A device login. ``session``: what the host sees of it (the bearer of the plain wallet
    API and of the channel's outer requests); ``token``: the session token itself, which a
    login through the channel gets inside it only (the host cannot derive it from the
    bearer), and which the enclave asks for before it shows the person's data."""

    session: str
    acr: str
    amr: list[str]
    device_id: str
    token: str = field(default="", repr=False)


@dataclass(frozen=True, kw_only=True)
class Me:
    """The person's own display data, from their sealed master data (through the channel)."""

    given_name: str
    family_name: str
    kvnr: str
    birth_date: str


@dataclass(frozen=True, kw_only=True)
class SharedClaim:
    claim: str
    value: str | None  # None: the registry holds no value for this claim


@dataclass(frozen=True, kw_only=True)
class ConsentScreen:
    """What a relying party asks for, with this person's values (through the channel)."""

    client_id: str
    essential: tuple[SharedClaim, ...]
    optional: tuple[SharedClaim, ...]

    @property
    def claims(self) -> tuple[SharedClaim, ...]:
        return self.essential + self.optional


@dataclass(frozen=True, kw_only=True)
class HistoryItem:
    kind: str
    at: int
    device_id: str | None = None
    detail: str | None = None


class WalletClient:
    def __init__(
        self,
        idp_url: str,
        directory: Path,
        *,
        http: httpx.Client,
        app_id: str = DEFAULT_APP_ID,
        enclave_policy: TeePolicy | None = None,
        development: bool = False,
    ) -> None:
        """``enclave_policy``: the enclave builds this app trusts (the VAU channel is opened
        only to an enclave whose attestation verifies under it). ``development``: accept the
        simulated enclave (no protection; development servers only)."""
        self._idp = idp_url.rstrip("/")
        self._base = self._idp + "/wallet/v1"
        self._dir = directory
        self._http = http
        self._app_id = app_id
        self._policy = enclave_policy
        self._development = development
        self._channel: VauChannel | None = None

    # -- local state ------------------------------------------------------------------------
    def _key(self) -> ec.EllipticCurvePrivateKey:
        path = self._dir / KEY_FILE
        if path.exists():
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{path} is not an EC private key")
            return key
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        return key

    def state(self) -> dict[str, Any]:
        path = self._dir / STATE_FILE
        return dict(json.loads(path.read_text())) if path.exists() else {}

    def _save(self, state: dict[str, Any]) -> None:
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self._dir / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self._dir / STATE_FILE)

    def _public_key(self) -> bytes:
        return (
            self._key()
            .public_key()
            .public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def _sign(self, data: bytes) -> bytes:
        return es256.sign(self._key(), data)

    # -- HTTP -------------------------------------------------------------------------------
    @staticmethod
    def _check(response: Any, expected: tuple[int, ...] = (200, 201, 204)) -> Any:
        if response.status_code not in expected:
            try:
                body = response.json()
            except ValueError:
                body = {}
            raise WalletClientError(response.status_code, body if isinstance(body, dict) else {})
        return response.json() if response.status_code != 204 else None

    def _post(self, path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
        return self._check(self._http.post(self._base + path, json=body, headers=headers))

    # -- the VAU channel ----------------------------------------------------------------------
    def channel(self) -> VauChannel:
        """The open channel, or a new one (attestation verified first)."""
        if self._channel is None:
            self._channel = VauChannel.open(
                self._http, self._idp, policy=self._policy, development=self._development
            )
        return self._channel

    def _vau(
        self,
        op: str,
        *,
        session: str = "",
        args: dict[str, str] | None = None,
        inner: dict[str, Any] | None = None,
    ) -> Any:
        """One operation through the channel; a channel the enclave no longer knows (expired,
        another instance) is replaced once."""
        for attempt in (1, 2):
            try:
                return self.channel().call(op, session=session, args=args, inner=inner)
            except ChannelError as exc:
                if exc.channel_gone and attempt == 1:
                    self._channel = None
                    continue
                raise WalletClientError(
                    exc.status, {"error": exc.error, "error_description": exc.description}
                ) from None
        raise AssertionError("unreachable")

    # -- enrolment --------------------------------------------------------------------------
    def start_enrolment(self) -> tuple[str, bytes]:
        started = self._post("/enrolments", {})
        return started["enrolment_id"], b64d(started["challenge"])

    def enroll_with_egk(self, card: Card, *, replace_devices: bool = False) -> dict[str, Any]:
        """Prove identity with the eGK (the card signs our challenge), then bind this device.

        The card's certificate names the person: it goes through the VAU channel.
        """
        enrolment_id, challenge = self.start_enrolment()
        self._vau(
            "egk_prove",
            args={"enrolment_id": enrolment_id},
            inner={"certificate": card.certificate_der, "signature": card.sign(challenge)},
        )
        return self.bind_device(enrolment_id, challenge, replace_devices=replace_devices)

    def enroll_with_eid(
        self,
        complete: Callable[[str], None],
        *,
        replace_devices: bool = False,
        polls: int = EID_POLLS,
    ) -> dict[str, Any]:
        """Prove identity with the eID card, then bind this device.

        ``complete(psk_id)`` plays the AusweisApp: it runs the card session with the
        eID-Server for the TC Token's PSK (in development: the stand-in's completion hook).
        """
        enrolment_id, challenge = self.start_enrolment()
        started = self._post(f"/enrolments/{enrolment_id}/eid", {})
        complete(started["tc_token"]["psk_id"])
        for _ in range(polls):
            response = self._http.post(
                self._base + f"/enrolments/{enrolment_id}/eid/result", json={}
            )
            result = self._check(response, (200, 202))
            if result["status"] == "proven":
                return self.bind_device(enrolment_id, challenge, replace_devices=replace_devices)
        raise WalletClientError(408, {"error": "timeout", "error_description": "eID still pending"})

    def bind_device(
        self, enrolment_id: str, challenge: bytes, *, replace_devices: bool = False
    ) -> dict[str, Any]:
        key = self._key()
        attestation = make_software_attestation(key, challenge, self._app_id)
        bound: dict[str, Any] = self._post(
            f"/enrolments/{enrolment_id}/device",
            {
                "public_key": b64e(self._public_key()),
                "attestation_format": SOFTWARE_FORMAT,
                "attestation": b64e(attestation),
                "replace_devices": replace_devices,
            },
        )
        self._save({"device_id": bound["device_id"], "counter": 0, "key_class": bound["key_class"]})
        return bound

    # -- login and device management --------------------------------------------------------
    def login(self, *, through_channel: bool = True) -> Login:
        """Log in with the device key: through the VAU channel (the default; the session
        token comes back encrypted, the host learns only its bearer) or through the plain
        wallet API (``through_channel=False``: enough for device management and consent,
        not for the person's data)."""
        for attempt in (1, 2):
            challenge_id, device_id, counter, signature = self._sign_challenge()
            if not through_channel:
                result = self._post(
                    "/auth/assertions",
                    {
                        "challenge_id": challenge_id,
                        "device_id": device_id,
                        "counter": counter,
                        "signature": b64e(signature),
                    },
                )
                return Login(
                    session=result["session"],
                    acr=result["acr"],
                    amr=result["amr"],
                    device_id=device_id,
                )
            try:
                result = self.channel().call(
                    "login",
                    args={
                        "challenge_id": challenge_id,
                        "device_id": device_id,
                        "counter": str(counter),
                    },
                    inner={"signature": signature},
                )
            except ChannelError as exc:
                if exc.channel_gone and attempt == 1:  # a new channel, and a new challenge
                    self._channel = None
                    continue
                raise WalletClientError(
                    exc.status, {"error": exc.error, "error_description": exc.description}
                ) from None
            token = str(result["session"])
            return Login(
                session=device_auth.session_bearer(token),
                token=token,
                acr=str(result["acr"]),
                amr=list(result["amr"]),
                device_id=device_id,
            )
        raise AssertionError("unreachable")

    def _sign_challenge(self) -> tuple[str, str, int, bytes]:
        """A fresh challenge signed with the device key and the next counter."""
        state = self.state()
        if "device_id" not in state:
            raise ValueError("this wallet has no bound device: enrol first")
        device_id = state["device_id"]
        issued = self._post("/auth/challenges", {"device_id": device_id})
        counter = int(state["counter"]) + 1
        signed = device_auth.message(b64d(issued["challenge"]), device_id, counter)
        state["counter"] = counter  # spent even if the server refuses: never reuse a counter
        self._save(state)
        return issued["challenge_id"], device_id, counter, self._sign(signed)

    # -- personal data, through the channel --------------------------------------------------
    def me(self, session: str | None = None) -> Me:
        """The person's own data (logs in with the device key unless given the token of a
        session opened through the channel)."""
        result = self._vau("me", session=session or self.login().token)
        return Me(
            given_name=str(result["given_name"]),
            family_name=str(result["family_name"]),
            kvnr=str(result["kvnr"]),
            birth_date=str(result["birth_date"]),
        )

    def history(self, session: str | None = None) -> list[HistoryItem]:
        """The person's history (newest first), decrypted in the enclave for them only."""
        result = self._vau("history", session=session or self.login().token)
        return [
            HistoryItem(
                kind=str(e["kind"]),
                at=int(e["at"]),
                device_id=e.get("device_id"),
                detail=e.get("detail"),
            )
            for e in result["events"]
        ]

    def consent_claims(self, url: str, session: str | None = None) -> ConsentScreen:
        """The consent screen of an authorization URL: each requested claim with its value
        for this person."""
        client_id, request_uri, _ = _authorization(url)
        result = self._vau(
            "consent_claims",
            session=session or self.login().token,
            args={"client_id": client_id, "request_uri": request_uri},
        )

        def shared(items: Any) -> tuple[SharedClaim, ...]:
            return tuple(
                SharedClaim(
                    claim=str(i["claim"]), value=None if i["value"] is None else str(i["value"])
                )
                for i in items
            )

        return ConsentScreen(
            client_id=str(result["client_id"]),
            essential=shared(result["essential"]),
            optional=shared(result["optional"]),
        )

    def authorize(
        self,
        url: str,
        *,
        claims: Collection[str] | None = None,
        show: Callable[[ConsentScreen], None] | None = None,
    ) -> str:
        """Play the insurer app for an authorization URL of the IdP (``/auth?client_id&
        request_uri``): log in with the device key, fetch the consent screen (claims and
        their values, through the channel; ``show`` gets it), consent (to ``claims``, or to
        every requested claim), and return the redirect to the RP."""
        client_id, request_uri, base = _authorization(url)
        login = self.login()
        session = login.session
        screen = self.consent_claims(url, login.token)
        if show is not None:
            show(screen)
        chosen = [c.claim for c in screen.claims] if claims is None else list(claims)
        answer = self._check(
            self._http.post(
                f"{base}/wallet/v1/authorizations",
                json={
                    "client_id": client_id,
                    "request_uri": request_uri,
                    "selected_claims": chosen,
                },
                headers={"Authorization": f"Bearer {session}"},
            )
        )
        return str(answer["redirect"])

    def devices(self) -> list[dict[str, Any]]:
        session = self.login().session
        response = self._http.get(
            self._base + "/devices", headers={"Authorization": f"Bearer {session}"}
        )
        return list(self._check(response)["devices"])

    def revoke(self, device_id: str) -> None:
        session = self.login().session
        response = self._http.delete(
            self._base + f"/devices/{device_id}", headers={"Authorization": f"Bearer {session}"}
        )
        self._check(response)


def _authorization(url: str) -> tuple[str, str, str]:
    """client_id, request_uri and the IdP's base URL of an authorization URL."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    client_id = (query.get("client_id") or [""])[0]
    request_uri = (query.get("request_uri") or [""])[0]
    if not client_id or not request_uri:
        raise ValueError("not an authorization URL: client_id and request_uri are missing")
    return client_id, request_uri, f"{parts.scheme}://{parts.netloc}"
