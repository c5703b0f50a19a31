"""What the VAU channel's host tests share: a relying party for PAR, a recording ASGI
middleware (everything the host received and sent), and the search for personal data in
every encoding it could travel in."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from rp_testlib import RP
from rp_testlib import par_form as rp_par_form

MIN_FRAGMENT = 8  # base64/hex fragments shorter than this could occur by chance


def authorization_url(base: str, request_uri: str) -> str:
    return f"{base}/auth?client_id={quote(RP, safe='')}&request_uri={quote(request_uri, safe='')}"


# -- everything the host received and sent -----------------------------------------------------
@dataclass
class Exchange:
    method: str
    path: str
    request: bytes  # request line, headers and body
    response: bytes = b""  # status, headers and body
    status: int = 0

    @property
    def wire(self) -> bytes:
        return self.request + b"\n\n" + self.response


@dataclass
class Recorder:
    """An ASGI middleware that keeps every HTTP request and response, headers and bodies."""

    app: Any
    exchanges: list[Exchange] = field(default_factory=list)
    recording: bool = True

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not self.recording:
            await self.app(scope, receive, send)
            return
        head = [f"{scope['method']} {scope['path']}?".encode() + scope.get("query_string", b"")]
        head += [k + b": " + v for k, v in scope["headers"]]
        exchange = Exchange(method=scope["method"], path=scope["path"], request=b"\n".join(head))
        self.exchanges.append(exchange)

        async def recording_receive() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                exchange.request += b"\n" + message.get("body", b"")
            return message

        async def recording_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                exchange.status = message["status"]
                lines = [str(message["status"]).encode()]
                lines += [k + b": " + v for k, v in message.get("headers", [])]
                exchange.response += b"\n".join(lines)
            elif message["type"] == "http.response.body":
                exchange.response += b"\n" + message.get("body", b"")
            await send(message)

        await self.app(scope, recording_receive, recording_send)

    @property
    def bytes_seen(self) -> int:
        return sum(len(e.wire) for e in self.exchanges)


# -- personal data in any encoding ----------------------------------------------------------
def _b64_fragments(raw: bytes) -> list[bytes]:
    """The base64 characters fixed by ``raw`` alone, wherever it sits in a longer blob (three
    alignments), standard and URL-safe alphabets."""
    out: list[bytes] = []
    for offset in range(3):
        encoded = base64.b64encode(bytes(offset) + raw)
        start = -(-offset * 8 // 6)  # ceil
        end = (offset + len(raw)) * 8 // 6
        fragment = encoded[start:end]
        if len(fragment) >= MIN_FRAGMENT:
            out += [fragment, fragment.replace(b"+", b"-").replace(b"/", b"_")]
    return out


def encodings(value: str) -> list[bytes]:
    """How ``value`` could appear on the wire: text (also JSON-escaped, percent-encoded, case
    folded), UTF-16, hex and base64 of its UTF-8."""
    raw = value.encode("utf-8")
    forms = [
        raw,
        raw.lower(),
        json.dumps(value)[1:-1].encode(),
        quote(value).encode(),
        quote(value, safe="").lower().encode(),
        value.encode("utf-16-le"),
        value.encode("utf-16-be"),
    ]
    if len(raw.hex()) >= MIN_FRAGMENT:
        forms += [raw.hex().encode(), raw.hex().upper().encode()]
    forms += _b64_fragments(raw)
    return list(dict.fromkeys(forms))


def personal_values(row: dict[str, str]) -> dict[str, str]:
    """The items to look for: names, KVNR and the birth date in the usual spellings."""
    year, month, day = row["birth_date"].split("-")
    return {
        "given name": row["given_name"],
        "family name": row["family_name"],
        "display name": f"{row['given_name']} {row['family_name']}",
        "KVNR": row["kvnr"],
        "birth date": row["birth_date"],
        "birth date (German)": f"{day}.{month}.{year}",
        "birth date (compact)": f"{year}{month}{day}",
    }


@dataclass(frozen=True)
class Hit:
    item: str
    where: str
    form: bytes


def search(exchanges: Iterable[Exchange], values: dict[str, str]) -> list[Hit]:
    hits = []
    for exchange in exchanges:
        wire = exchange.wire
        folded = wire.lower()
        for item, value in values.items():
            for form in encodings(value):
                if form in wire or (form == form.lower() and form in folded):
                    hits.append(
                        Hit(item=item, where=f"{exchange.method} {exchange.path}", form=form)
                    )
                    break
    return hits


def par_form(challenge: str) -> dict[str, str]:
    return rp_par_form(challenge, state="st-1", nonce="n-1")
