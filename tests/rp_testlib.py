"""What several test modules need of a relying party the federation vouches for: its resolved
registration, and a resolver that knows only it (the federation resolver has its own tests)."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from healthid.host.relying_parties import RelyingPartyError
from healthid.protocol.federation import ResolvedRelyingParty
from healthid.protocol.federation.trust_chain import RelyingPartyKeys
from healthid.protocol.jose import public_jwk

RP = "https://rp.example"
REDIRECT = "https://rp.example/callback"


def resolved_rp(
    *,
    tls_certificates: Sequence[x509.Certificate],
    encryption_key: ec.EllipticCurvePrivateKey,
    scopes: Sequence[str],
    id_token_versions: Sequence[str] = ("1.0.0", "2.0.0"),
    client_id: str = RP,
    redirect_uri: str = REDIRECT,
) -> ResolvedRelyingParty:
    """The registration the IdP would derive from a verified trust chain."""
    return ResolvedRelyingParty(
        client_id=client_id,
        expires_at=2**31,
        redirect_uris=(redirect_uri,),
        scopes=tuple(scopes),
        federation_jwks={"keys": []},
        jwks=None,
        signed_jwks_uri=None,
        keys=RelyingPartyKeys(
            tls_certificates=tuple(
                c.public_bytes(serialization.Encoding.DER) for c in tls_certificates
            ),
            encryption_jwk=public_jwk(encryption_key.public_key(), kid="puk_fd_enc", use="enc"),
        ),
        id_token_versions_supported=tuple(id_token_versions),
        metadata={},
    )


class StubResolver:
    """Resolves only its relying party; any other client_id is not vouched for."""

    def __init__(self, rp: object, client_id: str = RP) -> None:
        self.rp = rp
        self.client_id = client_id

    async def resolve(self, client_id: str) -> ResolvedRelyingParty:
        if client_id != self.client_id:
            raise RelyingPartyError("unknown relying party", reason="not_vouched")
        resolved: Callable[[], ResolvedRelyingParty] = self.rp.resolved  # type: ignore[attr-defined]
        return resolved()


SCOPES = "openid urn:telematik:versicherter urn:telematik:display_name urn:telematik:alter"


class FakeRp:
    """A relying party: its self-signed TLS certificate and its encryption key."""

    def __init__(self) -> None:
        self.tls_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rp.example")])
        now = datetime.now(UTC)
        self.tls_cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.tls_key.public_key())
            .serial_number(1)
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=1))
            .sign(self.tls_key, hashes.SHA256())
        )
        self.enc_key = ec.generate_private_key(ec.SECP256R1())

    def resolved(self) -> ResolvedRelyingParty:
        return resolved_rp(
            tls_certificates=[self.tls_cert], encryption_key=self.enc_key, scopes=SCOPES.split()
        )

    def cert_header(self) -> dict[str, str]:
        pem = self.tls_cert.public_bytes(serialization.Encoding.PEM).decode()
        return {"X-SSL-CERT": quote(pem)}


def token_form(code: str, verifier: str) -> dict[str, str]:
    """The token request of the relying party ``RP`` for ``code`` (PKCE ``verifier``)."""
    return {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": verifier,
        "client_id": RP,
        "redirect_uri": REDIRECT,
    }


def pkce() -> tuple[str, str]:
    """A PKCE verifier and its S256 challenge."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def par_form(
    challenge: str, *, state: str = "st-123", nonce: str = "n-456", **extra: str
) -> dict[str, str]:
    """The PAR of the relying party ``RP`` (``extra`` overrides or adds parameters)."""
    return {
        "client_id": RP,
        "state": state,
        "redirect_uri": REDIRECT,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "response_type": "code",
        "nonce": nonce,
        "scope": SCOPES,
        "acr_values": "gematik-ehealth-loa-substantial",
        **extra,
    }
