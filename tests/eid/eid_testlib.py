"""Helpers of the eID tests: test identities, a fake clock, recording transports, raw SOAP."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import httpx
from starlette.applications import Starlette

from healthid.eid.client import EidClientConfig
from healthid.eid.model import (
    EidType,
    FreetextPlace,
    NoPlaceInfo,
    PersonalData,
    StructuredPlace,
)
from healthid.eid.standin import StandinIdentity, create_standin_app
from healthid.eid.transport import TransportConfig

ENDPOINT = "http://standin.test/eID"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
EID = "http://bsi.bund.de/eID/"
DSS = "urn:oasis:names:tc:dss:1.0:core:schema"
SESSION_ID = "1234567890abcdef1234567890abcdef"
RESTRICTED_ID = "01A4FB509CEBC6595151A4FB5F9C75C6FE01A4FB59CB655A4FB5F9C75C6FEE"

KOELN = StructuredPlace(street="HEIDESTRASSE 17", city="KÖLN", country="D", zip_code="51147")

ERIKA = PersonalData(
    document_type="ID",
    issuing_state="D",
    given_names="ERIKA",
    family_names="MUSTERMANN",
    birth_name="GABLER",
    date_of_birth="19640812",
    place_of_residence=KOELN,
    restricted_id=RESTRICTED_ID,
)

IDENTITIES: Mapping[str, StandinIdentity] = {
    "erika": StandinIdentity(personal_data=ERIKA, eid_type=EidType.CARD_CERTIFIED),
    "partial": StandinIdentity(
        personal_data=PersonalData(
            given_names="ANTON",
            family_names="PARTIELL",
            birth_name="ALTNAME",
            date_of_birth="1964  00",
            place_of_residence=FreetextPlace(text="AM MARKT 1, 99999 MUSTERDORF"),
            restricted_id="AA" * 32,
        ),
        eid_type=EidType.CARD_CERTIFIED,
    ),
    "year-month": StandinIdentity(
        personal_data=PersonalData(
            given_names="MONA",
            family_names="MONAT",
            date_of_birth="198203  ",
            place_of_residence=NoPlaceInfo(text="keine Hauptwohnung in Deutschland"),
            restricted_id="BB" * 32,
        ),
        eid_type=EidType.SE_CERTIFIED,
    ),
    "endorsed": StandinIdentity(
        personal_data=PersonalData(
            given_names="ENNO",
            family_names="ENDORSED",
            birth_name="ENDORSED",
            date_of_birth="19850615",
            place_of_residence=KOELN,
            restricted_id="CC" * 32,
        ),
        eid_type=EidType.SE_ENDORSED,
    ),
}


@dataclass
class FakeClock:
    now: float = 1_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class RecordingSleep:
    delays: list[float] = field(default_factory=list)

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


class RecordingTransport(httpx.AsyncBaseTransport):
    """Keeps every request (body read) before handing it to ``inner``."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.requests.append(request)
        return await self.inner.handle_async_request(request)


def client_config(**overrides: object) -> EidClientConfig:
    values: dict[str, object] = {
        "endpoint": ENDPOINT,
        "transport": TransportConfig(allow_plain_http=True),
        "poll_attempts": 3,
        "poll_delay_seconds": 0.25,
    }
    values.update(overrides)
    return EidClientConfig(**values)  # type: ignore[arg-type]


def envelope(body: str, *, soap_ns: str = SOAP_ENV, eid_ns: str = EID) -> bytes:
    """A raw SOAP 1.1 envelope around ``body`` (prefixes eid, dss)."""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>'
        f'<soapenv:Envelope xmlns:soapenv="{soap_ns}" xmlns:eid="{eid_ns}" xmlns:dss="{DSS}">'
        f"<soapenv:Header/><soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>"
    ).encode()


def get_result_request(session_id: str, counter: int | str) -> bytes:
    return envelope(
        f"<eid:getResultRequest><eid:Session><eid:ID>{session_id}</eid:ID></eid:Session>"
        f"<eid:RequestCounter>{counter}</eid:RequestCounter></eid:getResultRequest>"
    )


def use_id_request(
    operations: str = "<eid:RestrictedID>REQUIRED</eid:RestrictedID>", extra: str = ""
) -> bytes:
    return envelope(
        f"<eid:useIDRequest><eid:UseOperations>{operations}</eid:UseOperations>{extra}"
        "</eid:useIDRequest>"
    )


def mock_transport(*answers: bytes | httpx.Response) -> tuple[httpx.MockTransport, list[bytes]]:
    """A transport answering the given bodies (HTTP 200) or responses in turn; keeps requests."""
    sent: list[bytes] = []
    queue = list(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.content)
        answer = queue.pop(0)
        if isinstance(answer, httpx.Response):
            return answer
        return httpx.Response(200, content=answer, headers={"Content-Type": "text/xml"})

    return httpx.MockTransport(handler), sent


@dataclass
class Standin:
    app: Starlette
    clock: FakeClock
    transport: RecordingTransport

    async def complete(self, psk_id: str, payload: object) -> httpx.Response:
        async with httpx.AsyncClient(transport=self.transport, base_url="http://standin.test") as h:
            return await h.post(f"/standin/sessions/{psk_id}/complete", json=payload)

    async def post_soap(self, body: bytes, action: str | None = None) -> httpx.Response:
        headers = {"Content-Type": "text/xml; charset=utf-8"}
        if action is not None:
            headers["SOAPAction"] = f'"http://bsi.bund.de/eID/{action}"'
        async with httpx.AsyncClient(transport=self.transport, base_url="http://standin.test") as h:
            return await h.post("/eID", content=body, headers=headers)


def make_standin(**options: object) -> Standin:
    clock = FakeClock()
    app = create_standin_app(IDENTITIES, clock=clock, **options)  # type: ignore[arg-type]
    return Standin(app=app, clock=clock, transport=RecordingTransport(httpx.ASGITransport(app=app)))
