"""deploy/gramine: the Gramine-SGX manifest of the enclave process (issue #5 item 4).

The central check: ``sgx.trusted_files`` of the rendered manifest covers every file the
enclave process loads. Under Gramine nothing else can be opened, so a missing entry is an
enclave that does not start (or a code path that fails in production only).

What "every file the enclave process loads" covers here (deploy/gramine/trusted_files.py):

- the ``import`` profile: ``import healthid.enclave_cli`` in a fresh interpreter, plus the
  modules the enclave imports on some paths only (``healthid.keys.pkcs11``, the production
  key backend; ``healthid.enclave.attestation``), plus an eID-Server HTTP client that
  connects to a closed port (httpx imports its transport lazily);
- the ``session`` profile: a real ``python -m healthid.enclave_cli --socket S`` process in
  development mode with a temporary data directory, driven over the RPC by
  ``RemoteEnclave``: status, a registry import, a sealed history event, policyholder
  verification, an ID token, attestation and an eID start (refused: nothing listens), then
  SIGTERM;

and in both, for every Python process: ``sys.modules`` with their files, the file-backed
mappings of ``/proc/self/maps`` (extension modules, shared libraries) and every path opened
from Python (audit hooks). Not covered: code paths neither profile runs (an eGK proof, a
successful eID result, the HSM vendor's PKCS#11 library, ``/dev/attestation`` under SGX),
files opened by C code that are not mapped (OpenSSL's configuration: not trusted, so it stays
unread), and the difference between this machine's Python and the image's (a shared libpython
counts as the interpreter; see trusted_files.py).

The development venv stands in for the image's ``site_packages``: every file outside the
standard library maps to ``loader.env.PYTHONPATH``; glibc maps to Gramine's runtime
directory. The test also proves the check can fail (entries removed from the rendered
manifest are reported), and pins the production settings of the manifest.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import sysconfig
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from healthid.enclave_runtime import enclave_dir, root_key_sealer
from healthid.protocol.tee.policy import TeePolicy
from healthid.settings import Settings, TeeKind

GRAMINE_DIR = Path(__file__).resolve().parents[2] / "deploy" / "gramine"
TEMPLATE = GRAMINE_DIR / "healthid-enclave.manifest.template"
SITE_PACKAGES = "/opt/healthid/site-packages"
RUNTIMEDIR = "/usr/lib/x86_64-linux-gnu/gramine/runtime/glibc"
# The variables the template may use (Gramine's and the Makefile's -D), with this machine's
# interpreter standing in for the image's.
RENDER_VALUES = {
    "gramine.libos": "/usr/lib/x86_64-linux-gnu/gramine/libsysdb.so",
    "gramine.runtimedir()": RUNTIMEDIR,
    "python.stdlib": sysconfig.get_path("stdlib"),
    "python.ext_suffix": str(sysconfig.get_config_var("EXT_SUFFIX")),
    "entrypoint": os.path.realpath(sys.executable),
    "arch_libdir": f"/lib/{sysconfig.get_config_var('MULTIARCH')}",
    "site_packages": SITE_PACKAGES,
    "config_dir": "/opt/healthid/etc",
    "pkcs11_module": "/usr/lib/softhsm/libsofthsm2.so",
}
DATA_DIR = "/var/lib/healthid-enclave"
# Settings the manifest fixes in loader.env (outranking enclave.toml), and the one variable
# the host may pass.
FIXED_SETTINGS = {
    "mode",
    "tee",
    "data_dir",
    "key_backend",
    "pkcs11_module",
    "enclave_workers",
    "pkcs11_pin",
}
PASSTHROUGH = {"HEALTHID_PKCS11_PIN", "HEALTHID_KEY_RELEASE_FROM"}


def _load(filename: str) -> ModuleType:
    name = f"healthid_deploy_gramine_{filename}"  # deploy/gramine is not a package
    spec = importlib.util.spec_from_file_location(name, GRAMINE_DIR / f"{filename}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


tf = _load("trusted_files")
policy_tool = _load("policy_from_sigstruct")


@pytest.fixture(scope="module")
def traced() -> list[Any]:
    """Both profiles, once for this module (a few seconds)."""
    files: list[Any] = tf.classify(tf.merge([tf.trace_import(), tf.trace_session()]))
    return files


@pytest.fixture
def manifest() -> dict[str, Any]:
    return tomllib.loads(tf.render_template(TEMPLATE.read_text(encoding="utf-8"), RENDER_VALUES))


def _without(manifest: dict[str, Any], uri: str) -> dict[str, Any]:
    trusted = manifest["sgx"]["trusted_files"]
    assert uri in trusted, uri
    manifest["sgx"]["trusted_files"] = [e for e in trusted if e != uri]
    return manifest


def _walk(obj: object, prefix: str = "") -> Iterator[str]:
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            yield f"{prefix}{key}"
            yield from _walk(value, f"{prefix}{key}.")


def _modules(files: list[Any]) -> set[str]:
    return {m for f in files for m in f.modules}


# -- the trusted files ----------------------------------------------------------------------
def test_the_template_uses_only_the_documented_variables() -> None:
    text = TEMPLATE.read_text(encoding="utf-8")
    assert tf.template_expressions(text) == set(RENDER_VALUES)
    assert "{%" not in text and "{#" not in text


def test_the_trace_sees_the_enclave_process_at_work(traced: list[Any]) -> None:
    """Guards the main check against passing vacuously: the trace holds the RPC server, the
    crypto extension, the system TLS library, and state the session sealed."""
    modules = _modules(traced)
    assert {"healthid.enclave_cli", "healthid.enclave.rpc.server", "healthid.keys.pkcs11"} <= (
        modules
    )
    mapped = [f.path for f in traced if "mapped" in f.how]
    assert any(p.endswith("_rust.abi3.so") for p in mapped)  # cryptography
    assert any("/libssl.so" in p for p in mapped)  # _ssl
    sealed = [f.relpath for f in traced if f.group == "sealed-state"]
    assert any(p.startswith("enclave/root-key") for p in sealed)


def test_the_manifest_trusts_every_file_the_enclave_process_loads(
    traced: list[Any], manifest: dict[str, Any]
) -> None:
    problems = tf.check(traced, manifest)
    assert not problems, "\n".join(str(p) for p in problems)


@pytest.mark.parametrize(
    ("removed", "reported"),
    [
        (f"file:{SITE_PACKAGES}/cryptography/", "/cryptography/hazmat/bindings/_rust.abi3.so"),
        (f"file:{SITE_PACKAGES}/healthid/enclave/", "/healthid/enclave/rpc/server.py"),
        (f"file:{SITE_PACKAGES}/typing_extensions.py", "/typing_extensions.py"),
        (f"file:{SITE_PACKAGES}/dcap_qvl-0.7.0.dist-info/", "/dcap_qvl-0.7.0.dist-info/METADATA"),
        (f"file:{RENDER_VALUES['python.stdlib']}/", "/lib-dynload/_ssl"),
        (f"file:{RENDER_VALUES['arch_libdir']}/", "/libssl.so"),
        (f"file:{RUNTIMEDIR}/", f"{RUNTIMEDIR}/libc.so.6"),
    ],
)
def test_the_check_reports_a_file_the_manifest_does_not_trust(
    traced: list[Any], manifest: dict[str, Any], removed: str, reported: str
) -> None:
    problems = tf.check(traced, _without(manifest, removed))
    assert problems
    assert all(p.reason == "not a trusted file" for p in problems)
    assert any(reported in p.image_path for p in problems), [str(p) for p in problems]


def test_the_check_reports_sealed_state_outside_an_encrypted_mount(
    traced: list[Any], manifest: dict[str, Any]
) -> None:
    for mount in manifest["fs"]["mounts"]:
        if mount["path"] == DATA_DIR:
            mount["type"] = "chroot"  # plain host files
            del mount["key_name"]
    problems = tf.check(traced, manifest)
    assert problems
    assert {p.reason for p in problems} == {"not encrypted"}
    assert any(p.image_path.startswith(f"{DATA_DIR}/enclave/root-key") for p in problems)


def test_the_manifest_refuses_to_trust_development_only_code(
    traced: list[Any], manifest: dict[str, Any]
) -> None:
    """healthid.demo holds the TEST eGK and Komp-PKI CAs; the session imports it (development
    mode), the production enclave must not be able to."""
    assert any(f.group == "development-only" for f in traced)
    manifest["sgx"]["trusted_files"].append(f"file:{SITE_PACKAGES}/healthid/demo/")
    problems = tf.check(traced, manifest)
    assert problems
    assert {p.reason for p in problems} == {"development-only code is trusted"}


def test_every_site_packages_entry_is_still_needed(
    traced: list[Any], manifest: dict[str, Any]
) -> None:
    """No stale entry widens the enclave's code base (a distribution or healthid package the
    enclave stopped importing fails here: remove its entry)."""
    layout = tf.Layout.from_manifest(manifest)
    needed = [
        tf.source_of(layout.image_path(f))
        for f in traced
        if f.group in ("site-packages", "healthid")
    ]
    entries = [e for e in tf.trusted_entries(manifest) if e.path.startswith(SITE_PACKAGES + "/")]
    unused = [e.uri for e in entries if not any(tf.covered_by(p, [e]) for p in needed)]
    assert not unused


HOST_ONLY = ("healthid.host", "healthid.store", "healthid.runtime", "starlette", "sqlalchemy")
HOST_ONLY += ("asyncpg", "redis", "hiredis", "alembic", "mako", "greenlet", "prometheus_client")


def test_the_enclave_process_loads_no_host_code(traced: list[Any]) -> None:
    """issue #5: enclave_cli builds the enclave through healthid.enclave_runtime and loads
    none of the host (its web app, stores and their libraries)."""
    loaded = {m for f in traced for m in f.modules}
    assert not [m for m in loaded if any(m == h or m.startswith(h + ".") for h in HOST_ONLY)]


@pytest.mark.parametrize(
    "host_file",
    [
        "healthid/runtime.py",  # the host's composition root
        "healthid/host/app.py",
        "healthid/store/sql/engine.py",
        "starlette/applications.py",
        "sqlalchemy/__init__.py",
        "redis/__init__.py",
        "alembic/__init__.py",
    ],
)
def test_the_manifest_trusts_no_host_code(manifest: dict[str, Any], host_file: str) -> None:
    assert tf.covered_by(f"{SITE_PACKAGES}/{host_file}", tf.trusted_entries(manifest)) is None


def test_requirements_pin_exactly_the_distributions_the_enclave_imports(
    traced: list[Any],
) -> None:
    lines = (GRAMINE_DIR / "requirements.enclave.txt").read_text(encoding="utf-8").splitlines()
    pinned = {line.split("==")[0] for line in lines if line and not line.startswith("#")}
    imported = {f.distribution for f in traced if f.group == "site-packages"}
    assert pinned == imported


# -- production settings --------------------------------------------------------------------
def test_the_manifest_is_a_production_dcap_enclave(manifest: dict[str, Any]) -> None:
    sgx = manifest["sgx"]
    assert sgx["debug"] is False
    assert sgx["remote_attestation"] == "dcap"
    assert sgx.get("enable_stats", False) is False
    assert "profile" not in sgx and sgx.get("vtune_profile", False) is False
    assert sgx.get("file_check_policy", "strict") == "strict"
    assert "allowed_files" not in sgx  # nothing unprotected
    assert manifest["loader"]["log_level"] == "error"
    assert 1 <= sgx["isvprodid"] <= 0xFFFF and 1 <= sgx["isvsvn"] <= 0xFFFF


def test_the_sealed_state_mount_is_encrypted_with_an_sgx_sealing_key(
    manifest: dict[str, Any],
) -> None:
    env = manifest["loader"]["env"]
    assert env["HEALTHID_DATA_DIR"] == DATA_DIR
    (mount,) = [m for m in manifest["fs"]["mounts"] if m["path"] == DATA_DIR]
    assert mount["type"] == "encrypted"
    assert mount["key_name"] == "_sgx_mrenclave"  # as healthid.enclave.sealing expects
    assert mount["uri"] == f"file:{DATA_DIR}"
    assert "insecure__keys" not in manifest["fs"]  # no key written into the manifest
    # Where the enclave keeps its state with tee=sgx lies on that mount.
    settings = Settings(tee=TeeKind.SGX, data_dir=Path(DATA_DIR))
    for path in (root_key_sealer(settings).path, enclave_dir(settings)):
        assert str(path).startswith(DATA_DIR + "/")


def test_the_host_controls_no_argument_and_only_the_hsm_pin(manifest: dict[str, Any]) -> None:
    loader = manifest["loader"]
    assert not [k for k in _walk(manifest) if "insecure__" in k]
    assert "argv_src_file" not in loader and "env_src_file" not in loader
    argv = loader["argv"]
    assert argv[0] == manifest["libos"]["entrypoint"]
    assert argv[1:5] == [*tf.ENCLAVE_PYTHON_FLAGS, "-m", tf.ENCLAVE_MODULE]
    env = loader["env"]
    passthrough = {k for k, v in env.items() if isinstance(v, dict) and v.get("passthrough")}
    assert passthrough == PASSTHROUGH
    assert env["HEALTHID_MODE"] == "production"
    assert env["HEALTHID_TEE"] == "sgx"
    assert env["HEALTHID_KEY_BACKEND"] == "pkcs11"
    assert env["HEALTHID_ENCLAVE_WORKERS"] == "1"
    assert manifest["sys"]["disallow_subprocesses"] is True
    # The traced processes ran with the manifest's interpreter environment.
    assert tf.ENCLAVE_PYTHON_ENV.items() <= env.items()


def test_the_enclave_settings_file_holds_only_site_settings() -> None:
    data = tomllib.loads((GRAMINE_DIR / "enclave.example.toml").read_text(encoding="utf-8"))
    assert set(data) <= set(Settings.model_fields)
    assert not set(data) & FIXED_SETTINGS
    Settings(**data)  # the values have the right types


# -- the published policy -------------------------------------------------------------------
SIGSTRUCT = {  # gramine-sgx-sigstruct-view --output-format json (Gramine's documented example)
    "mr_signer": "0dedbe47afb6955e5f6109637c1fbd9cc4b4e073e1396da8ce2091075e5b0a3b",
    "mr_enclave": "81a675e9a408818b430be4b259f3e11e6f8cacdb4c971c3114ee79fe53076893",
    "isv_prod_id": 1,
    "isv_svn": 3,
    "debug_enclave": False,
}


def test_the_example_policy_is_a_tee_policy_with_marked_placeholders(
    manifest: dict[str, Any],
) -> None:
    text = (GRAMINE_DIR / "policy.example.json").read_text(encoding="utf-8")
    policy = TeePolicy.from_json(text)
    assert policy.mrenclaves == {bytes(32)}  # placeholder: all zero
    assert policy.mrsigners == {b"\xff" * 32}  # placeholder: all ones
    assert policy.isv_prod_id == manifest["sgx"]["isvprodid"]
    assert policy.min_isv_svn <= manifest["sgx"]["isvsvn"]
    assert policy.allow_debug is False


def test_the_policy_from_a_signed_build_pins_that_build() -> None:
    policy = TeePolicy.from_dict(policy_tool.policy_from_sigstruct(SIGSTRUCT))
    assert policy.mrenclaves == {bytes.fromhex(SIGSTRUCT["mr_enclave"])}
    assert policy.mrsigners == {bytes.fromhex(SIGSTRUCT["mr_signer"])}
    assert (policy.isv_prod_id, policy.min_isv_svn) == (1, 3)
    assert policy.allow_debug is False


def test_a_signer_policy_accepts_later_builds_and_a_merge_keeps_the_old_build() -> None:
    signer = TeePolicy.from_dict(policy_tool.policy_from_sigstruct(SIGSTRUCT, signer_only=True))
    assert not signer.mrenclaves and signer.isv_prod_id == 1
    old = policy_tool.policy_from_sigstruct(SIGSTRUCT | {"mr_enclave": "ab" * 32, "isv_svn": 2})
    merged = TeePolicy.from_dict(policy_tool.policy_from_sigstruct(SIGSTRUCT, previous=old))
    assert merged.mrenclaves == {bytes.fromhex("ab" * 32), bytes.fromhex(SIGSTRUCT["mr_enclave"])}
    assert merged.min_isv_svn == 2


def test_the_policy_tool_refuses_a_debug_enclave() -> None:
    with pytest.raises(policy_tool.PolicyError, match="debug"):
        policy_tool.policy_from_sigstruct(SIGSTRUCT | {"debug_enclave": True})
    with pytest.raises(policy_tool.PolicyError, match="debug"):
        policy_tool.policy_from_sigstruct(
            {k: v for k, v in SIGSTRUCT.items() if k != "debug_enclave"}
        )


def test_the_policy_tool_writes_json_the_verifier_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "sigstruct.json"
    path.write_text(json.dumps(SIGSTRUCT), encoding="utf-8")
    assert policy_tool.main([str(path)]) == 0
    assert TeePolicy.from_json(capsys.readouterr().out).isv_prod_id == 1


# -- the renderer ---------------------------------------------------------------------------
def test_the_renderer_refuses_jinja_statements_and_unknown_variables() -> None:
    assert tf.render_template("a = '{{ x }}'", {"x": "1"}) == "a = '1'"
    with pytest.raises(tf.TemplateError, match="statements"):
        tf.render_template("{% if x %}{% endif %}", {"x": "1"})
    with pytest.raises(tf.TemplateError, match="no value"):
        tf.render_template("{{ y }}", {"x": "1"})
