"""DESIGN.md rules of the house, enforced on the source tree.

- ``healthid.protocol`` imports nothing from the other healthid packages (pure core).
- Nothing outside the enclave imports enclave internals, only ``healthid.enclave.api``; the
  composition root ``healthid.runtime`` is the one place that builds the in-process enclave.
- The enclave process (``healthid.enclave_cli``, assembled by ``healthid.enclave_runtime``)
  loads no host code: not ``healthid.host``, ``healthid.store`` or ``healthid.runtime``, and
  none of the host-only libraries (ASGI, SQL, Redis, migrations, metrics). Under Gramine-SGX
  every module it loads is a measured, trusted file (issue #5, deploy/gramine).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).parents[1] / "src"
PACKAGE = SRC / "healthid"
ENCLAVE_API = "healthid.enclave.api"
COMPOSITION_ROOTS = {"healthid.runtime"}
# Development tooling that plays the citizen's side (the eID stand-in's test identities are
# made from a registry file): never part of the host, never enabled in production.
CITIZEN_SIDE_DEV_TOOLS = {"healthid.demo.eid_identities"}
# The enclave process's entry module and its composition root, and what they must not load.
ENCLAVE_ENTRY = "healthid.enclave_cli"
ENCLAVE_ROOTS = {ENCLAVE_ENTRY, "healthid.enclave_runtime"}
HOST_ONLY = (
    "healthid.host",
    "healthid.store",
    "healthid.runtime",
    "starlette",
    "sqlalchemy",
    "asyncpg",
    "redis",
    "hiredis",
    "alembic",
    "mako",
    "greenlet",
    "prometheus_client",
    "uvicorn",
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, is_package: bool) -> set[str]:
    """Absolute names of every module imported by ``source`` (relative imports resolved)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def violations(module: str, imported: set[str]) -> list[str]:
    out = []
    healthid = {m for m in imported if m == "healthid" or m.startswith("healthid.")}
    if module.startswith("healthid.protocol"):
        out += [m for m in healthid if not m.startswith("healthid.protocol")]
    if module in ENCLAVE_ROOTS:
        out += [m for m in imported if _host_only(m)]
    trusted = COMPOSITION_ROOTS | CITIZEN_SIDE_DEV_TOOLS
    if not module.startswith("healthid.enclave") and module not in trusted:
        out += [
            m
            for m in healthid
            if m.startswith("healthid.enclave.") and not m.startswith(ENCLAVE_API)
        ]
    return sorted(out)


def _host_only(module: str) -> bool:
    return any(module == h or module.startswith(h + ".") for h in HOST_ONLY)


def all_modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", all_modules(), ids=lambda p: module_name(p))
def test_module_respects_the_trust_boundary(path: Path) -> None:
    module = module_name(path)
    imported = imports_of(path.read_text(), module, path.name == "__init__.py")
    assert violations(module, imported) == []


def test_checker_catches_a_host_importing_the_vault() -> None:
    src = "from healthid.enclave.vault import Vault\nfrom ..enclave import service\n"
    found = violations("healthid.host.app", imports_of(src, "healthid.host.app", False))
    assert "healthid.enclave.vault" in found and "healthid.enclave.service" in found


def test_checker_catches_protocol_importing_the_store() -> None:
    src = "import healthid.store.sql\nfrom . import identifiers\n"
    found = violations("healthid.protocol.x", imports_of(src, "healthid.protocol.x", False))
    assert found == ["healthid.store.sql"]


def test_every_layer_of_the_design_exists() -> None:
    for part in ("protocol", "enclave", "host", "store", "keys", "eid", "wallet", "demo"):
        assert (PACKAGE / part / "__init__.py").is_file(), part


def test_checker_catches_the_enclave_root_importing_the_host() -> None:
    src = "from healthid.runtime import build_enclave\nimport sqlalchemy.ext.asyncio\n"
    module = "healthid.enclave_runtime"
    found = violations(module, imports_of(src, module, False))
    assert found == ["healthid.runtime", "healthid.runtime.build_enclave", "sqlalchemy.ext.asyncio"]


# What a fresh interpreter holds after importing one module: the static rule above sees only
# direct imports, this sees every module loaded on the way (healthid.keys or healthid.eid
# importing a store, a library importing its optional extras ...).
_LOADED = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
json.dump(sorted(sys.modules), sys.stdout)
"""


def host_modules_loaded_by(module: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", _LOADED, module],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return [m for m in json.loads(result.stdout) if _host_only(m)]


def test_the_enclave_process_loads_no_host_code() -> None:
    """issue #5: everything the enclave process loads is trusted code in its Gramine
    manifest; the host's web app, stores and their libraries must not be among it."""
    assert host_modules_loaded_by(ENCLAVE_ENTRY) == []


def test_the_loaded_module_check_sees_the_host() -> None:
    """The check above can fail: the host's composition root loads what it looks for."""
    loaded = host_modules_loaded_by("healthid.runtime")
    for name in ("healthid.host.app", "healthid.store.sql", "starlette", "sqlalchemy", "redis"):
        assert name in loaded
