"""HTML pages of the DEMO relying party. Every interpolated value goes through :func:`esc`."""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from typing import Any, Final

# No script, no external resource; inline style only (CSP below).
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "Referrer-Policy": "no-referrer",  # the callback URL carries the code
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}
_STYLE: Final = (
    "body{font-family:system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem}"
    ".button{display:inline-block;background:#0b5cad;color:#fff;padding:.8rem 1.4rem;"
    "border-radius:.4rem;text-decoration:none;font-weight:600}"
    ".warn{background:#fff4ce;border:1px solid #e0b000;padding:.6rem 1rem}"
    ".error{background:#fde7e9;border:1px solid #c50f1f;padding:.6rem 1rem}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3rem .6rem;"
    "text-align:left;vertical-align:top}code{word-break:break-all}"
)
BANNER: Final = (
    "DEMO relying party for development only (TEST-ONLY keys). It is not a product and "
    "must never face real users or real data."
)


def esc(value: object) -> str:
    """HTML-escape anything (quotes too); non-strings are shown as JSON."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return html.escape(text, quote=True)


def page(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="de"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{_STYLE}</style></head><body>"
        f'<p class="warn">{esc(BANNER)}</p><h1>{esc(title)}</h1>{body}</body></html>'
    )


def index_page(*, client_id: str, idp: str, trust: str) -> str:
    return page(
        "healthid Demo-Fachdienst",
        f"<p>Client-ID (entity identifier): <code>{esc(client_id)}</code><br>"
        f"IdP: <code>{esc(idp)}</code><br>Vertrauen in den IdP: {esc(trust)}</p>"
        '<p><a class="button" href="/login">Mit GesundheitsID anmelden</a></p>'
        "<p>Headless (CLI wallet): <code>curl -s '"
        f"{esc(client_id.rstrip('/'))}/login?format=url'</code>, then "
        "<code>healthid wallet authorize URL</code>, then open the printed redirect.</p>",
    )


def claims_page(
    claims: Mapping[str, Any], *, trust: str, requested_acr: str, kvnr_claim: str
) -> str:
    rows = "".join(
        f"<tr><th>{esc(name)}</th><td><code>{esc(value)}</code></td></tr>"
        for name, value in sorted(claims.items())
    )
    acr = claims.get("acr")
    acr_note = (
        ""
        if acr == requested_acr
        else f'<p class="warn">acr {esc(acr)} is not the requested {esc(requested_acr)}.</p>'
    )
    kvnr = claims.get(kvnr_claim)
    heading = f"<p>KVNR: <strong>{esc(kvnr)}</strong></p>" if isinstance(kvnr, str) else ""
    return page(
        "Angemeldet",
        f"{heading}{acr_note}<p>Trust in the IdP: {esc(trust)}. The ID token was decrypted, "
        "its signature verified with the IdP's signed JWKS, and iss, aud, nonce and exp were "
        f"checked.</p><table>{rows}</table>"
        '<p><a class="button" href="/">Erneut anmelden</a></p>',
    )


def error_page(message: str) -> str:
    return page(
        "Anmeldung fehlgeschlagen",
        f'<p class="error">{esc(message)}</p><p><a href="/">Zur Startseite</a></p>',
    )
