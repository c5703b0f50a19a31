"""``healthid wallet``: the reference wallet on the command line (it plays the insurer app)."""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from healthid.protocol.tee import TeeAttestationError, TeePolicy, TeePolicyError
from healthid.protocol.vau import VauError
from healthid.wallet.client import ConsentScreen, WalletClient, WalletClientError
from healthid.wallet.tee_verify import AttestationFetchError

DEFAULT_WALLET_DIR = Path(".healthid-wallet")
DEFAULT_IDP = "http://127.0.0.1:8080"
DEFAULT_STANDIN = "http://127.0.0.1:8090"
HTTP_TIMEOUT = 30.0


class FileCard:
    """A development eGK from a card file written by ``healthid egk-test-ca issue``."""

    def __init__(self, path: Path) -> None:
        doc = json.loads(path.read_text())
        self.certificate_der = base64.b64decode(doc["certificate"])
        key = serialization.load_pem_private_key(doc["private_key"].encode(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise click.BadParameter(f"{path} holds no EC card key")
        self._key = key

    def sign(self, challenge: bytes) -> bytes:
        from healthid.demo.egk_test_ca import TestCard

        return TestCard(certificate_der=self.certificate_der, private_key=self._key).sign(challenge)


def _client(ctx: click.Context) -> WalletClient:
    import httpx

    obj: dict[str, Any] = ctx.obj
    http = httpx.Client(timeout=HTTP_TIMEOUT, follow_redirects=False)
    ctx.call_on_close(http.close)
    return WalletClient(
        obj["idp"],
        obj["dir"],
        http=http,
        enclave_policy=obj["policy"],
        development=obj["dev"],
    )


def _load_policy(path: Path | None) -> TeePolicy | None:
    if path is None:
        return None
    try:
        return TeePolicy.from_json(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, TeePolicyError) as exc:
        raise click.BadParameter(str(exc), param_hint="--enclave-policy") from None


def _standin_completer(standin: str, identity: str) -> Callable[[str], None]:
    """Play the AusweisApp against the stand-in: complete the session with ``identity``."""
    import httpx

    def complete(psk_id: str) -> None:
        url = f"{standin.rstrip('/')}/standin/sessions/{psk_id}/complete"
        response = httpx.post(url, json={"identity": identity}, timeout=HTTP_TIMEOUT)
        if response.status_code != 200:
            raise WalletClientError(
                response.status_code,
                {"error": "eid_standin", "error_description": response.text[:200]},
            )

    return complete


def _fail(exc: Exception) -> None:
    click.echo(f"healthid wallet: refused: {exc}", err=True)
    sys.exit(1)


# what the channel may refuse before any operation: the enclave's attestation, its VAU keys
_CHANNEL_REFUSALS = (TeeAttestationError, AttestationFetchError, VauError)


@click.group()
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_WALLET_DIR,
    show_default=True,
    help="Where the device key lives.",
)
@click.option("--idp", default=DEFAULT_IDP, show_default=True, help="The IdP's base URL.")
@click.option(
    "--enclave-policy",
    "policy_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The enclave builds to trust (policy JSON, as for `healthid attest verify`): the "
    "VAU channel that carries personal data is opened only to an enclave it accepts.",
)
@click.option(
    "--dev",
    is_flag=True,
    help="Development: accept the simulated enclave (no protection) for the VAU channel.",
)
@click.pass_context
def wallet(
    ctx: click.Context, directory: Path, idp: str, policy_path: Path | None, dev: bool
) -> None:
    """The reference wallet: enrol this "phone", log in with its device key, manage devices.

    Personal data (the eGK certificate, your data, consent screens, your history) goes
    through the VAU channel into the attested enclave: give --enclave-policy, or --dev
    against a development server.
    """
    ctx.obj = {"dir": directory, "idp": idp, "policy": _load_policy(policy_path), "dev": dev}


@wallet.command("enroll")
@click.option(
    "--egk",
    "card",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A test eGK card file (healthid egk-test-ca issue).",
)
@click.option(
    "--eid-test-identity",
    "eid_identity",
    help="Prove identity with the eID stand-in's test identity (its KVNR).",
)
@click.option(
    "--eid-standin",
    "standin",
    default=DEFAULT_STANDIN,
    show_default=True,
    help="The eID stand-in's base URL (it plays the ID card and the AusweisApp).",
)
@click.option(
    "--replace-devices",
    is_flag=True,
    help="Recovery after a lost phone: revoke every other device of this person.",
)
@click.pass_context
def enroll(
    ctx: click.Context,
    card: Path | None,
    eid_identity: str | None,
    standin: str,
    replace_devices: bool,
) -> None:
    """Prove who you are (eID or eGK + PIN) and bind this wallet's device key."""
    if (card is None) == (eid_identity is None):
        raise click.UsageError(
            "choose one way to prove your identity: --egk or --eid-test-identity"
        )
    client = _client(ctx)
    try:
        if card is not None:
            bound = client.enroll_with_egk(FileCard(card), replace_devices=replace_devices)
        else:
            bound = client.enroll_with_eid(
                _standin_completer(standin, str(eid_identity)), replace_devices=replace_devices
            )
    except (WalletClientError, *_CHANNEL_REFUSALS) as exc:
        _fail(exc)
        return
    except ValueError as exc:  # no enclave policy and not --dev
        raise click.UsageError(str(exc)) from None
    click.echo(f"enrolled: device {bound['device_id']} ({bound['key_class']} key, {bound['acr']})")
    if bound["revoked_devices"]:
        click.echo(f"revoked {bound['revoked_devices']} earlier device(s)")


@wallet.command("login")
@click.pass_context
def login(ctx: click.Context) -> None:
    """Authenticate with the device key and print the level of assurance."""
    try:
        result = _client(ctx).login()
    except WalletClientError as exc:
        _fail(exc)
        return
    click.echo(f"logged in: acr {result.acr}, amr {' '.join(result.amr)}")


@wallet.command("devices")
@click.pass_context
def devices(ctx: click.Context) -> None:
    """List the devices bound to your identity."""
    try:
        listed = _client(ctx).devices()
    except WalletClientError as exc:
        _fail(exc)
        return
    for d in listed:
        state = "revoked" if d["revoked_at"] else "active"
        mark = " (this wallet)" if d["current"] else ""
        click.echo(f"{d['device_id']}  {d['key_class']:<14} {state}{mark}")


@wallet.command("revoke")
@click.argument("device_id")
@click.pass_context
def revoke(ctx: click.Context, device_id: str) -> None:
    """Revoke one of your devices: it can never log in again."""
    try:
        _client(ctx).revoke(device_id)
    except WalletClientError as exc:
        _fail(exc)
        return
    click.echo(f"revoked {device_id}")


@wallet.command("authorize")
@click.argument("url")
@click.option(
    "--claim",
    "claims",
    multiple=True,
    help="Consent to this claim only (repeatable); default: every requested claim.",
)
@click.pass_context
def authorize(ctx: click.Context, url: str, claims: tuple[str, ...]) -> None:
    """Log in at a relying party: URL is the IdP's authorization URL (client_id, request_uri).

    Prints the redirect back to the relying party, with the code.
    """
    try:
        location = _client(ctx).authorize(url, claims=list(claims) or None, show=_show_consent)
    except (WalletClientError, *_CHANNEL_REFUSALS) as exc:
        _fail(exc)
        return
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="URL") from None
    click.echo(location)


def _show_consent(screen: ConsentScreen) -> None:
    """The consent screen (on stderr: stdout is the redirect)."""
    click.echo(f"{screen.client_id} asks for:", err=True)
    for label, claims in (("essential", screen.essential), ("optional", screen.optional)):
        for claim in claims:
            click.echo(f"  [{label}] {claim.claim}: {claim.value}", err=True)


@wallet.command("me")
@click.pass_context
def me(ctx: click.Context) -> None:
    """Show your own data, as the enclave reads it from the registry (through the channel)."""
    try:
        data = _client(ctx).me()
    except (WalletClientError, *_CHANNEL_REFUSALS) as exc:
        _fail(exc)
        return
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"{data.given_name} {data.family_name}, born {data.birth_date}, KVNR {data.kvnr}")


@wallet.command("history")
@click.pass_context
def history(ctx: click.Context) -> None:
    """Show your history (enrolments, devices, logins), decrypted for you in the enclave."""
    try:
        events = _client(ctx).history()
    except (WalletClientError, *_CHANNEL_REFUSALS) as exc:
        _fail(exc)
        return
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    for event in events:
        when = datetime.fromtimestamp(event.at, UTC).isoformat(timespec="seconds")
        extra = " ".join(x for x in (event.device_id, event.detail) if x)
        click.echo(f"{when}  {event.kind:<15} {extra}".rstrip())
