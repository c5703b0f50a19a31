"""The reference wallet: a Python SDK that plays the insurer's app against the wallet API.

Its device key is a P-256 key in a wallet directory (``device-key.pem``, mode 0600) — the
software stand-in for a key in the phone's secure element, attested with the reference
client's software attestation (development only). ``state.json`` keeps the device id and the
signature counter, which goes up with every login.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlencode, urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from healthid.keys import es256
from healthid.protocol import device_auth
from healthid.protocol.attestation import make_software_attestation

KEY_FILE = "device-key.pem"
STATE_FILE = "state.json"
SOFTWARE_FORMAT = "healthid-software"
DEFAULT_APP_ID = "de.healthid.wallet.dev"
EID_POLLS = 10  # getResult attempts after the eID client finished
APP_VERSION = "1.0.0"  # what the app reports when it fetches the claims to consent to


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


class HttpClient(Protocol):
    """The subset of httpx.Client (or Starlette's TestClient) the wallet uses."""

    def post(self, url: str, *, json: Any = None, headers: Any = None) -> Any: ...

    def get(self, url: str, *, headers: Any = None) -> Any: ...

    def delete(self, url: str, *, headers: Any = None) -> Any: ...


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
    session: str
    acr: str
    amr: list[str]
    device_id: str


class WalletClient:
    def __init__(
        self,
        idp_url: str,
        directory: Path,
        *,
        http: HttpClient,
        app_id: str = DEFAULT_APP_ID,
    ) -> None:
        self._base = idp_url.rstrip("/") + "/wallet/v1"
        self._dir = directory
        self._http = http
        self._app_id = app_id

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

    # -- enrolment --------------------------------------------------------------------------
    def start_enrolment(self) -> tuple[str, bytes]:
        started = self._post("/enrolments", {})
        return started["enrolment_id"], b64d(started["challenge"])

    def enroll_with_egk(self, card: Card, *, replace_devices: bool = False) -> dict[str, Any]:
        """Prove identity with the eGK (the card signs our challenge), then bind this device."""
        enrolment_id, challenge = self.start_enrolment()
        self._post(
            f"/enrolments/{enrolment_id}/egk",
            {"certificate": b64e(card.certificate_der), "signature": b64e(card.sign(challenge))},
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
    def login(self) -> Login:
        state = self.state()
        if "device_id" not in state:
            raise ValueError("this wallet has no bound device: enrol first")
        device_id = state["device_id"]
        issued = self._post("/auth/challenges", {"device_id": device_id})
        counter = int(state["counter"]) + 1
        signed = device_auth.message(b64d(issued["challenge"]), device_id, counter)
        state["counter"] = counter  # spent even if the server refuses: never reuse a counter
        self._save(state)
        result = self._post(
            "/auth/assertions",
            {
                "challenge_id": issued["challenge_id"],
                "device_id": device_id,
                "counter": counter,
                "signature": b64e(self._sign(signed)),
            },
        )
        return Login(
            session=result["session"], acr=result["acr"], amr=result["amr"], device_id=device_id
        )

    def authorize(self, url: str, *, claims: Collection[str] | None = None) -> str:
        """Play the insurer app for an authorization URL of the IdP (``/auth?client_id&
        request_uri``): fetch the claims to consent to, log in with the device key, consent
        (to ``claims``, or to every requested claim), and return the redirect to the RP."""
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        client_id = (query.get("client_id") or [""])[0]
        request_uri = (query.get("request_uri") or [""])[0]
        if not client_id or not request_uri:
            raise ValueError("not an authorization URL: client_id and request_uri are missing")
        base = f"{parts.scheme}://{parts.netloc}"
        params = {"client_id": client_id, "request_uri": request_uri, "app_version": APP_VERSION}
        asked = self._check(self._http.get(f"{base}{parts.path}?{urlencode(params)}"))
        requested = list(asked.get("requested_essential_claims", [])) + list(
            asked.get("requested_optional_claims", [])
        )
        chosen = requested if claims is None else list(claims)
        session = self.login().session
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
