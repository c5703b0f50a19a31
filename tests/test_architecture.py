"""DESIGN.md rules of the house, enforced on the source tree.

- ``healthid.protocol`` imports nothing from the other healthid packages (pure core).
- Nothing outside the enclave imports enclave internals, only ``healthid.enclave.api``; the
  composition root ``healthid.runtime`` is the one place that builds the in-process enclave.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).parents[1] / "src"
PACKAGE = SRC / "healthid"
ENCLAVE_API = "healthid.enclave.api"
COMPOSITION_ROOTS = {"healthid.runtime"}
# Development tooling that plays the citizen's side (the eID stand-in's test identities are
# made from a registry file): never part of the host, never enabled in production.
CITIZEN_SIDE_DEV_TOOLS = {"healthid.demo.eid_identities"}


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
    trusted = COMPOSITION_ROOTS | CITIZEN_SIDE_DEV_TOOLS
    if not module.startswith("healthid.enclave") and module not in trusted:
        out += [
            m
            for m in healthid
            if m.startswith("healthid.enclave.") and not m.startswith(ENCLAVE_API)
        ]
    return sorted(out)


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
