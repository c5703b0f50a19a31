"""``healthid attest``: check a healthid enclave's attestation from the command line.

``healthid attest verify --url URL | --file doc.json --policy policy.json [--collateral file]
[--now ISO] [--nonce B64URL] [--dev]`` fetches (with a fresh random nonce) or reads an
attestation document and verifies it with :func:`healthid.protocol.tee.verify_attestation_document`
(../shared/spec/vau-and-tee.md §4.4-4.5).

Exit status: 0 the enclave is attested; 1 the document is refused (or could not be fetched);
2 usage or configuration error (bad policy, collateral, time).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

import click
import httpx

from healthid.keys.jwk import thumbprint
from healthid.protocol.tee import (
    SIMULATED_WARNING,
    Collateral,
    TeeAttestationError,
    TeePolicy,
    TeePolicyError,
    VerifiedAttestation,
    b64url_decode_strict,
    parse_attestation_document,
    verify_attestation_document,
)
from healthid.wallet.tee_verify import AttestationFetchError, verify_enclave

EXIT_REFUSED = 1
EXIT_USAGE = 2
HTTP_TIMEOUT_SECONDS = 30.0


def _fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    click.echo(f"healthid attest: {message}", err=True)
    sys.exit(code)


def _refused(exc: Exception) -> NoReturn:
    reason = getattr(exc, "reason", "fetch_failed")
    click.echo(f"REFUSED ({reason}): {exc}", err=True)
    sys.exit(EXIT_REFUSED)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        _fail(f"cannot read the {what} {path}: {exc.strerror}")


def _load_policy(path: Path) -> TeePolicy:
    try:
        return TeePolicy.from_json(_read(path, "policy").decode("utf-8", "replace"))
    except TeePolicyError as exc:
        _fail(f"policy {path}: {exc}")


def _load_collateral(path: Path | None) -> Collateral | None:
    if path is None:
        return None
    try:
        return Collateral.from_json(_read(path, "collateral").decode("utf-8", "replace"))
    except TeeAttestationError as exc:
        _fail(f"collateral {path}: {exc}")


def _parse_now(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        _fail(f"--now {text!r} is not an ISO 8601 time")
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _parse_nonce(text: str) -> bytes:
    try:
        return b64url_decode_strict(text)
    except ValueError:
        _fail("--nonce is not base64url")


def _http_client() -> httpx.Client:
    """The HTTP client for --url (a seam for tests)."""
    return httpx.Client(timeout=HTTP_TIMEOUT_SECONDS, follow_redirects=False)


def _print_verdict(result: VerifiedAttestation) -> None:
    claims = result.claims
    if result.quote is None:
        click.echo("VERIFIED (SIMULATED): the document is consistent, but NOTHING is attested")
        click.echo(f"  WARNING: {SIMULATED_WARNING}")
    else:
        body = result.quote.body
        advisories = ", ".join(result.quote.advisory_ids) or "none"
        click.echo("VERIFIED: a genuine SGX enclave accepted by the policy")
        click.echo(f"  MRENCLAVE:  {body.mr_enclave.hex()}")
        click.echo(f"  MRSIGNER:   {body.mr_signer.hex()}")
        click.echo(f"  ISVPRODID:  {body.isv_prod_id}   ISVSVN: {body.isv_svn}")
        click.echo(f"  TCB status: {result.quote.tcb_status} (advisories: {advisories})")
    click.echo(f"  tee:        {claims.tee.value}")
    issued = datetime.fromtimestamp(claims.iat, UTC).isoformat()
    click.echo(f"  issued at:  {issued}")
    for key in claims.keys:
        use = key.jwk.get("use", "sig")
        click.echo(f"  key {key.role}: EC P-256 ({use}), thumbprint {thumbprint(key.jwk)}")


def _verify_file(
    path: Path,
    *,
    policy: TeePolicy,
    collateral: Collateral | None,
    now: datetime,
    nonce: bytes | None,
    dev: bool,
) -> VerifiedAttestation:
    document = parse_attestation_document(_read(path, "document"))
    if nonce is None:
        click.echo(
            "healthid attest: no --nonce: the document's own nonce is used, "
            "so its freshness is NOT checked",
            err=True,
        )
        nonce = document.claims.nonce
    return verify_attestation_document(
        document, nonce=nonce, policy=policy, collateral=collateral, now=now, allow_simulated=dev
    )


@click.group("attest")
def attest() -> None:
    """Verify the attestation of a healthid enclave (SGX DCAP quote or, in development,
    simulated evidence)."""


@attest.command("verify")
@click.option("--url", help="Base URL of the healthid host: fetches URL/attestation?nonce=...")
@click.option(
    "--file",
    "file_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="An attestation document saved earlier (JSON).",
)
@click.option(
    "--policy",
    "policy_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The policy JSON: allowed MRENCLAVE/MRSIGNER, ISVPRODID, minimum ISVSVN, TCB statuses.",
)
@click.option(
    "--collateral",
    "collateral_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Intel collateral (dcap-qvl QuoteCollateralV3 JSON); default: stapled to the document.",
)
@click.option("--now", "now_text", help="Verify at this ISO 8601 time (default: now).")
@click.option(
    "--nonce",
    "nonce_text",
    help="The base64url nonce the document must answer (default: a fresh one with --url; "
    "with --file, the document's own, which proves no freshness).",
)
@click.option(
    "--dev", is_flag=True, help="Development: accept simulated evidence (no hardware protection)."
)
def verify(
    url: str | None,
    file_path: Path | None,
    policy_path: Path,
    collateral_path: Path | None,
    now_text: str | None,
    nonce_text: str | None,
    dev: bool,
) -> None:
    """Verify an enclave attestation document; exit 0 only if it is accepted."""
    policy = _load_policy(policy_path)
    collateral = _load_collateral(collateral_path)
    now = _parse_now(now_text)
    nonce = None if nonce_text is None else _parse_nonce(nonce_text)
    if dev:
        click.echo("healthid attest: --dev: simulated evidence is accepted", err=True)
    try:
        if url is not None and file_path is None:
            with _http_client() as http:
                result = verify_enclave(
                    http,
                    url,
                    policy=policy,
                    collateral=collateral,
                    development=dev,
                    now=now,
                    nonce=nonce,
                )
        elif file_path is not None and url is None:
            result = _verify_file(
                file_path, policy=policy, collateral=collateral, now=now, nonce=nonce, dev=dev
            )
        else:
            _fail("give exactly one of --url and --file")
    except (TeeAttestationError, AttestationFetchError) as exc:
        _refused(exc)
    except ValueError as exc:  # a nonce of the wrong length, from --nonce
        _fail(str(exc))
    _print_verdict(result)
