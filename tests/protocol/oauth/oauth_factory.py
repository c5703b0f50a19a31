"""Shared PAR test data: gsi-testsuite values (tc_properties-external-Idp.yaml, PAR features)."""

from __future__ import annotations

from collections.abc import Callable

from healthid.protocol.oauth.client import RegisteredClient

CLIENT_ID = "https://idpfadi.dev.gematik.solutions"
REDIRECT_URI = "https://redirect.testsuite.gsi"
SCOPE = "urn:telematik:display_name urn:telematik:versicherter openid"
# gematik-sectoral-idp.md §2: the testsuite's PKCE pair, verified by computation
CODE_VERIFIER = "drfxigjvseyirdjfg03q489rtjoiesrdjgfv3ws4e8rujgf0q3gjwe4809rdjt89fq3j48r9jw3894efrj"
CODE_CHALLENGE = "Ca3Ve8jSsBQOBFVqQvLs1E-dGV1BXg2FTvrd-Tg19Vg"
CERT = b"0\x82\x01\x00 rp tls certificate (DER stand-in)"
ROTATION_CERT = b"0\x82\x01\x00 rp rotation certificate (DER stand-in)"
NOW = 1_750_000_000

Form = dict[str, list[str]]


def par_form(**overrides: str | None) -> Form:
    """The testsuite's good PAR; ``name=None`` removes a parameter."""
    base: dict[str, str | None] = {
        "client_id": CLIENT_ID,
        "state": "yyystateyyy",
        "redirect_uri": REDIRECT_URI,
        "code_challenge": CODE_CHALLENGE,
        "code_challenge_method": "S256",
        "response_type": "code",
        "nonce": "vy7rM801AQw1or22GhrZ",
        "scope": SCOPE,
        "acr_values": "gematik-ehealth-loa-high",
    }
    base.update(overrides)
    return {k: [v] for k, v in base.items() if v is not None}


def make_client(**overrides: object) -> RegisteredClient:
    fields: dict[str, object] = {
        "client_id": CLIENT_ID,
        "redirect_uris": (REDIRECT_URI, "https://redirect.testsuite.gsi/other"),
        "scopes": frozenset(SCOPE.split()),
        "tls_client_certs": (CERT, ROTATION_CERT),
        "id_token_versions_supported": ("1.0.0", "2.0.0"),
    }
    fields.update(overrides)
    return RegisteredClient(**fields)  # type: ignore[arg-type]


def counter_rng() -> Callable[[int], bytes]:
    """A deterministic RandomBytes for tests: 0x00.., 0x01.., ..."""
    state = {"n": 0}

    def rng(n: int) -> bytes:
        state["n"] += 1
        return bytes([state["n"] % 256]) * n

    return rng
