"""The ``healthid`` command.

Exit status: 0 success; 1 the request was refused (e.g. an import with bad rows); 2 usage or
configuration error.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from healthid import __version__, attest_cli, audit_cli, dev_cli, enclave_cli
from healthid.settings import Settings, SettingsError, load_settings
from healthid.wallet import cli as wallet_cli

T = TypeVar("T")
PRINT_ERRORS = 200  # import errors printed before "... and N more"


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        click.echo(f"healthid: {exc}", err=True)
        sys.exit(2)


def _run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="healthid")
def main() -> None:
    """healthid: GesundheitsID identity provider and wallet backend.

    Settings come from HEALTHID_* environment variables and the TOML file named by
    HEALTHID_CONFIG; see README.md.
    """


# -- serve --------------------------------------------------------------------------------
@main.command()
@click.option("--host", help="Address to listen on (default: HEALTHID_LISTEN_HOST).")
@click.option("--port", type=int, help="Port (default: HEALTHID_LISTEN_PORT).")
@click.option(
    "--demo",
    is_flag=True,
    help="Development: import a demo registry of made-up people and mount the eID-Server "
    "stand-in beside the IdP (what `make run` does).",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Worker processes on one socket; more than one needs Redis (flow state is shared "
    "there, so consecutive requests of one flow may land on different workers).",
)
@click.option(
    "--log-format",
    type=click.Choice(["json", "text"]),
    help="Logs as one JSON object per line, or text (default: HEALTHID_LOG_FORMAT, else json "
    "in production and text in development). Each request logs one line (healthid.access); "
    "uvicorn's own access log is off.",
)
def serve(
    host: str | None, port: int | None, demo: bool, workers: int, log_format: str | None
) -> None:
    """Run the host (IdP, wallet API) with the configured stores and enclave."""
    import uvicorn

    from healthid.gc_tuning import tune_for_serving
    from healthid.host.http_protocol import HeadCoalescingHttpToolsProtocol
    from healthid.host.observability import clear_multiprocess_dir, logging_config
    from healthid.runtime import build_app, prepare_for_workers

    settings = _settings()
    if workers > 1 and (demo or not settings.redis_url):
        click.echo(
            "healthid: --workers > 1 needs HEALTHID_REDIS_URL (shared flow state) and "
            "cannot be combined with --demo",
            err=True,
        )
        sys.exit(2)
    host = host or settings.listen_host
    port = port or settings.listen_port
    settings = settings.model_copy(update={"listen_host": host, "listen_port": port})
    extra: list[Any] = []
    if demo:
        if not settings.development:
            click.echo("healthid: --demo is for development mode only", err=True)
            sys.exit(2)
        from healthid.demo.stack import (
            federation_mounts,
            standin_mount,
            with_local_federation,
            with_local_standin,
        )

        settings = with_local_federation(with_local_standin(settings))
        idp_jwks = _seed_demo(settings)
        extra.append(standin_mount(settings))
        extra.extend(federation_mounts(settings, idp_jwks))
    click.echo(
        f"healthid {__version__} ({settings.mode.value} mode, tee: {settings.tee.value}) "
        f"listening on http://{host}:{port}/  — status: http://{host}:{port}/status"
    )
    if settings.tee.value == "simulated":
        click.echo("WARNING: tee=simulated: no enclave protection. Development only.", err=True)
    click.echo(
        f"database: {_redact_url(settings.sql_url)}; ephemeral store: "
        f"{'redis' if settings.redis_url else 'in-memory'}; keys: {settings.key_backend.value}"
    )
    if demo:
        _print_demo_hints(host, port)
    log_format = log_format or settings.log_format or ("text" if settings.development else "json")
    log_config = logging_config(
        log_format == "json",
        bde_ik=settings.bde_ik,
        bde_dir=settings.bde_dir,
        bde_ci_id=settings.bde_ci_id,
    )
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": "info",
        "log_config": log_config,  # uvicorn applies it in every worker process
        "access_log": False,  # ours: healthid.access, with route templates and request ids
        "server_header": False,
        # The peer must stay the TLS terminator's address: X-SSL-CERT and X-Forwarded-For are
        # believed only from trusted proxies (the app reads them itself, see wallet_api).
        "proxy_headers": False,
        # httptools, writing a response's head with its body: one write per small response
        # (a class by module path: pickled into the worker processes by reference)
        "http": HeadCoalescingHttpToolsProtocol,
    }
    clear_multiprocess_dir()  # PROMETHEUS_MULTIPROC_DIR: /metrics sums every worker's counts
    if workers > 1:
        asyncio.run(prepare_for_workers(settings))
        click.echo(f"{workers} worker processes")
        uvicorn.run("healthid.runtime:worker_app", factory=True, workers=workers, **options)
        return
    app = build_app(settings, extra_routes=extra)
    tune_for_serving()
    uvicorn.run(app, **options)


def _seed_demo(settings: Settings) -> dict[str, Any]:
    """Import the demo registry once (the database holds it encrypted, like any registry),
    create the first signing keys, and return the IdP's federation JWKS for the master."""
    from healthid.demo.stack import demo_registry
    from healthid.host.registry_import import import_registry
    from healthid.runtime import open_runtime

    async def go() -> dict[str, Any]:
        rt = await open_runtime(settings)
        try:
            await rt.ensure_keys()
            published = await rt.key_ring("federation").published("federation")
            if await rt.policyholders.count() == 0:
                path = demo_registry(settings)
                result = await import_registry(
                    rt.enclave, rt.policyholders, path.read_bytes(), filename=path.name
                )
                click.echo(f"demo registry: imported {result.imported} made-up policyholders")
            return {"keys": [dict(r.public_jwk) for r in published]}
        finally:
            await rt.aclose()

    return _run(go())


def _print_demo_hints(host: str, port: int) -> None:
    from healthid.demo.stack import STANDIN_MOUNT, demo_people

    base = f"http://{host}:{port}"
    click.echo("\nTry the reference wallet (in another terminal):")
    for person in demo_people(2):
        click.echo(
            f"  .venv/bin/healthid wallet --dev --idp {base} --dir /tmp/wallet-{person['kvnr']} "
            f"enroll --eid-test-identity {person['kvnr']} --eid-standin {base}{STANDIN_MOUNT}"
        )
    click.echo(
        "  .venv/bin/healthid wallet --dev --idp ... --dir ... login | me | history | devices"
    )
    click.echo("  (--dev: accept this development server's simulated enclave)")
    click.echo(f"Log in at the demo relying party: open {base}/_dev/rp/ , or headless:")
    click.echo(
        f"  .venv/bin/healthid wallet --dev --idp {base} --dir /tmp/wallet-... authorize "
        f'"$(curl -s {base}/_dev/rp/login?format=url)"\n'
    )


def _redact_url(url: str) -> str:
    """Hide a password in a database URL before printing it."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url


# -- config ---------------------------------------------------------------------------------
@main.group()
def config() -> None:
    """Inspect the configuration."""


@config.command("check")
def config_check() -> None:
    """Validate the settings and print them (secrets hidden)."""
    settings = _settings()
    shown: dict[str, Any] = json.loads(settings.model_dump_json())
    if shown.get("database_url"):
        shown["database_url"] = _redact_url(shown["database_url"])
    click.echo(json.dumps(shown, indent=2))
    if settings.development:
        for problem in settings.production_problems():
            click.echo(f"note (would refuse in production): {problem}", err=True)


# -- db -----------------------------------------------------------------------------------
@main.group()
def db() -> None:
    """Database schema (Alembic migrations)."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply the schema migrations."""
    from healthid.store.sql.engine import upgrade_url

    settings = _settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade_url(settings.sql_url, revision)
    click.echo(f"database at {_redact_url(settings.sql_url)} is at revision {revision}")


@db.command("current")
def db_current() -> None:
    """Print the schema revision of the database."""
    from healthid.store.sql.engine import create_engine, current_revision

    settings = _settings()

    async def go() -> str | None:
        engine = create_engine(settings.sql_url)
        try:
            return await current_revision(engine)
        finally:
            await engine.dispose()

    click.echo(_run(go()) or "(empty database)")


# -- registry -------------------------------------------------------------------------------
@main.group()
def registry() -> None:
    """The insurer's policyholder registry (stored encrypted by the enclave)."""


def _with_runtime(fn: Callable[[Any], Awaitable[T]]) -> T:
    from healthid.runtime import StartupError, open_runtime

    settings = _settings()

    async def go() -> T:
        try:
            rt = await open_runtime(settings)
        except StartupError as exc:
            click.echo(f"healthid: {exc}", err=True)
            sys.exit(2)
        try:
            return await fn(rt)
        finally:
            await rt.aclose()

    return _run(go())


@registry.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "json", "gematik"]),
    help="File format (default: by extension; gematik's test identities are recognised).",
)
@click.option(
    "--test-identities",
    is_flag=True,
    help="Accept KVNRs with a wrong check digit, as in gematik's published test identities "
    "(development mode only).",
)
def registry_import(file: Path, fmt: str | None, test_identities: bool) -> None:
    """Import policyholders from FILE (CSV or JSON), all or nothing.

    CSV columns: kvnr, ik, given_name, family_name, birth_date, sex, insured_type, valid_from
    (required); birth_name, street, house_number, postal_code, city, country, valid_until,
    email (optional). The plaintext goes to the enclave; the database receives ciphertext and
    blind indexes only.
    """
    from healthid.host.registry_import import import_registry

    data = file.read_bytes()

    async def go(rt: Any) -> int:
        with click.progressbar(length=1, label="importing", file=sys.stderr, show_pos=True) as bar:

            def progress(n: int) -> None:
                bar.update(n)

            def sized(total: int) -> None:
                bar.length = total

            result = await import_registry(
                rt.enclave,
                rt.policyholders,
                data,
                filename=file.name,
                fmt=fmt,
                accept_test_kvnr=test_identities,
                progress=progress,
                on_prepared=sized,
            )
        if result.ok:
            click.echo(f"imported {result.imported} policyholders ({result.format}) from {file}")
            return 0
        click.echo(
            f"{file}: nothing imported, {len(result.errors) + result.errors_truncated} error(s):",
            err=True,
        )
        for err in result.errors[:PRINT_ERRORS]:
            click.echo(f"  {err}", err=True)
        more = len(result.errors) - PRINT_ERRORS + result.errors_truncated
        if more > 0:
            click.echo(f"  ... and {more} more", err=True)
        return 1

    try:
        status = _with_runtime(go)
    except Exception as exc:  # enclave refusals carry safe messages
        from healthid.enclave.api import EnclaveError

        if isinstance(exc, EnclaveError):
            click.echo(f"healthid: {exc}", err=True)
            sys.exit(2)
        raise
    sys.exit(status)


@registry.command("generate")
@click.option("--count", type=click.IntRange(1, 10_000_000), required=True)
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Default: stdout."
)
def registry_generate(count: int, fmt: str, seed: int, output: Path | None) -> None:
    """Write a synthetic registry of COUNT made-up policyholders (valid KVNRs and IKs)."""
    from healthid.demo.synthetic import write_registry

    if output is None:
        write_registry(sys.stdout, count, fmt=fmt, seed=seed)
        return
    with output.open("w", encoding="utf-8", newline="") as fh:
        write_registry(fh, count, fmt=fmt, seed=seed)
    click.echo(f"wrote {count} synthetic policyholders to {output}", err=True)


@registry.command("count")
def registry_count() -> None:
    """Print how many policyholders the registry holds."""

    async def go(rt: Any) -> int:
        return int(await rt.policyholders.count())

    click.echo(_with_runtime(go))


@registry.command("verify")
def registry_verify() -> None:
    """Let the enclave decrypt every record and report integrity failures (pseudonyms only)."""

    async def go(rt: Any) -> tuple[int, list[str]]:
        total, failed = 0, []
        async for batch in rt.policyholders.iter_all():
            total += len(batch)
            failed += await rt.enclave.verify_policyholders(batch)
        return total, failed

    total, failed = _with_runtime(go)
    for pseudonym in failed:
        click.echo(f"integrity failure: policyholder {pseudonym}", err=True)
    click.echo(f"checked {total} policyholders, {len(failed)} failed")
    sys.exit(1 if failed else 0)


# -- keys -----------------------------------------------------------------------------------
@main.group()
def keys() -> None:
    """Signing keys (ES256) and their rotation."""


def _key_state(record: Any, now: int) -> str:
    if record.is_expired(now):
        return "expired"
    if record.is_active(now):
        return "active"
    return "next" if record.activate_at > now else "retired"


def _when(ts: int | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@keys.command("list")
def keys_list() -> None:
    """List the signing keys of every purpose with their schedule."""
    from healthid.runtime import KEY_PURPOSES

    async def go(rt: Any) -> list[tuple[str, ...]]:
        now = int(time.time())
        rows: list[tuple[str, ...]] = []
        for purpose in KEY_PURPOSES:
            for r in await rt.key_ring(purpose).published(purpose):
                rows.append(
                    (
                        purpose,
                        r.kid,
                        r.backend,
                        _key_state(r, now),
                        _when(r.activate_at),
                        _when(r.retire_at),
                        _when(r.expires_at),
                    )
                )
        return rows

    rows = _with_runtime(go)
    click.echo(
        "purpose     kid                                          backend state    "
        "activates            retires              expires"
    )
    for row in rows:
        click.echo("{:<11} {:<44} {:<7} {:<8} {:<20} {:<20} {}".format(*row))
    if not rows:
        click.echo("(no keys yet: `healthid keys rotate PURPOSE` creates the first)")


@keys.command("rotate")
@click.argument("purpose", type=click.Choice(["federation", "token"]))
def keys_rotate(purpose: str) -> None:
    """Create the next key of PURPOSE: published now, signing after the publish lead."""
    from healthid.keys.base import KeyStoreError

    async def go(rt: Any) -> Any:
        return await rt.key_ring(purpose).rotate(purpose)

    try:
        record = _with_runtime(go)
    except KeyStoreError as exc:
        click.echo(f"healthid: {exc}", err=True)
        sys.exit(1)
    click.echo(f"{purpose} key {record.kid} published; signs from {_when(record.activate_at)}")


@keys.command("prune")
def keys_prune() -> None:
    """Destroy keys whose signatures have all expired."""
    from healthid.runtime import KEY_PURPOSES

    async def go(rt: Any) -> list[str]:
        pruned: list[str] = []
        for purpose in KEY_PURPOSES:
            pruned += await rt.key_ring(purpose).prune(purpose)
        return pruned

    pruned = _with_runtime(go)
    click.echo(f"pruned {len(pruned)} expired key(s)" + "".join(f"\n  {k}" for k in pruned))


@keys.command("jwks")
@click.argument("purpose", type=click.Choice(["federation", "token"]))
def keys_jwks(purpose: str) -> None:
    """Print the JWK Set published for PURPOSE now (public keys only)."""

    async def go(rt: Any) -> Any:
        return await rt.key_ring(purpose).jwks(purpose)

    click.echo(json.dumps(_with_runtime(go), indent=2))


# -- enclave --------------------------------------------------------------------------------
@main.group()
def enclave() -> None:
    """The trusted execution environment."""


@enclave.command("status")
def enclave_status() -> None:
    """Print the enclave's status (tee kind, root key id)."""

    async def go(rt: Any) -> Any:
        return await rt.enclave.status()

    status = _with_runtime(go)
    click.echo(
        json.dumps(
            {
                "tee": status.tee,
                "root_key_id": status.root_key_id,
                "version": status.version,
                "warning": status.warning,
            },
            indent=2,
        )
    )


main.add_command(wallet_cli.wallet)
main.add_command(attest_cli.attest)
main.add_command(audit_cli.audit)
enclave.add_command(enclave_cli.serve)
for _command in dev_cli.COMMANDS:
    main.add_command(_command)

if __name__ == "__main__":  # pragma: no cover
    main()
