#!/usr/bin/env python3
"""Every file the healthid enclave process loads, grouped for the Gramine manifest.

Gramine-SGX opens only the files listed in ``sgx.trusted_files`` (hash-checked, measured into
MRENCLAVE), so the manifest must cover every Python module, extension module and shared
library the enclave process loads, and every data file it reads. This tool finds them by
running the enclave in a child process with a recorder (a ``sitecustomize`` module first on
``PYTHONPATH``: the parent's imports never pollute the record) that writes, at exit,

- ``sys.modules`` with each module's ``__file__``,
- the file-backed mappings in ``/proc/self/maps`` (shared libraries, extension modules),
- every path opened from Python (the ``open`` audit event, PEP 578),

for each Python process started with it. Two profiles:

``import``
    ``import healthid.enclave_cli`` plus the modules it imports only on some paths
    (:data:`LAZY_ENCLAVE_MODULES`), and an eID-Server client that connects to a closed port
    (httpx imports its transport lazily).
``session``
    a real enclave session: ``python -m healthid.enclave_cli --socket S`` in development mode
    on a temporary data directory, driven over the RPC (status, a registry import, a sealed
    history event, policyholder verification, an ID token, attestation and an eID start
    against a closed port), then stopped with SIGTERM.

Usage::

    trusted_files.py [--profile import|session|both] [--python PY] [--pythonpath DIR] [--json]
    trusted_files.py ... --manifest healthid-enclave.manifest    # check a rendered manifest
    trusted_files.py ... --template healthid-enclave.manifest.template -D entrypoint=... ...

With ``--manifest`` or ``--template`` it exits 1 when a loaded file is not covered by
``sgx.trusted_files`` or state is written outside an encrypted mount. The layout is read from
the manifest: everything outside the standard library is installed into one directory,
``loader.env.PYTHONPATH`` (so a development venv and an editable ``src/`` both map there);
glibc comes from Gramine's runtime directory (the ``/lib`` mount); the enclave's data
directory (``loader.env.HEALTHID_DATA_DIR``) must be an encrypted mount.

The template renderer here substitutes ``{{ expression }}`` from a table of values and
refuses Jinja statements, so the template can be checked without Gramine installed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

ENCLAVE_MODULE: Final = "healthid.enclave_cli"
# Imported by the enclave process only on some paths (a static import misses them).
LAZY_ENCLAVE_MODULES: Final = (
    "healthid.keys.pkcs11",  # key_backend=pkcs11, production (enclave_runtime.build_key_store)
    "healthid.enclave.attestation",  # GramineEvidence: /dev/attestation (tee=sgx)
)
# Imported only in development mode: enclave_runtime.load_egk_cas adds the TEST eGK CA. The
# manifest fixes HEALTHID_MODE=production and must not trust them.
DEVELOPMENT_ONLY_MODULES: Final = ("healthid.demo",)
# Imported only because they are installed, by an import that may fail: the image does not
# install them. Top-level import name -> why.
OPTIONAL_MODULES: Final = {
    "pygments": (
        "httpx/__init__.py tries `from ._main import main` (its CLI needs click, pygments and "
        "rich); without rich that fails and httpx carries on"
    ),
}
# The interpreter's environment and flags in the manifest (loader.env, loader.argv); the
# traced processes run with the same, so they load what the enclave would.
ENCLAVE_PYTHON_ENV: Final = {
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUTF8": "1",
    "PYTHONCOERCECLOCALE": "0",
    "PYDANTIC_DISABLE_PLUGINS": "__all__",
}
ENCLAVE_PYTHON_FLAGS: Final = ("-s", "-P")
# Libraries Gramine's runtime directory provides (its patched glibc 2.40, mounted at /lib;
# subprojects/packagefiles/glibc-2.40/meson.build in gramineproject/gramine).
GRAMINE_GLIBC: Final = re.compile(
    r"(ld-linux-x86-64\.so\.2|ld\.so|libc\.so\.6|libm\.so\.6|libmvec\.so\.1|libdl\.so\.2"
    r"|libpthread\.so\.0|librt\.so\.1|libutil\.so\.1|libresolv\.so\.2|libanl\.so\.1"
    r"|libnsl\.so\.1|libthread_db\.so\.1|libnss_\w+\.so\.2)"
)
SITE_DIR_NAMES: Final = frozenset({"site-packages", "dist-packages"})
PSEUDO_PREFIXES: Final = ("/dev/", "/proc/", "/sys/")
TRACE_ENV: Final = "HEALTHID_TRACE_DIR"
READY_TIMEOUT: Final = 60.0  # seconds for the enclave process to listen (busy CI machines)
STOP_TIMEOUT: Final = 30.0
CLOSED_PORT: Final = 9  # "discard": nothing listens here on a test machine, connect fails
GROUPS: Final = (
    "interpreter",  # the python3 executable (and a shared libpython, see classify())
    "gramine-runtime",  # glibc: Gramine's own copy under Gramine
    "system",  # other shared libraries and files outside the Python roots
    "stdlib",
    "site-packages",  # third-party distributions
    "healthid",
    "site-startup",  # loaded by .pth files of a site dir: not in the enclave (PYTHONPATH)
    "development-only",  # DEVELOPMENT_ONLY_MODULES
    "foreign-metadata",  # metadata of distributions the enclave does not import
    "optional",  # OPTIONAL_MODULES: not installed in the image
    "read-as-data",  # healthid sources read but not imported (the simulated measurement)
    "sealed-state",  # under the enclave's data directory
    "tmp",
    "pseudo",  # /dev, /proc, /sys: Gramine's pseudo-filesystems
)
# Groups whose files must be trusted files of the manifest (code, and data read beside it).
TRUSTED_GROUPS: Final = frozenset(
    {"interpreter", "gramine-runtime", "system", "stdlib", "site-packages", "healthid"}
)

REQUIREMENTS_HEADER: Final = """\
# The third-party distributions the healthid enclave process imports, pinned to the versions
# the trusted-files check ran with (`make requirements` writes this file). The enclave image
# installs exactly these and the healthid wheel, nothing else (README.md "Build"):
#   pip install --no-deps --no-compile --require-hashes --target SITE_PACKAGES -r FILE
# The release pipeline adds the hashes (pip-compile --generate-hashes, or pip hash).
"""
# Groups of files below a Python root, placed in site_packages by the image layout.
_PYTHON_PACKAGE_GROUPS: Final = frozenset(
    {
        "site-packages",
        "healthid",
        "site-startup",
        "development-only",
        "foreign-metadata",
        "optional",
        "read-as-data",
    }
)

# The recorder: imported by `site` at start-up in every traced process (and the processes it
# spawns, which inherit PYTHONPATH). Standard library only; writes <dir>/<pid>.json at exit.
RECORDER: Final = """\
import atexit
import os
import sys

_DIR = os.environ.get("HEALTHID_TRACE_DIR")
if _DIR:
    _BASELINE = sorted(sys.modules)
    _opened = set()
    _state = {"done": False}

    def _hook(event, args):
        if event != "open" or _state["done"] or not args:
            return
        path = args[0]
        if hasattr(path, "__fspath__"):
            path = path.__fspath__()
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if isinstance(path, str) and path:
            _opened.add(os.path.normpath(os.path.join(os.getcwd(), path)))

    def _dump():
        _state["done"] = True
        modules = {}
        for name, module in list(sys.modules.items()):
            where = getattr(module, "__file__", None)
            modules[name] = where if isinstance(where, str) else None
        maps = set()
        with open("/proc/self/maps") as fh:
            for line in fh:
                parts = line.split(None, 5)
                if len(parts) == 6 and parts[5].startswith("/"):
                    maps.add(parts[5].strip())
        import json
        import sysconfig
        from importlib.metadata import PackageNotFoundError, packages_distributions, version

        tops = {name.split(".")[0] for name in modules}
        dists = {t: d for t, d in packages_distributions().items() if t in tops}
        versions = {}
        for names in dists.values():
            for name in names:
                try:
                    versions[name] = version(name)
                except PackageNotFoundError:
                    pass
        record = {
            "pid": os.getpid(),
            "argv": sys.argv,
            "executable": sys.executable,
            "sys_path": sys.path,
            "stdlib": sysconfig.get_path("stdlib"),
            "platstdlib": sysconfig.get_path("platstdlib"),
            "libdir": sysconfig.get_config_var("LIBDIR"),
            "instsoname": sysconfig.get_config_var("INSTSONAME"),
            "baseline": _BASELINE,
            "modules": modules,
            "maps": sorted(maps),
            "opened": sorted([p, os.path.exists(p)] for p in _opened),
            "distributions": dists,
            "versions": versions,
        }
        target = os.path.join(_DIR, f"{os.getpid()}.json")
        with open(target + ".part", "w") as fh:
            json.dump(record, fh)
        os.replace(target + ".part", target)

    atexit.register(_dump)
    sys.addaudithook(_hook)
"""

IMPORT_PROFILE_CODE: Final = f"""\
import asyncio
import importlib

import {ENCLAVE_MODULE}  # first: it keeps httpx's optional CLI imports out (see there)

import httpx
from healthid.eid.transport import TransportConfig, build_http_client

for name in {LAZY_ENCLAVE_MODULES!r}:
    importlib.import_module(name)


async def eid_client():
    async with build_http_client(TransportConfig()) as client:
        try:
            await client.post("https://127.0.0.1:{CLOSED_PORT}/eID-Server", content=b"")
        except httpx.HTTPError:
            pass


asyncio.run(eid_client())
"""


class TraceError(RuntimeError):
    """The traced process failed or left no record."""


# -- tracing --------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class ProcessRecord:
    """What the recorder wrote for one process."""

    pid: int
    argv: tuple[str, ...]
    executable: str
    sys_path: tuple[str, ...]
    stdlib: str
    platstdlib: str
    libdir: str | None
    instsoname: str | None
    baseline: frozenset[str]
    modules: Mapping[str, str | None]
    maps: tuple[str, ...]
    opened: tuple[tuple[str, bool], ...]  # (path, existed when the process ended)
    distributions: Mapping[str, Sequence[str]]  # top-level import name -> distributions
    versions: Mapping[str, str]  # distribution -> installed version

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> ProcessRecord:
        return cls(
            pid=int(obj["pid"]),
            argv=tuple(obj["argv"]),
            executable=str(obj["executable"]),
            sys_path=tuple(obj["sys_path"]),
            stdlib=str(obj["stdlib"]),
            platstdlib=str(obj["platstdlib"]),
            libdir=obj.get("libdir"),
            instsoname=obj.get("instsoname"),
            baseline=frozenset(obj["baseline"]),
            modules=dict(obj["modules"]),
            maps=tuple(obj["maps"]),
            opened=tuple((str(p), bool(e)) for p, e in obj["opened"]),
            distributions=dict(obj.get("distributions", {})),
            versions=dict(obj.get("versions", {})),
        )


@dataclass(frozen=True, kw_only=True)
class Trace:
    """The records of every process of one or more profiles, and the data directory used."""

    profiles: tuple[str, ...]
    records: tuple[ProcessRecord, ...]
    data_dirs: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()  # the recorder's own directory


def _child_env(trace_dir: Path, recorder_dir: Path, pythonpath: str | None) -> dict[str, str]:
    """A clean environment, like Gramine's: the manifest's Python variables, the recorder and,
    for a production layout, PYTHONPATH; nothing of the caller's (no PATH, no HEALTHID_*)."""
    paths = [str(recorder_dir)] + ([pythonpath] if pythonpath else [])
    return {**ENCLAVE_PYTHON_ENV, "PYTHONPATH": os.pathsep.join(paths), TRACE_ENV: str(trace_dir)}


@contextlib.contextmanager
def _tracing() -> Iterator[tuple[Path, Path]]:
    # Under /tmp: the session's socket path must fit sun_path (107 bytes).
    root = Path(tempfile.mkdtemp(prefix="hid-trace-", dir="/tmp"))
    try:
        recorder_dir, trace_dir = root / "recorder", root / "records"
        recorder_dir.mkdir()
        trace_dir.mkdir()
        (recorder_dir / "sitecustomize.py").write_text(RECORDER, encoding="utf-8")
        yield recorder_dir, trace_dir
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _read_records(trace_dir: Path) -> tuple[ProcessRecord, ...]:
    records = [
        ProcessRecord.from_json(json.loads(p.read_text(encoding="utf-8")))
        for p in sorted(trace_dir.glob("*.json"))
    ]
    if not records:
        raise TraceError("the traced process left no record (did the recorder load?)")
    return tuple(records)


def trace_import(python: str = sys.executable, pythonpath: str | None = None) -> Trace:
    """The ``import`` profile: the enclave entry module, its lazy imports, an eID client."""
    with _tracing() as (recorder_dir, trace_dir):
        result = subprocess.run(  # noqa: S603 - our interpreter, our code
            [python, *ENCLAVE_PYTHON_FLAGS, "-c", IMPORT_PROFILE_CODE],
            env=_child_env(trace_dir, recorder_dir, pythonpath),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd="/",
        )
        if result.returncode != 0:
            raise TraceError(f"the import profile failed:\n{result.stderr}")
        return Trace(
            profiles=("import",), records=_read_records(trace_dir), ignore=(str(recorder_dir),)
        )


def trace_session(python: str = sys.executable, pythonpath: str | None = None) -> Trace:
    """The ``session`` profile: a real enclave process (development mode, temporary data
    directory) driven over its RPC socket, stopped with SIGTERM."""
    with _tracing() as (recorder_dir, trace_dir):
        data_dir = trace_dir.parent / "data"
        socket_path = trace_dir.parent / "enclave.sock"
        token_kid = _prepare_data_dir(data_dir)
        env = _child_env(trace_dir, recorder_dir, pythonpath) | {
            "HEALTHID_MODE": "development",
            "HEALTHID_DATA_DIR": str(data_dir),
            "HEALTHID_ENCLAVE_WORKERS": "1",  # as in the manifest
            "HEALTHID_EID_SERVER_URL": f"http://127.0.0.1:{CLOSED_PORT}/eID-Server",
        }
        command = [python, *ENCLAVE_PYTHON_FLAGS, "-m", ENCLAVE_MODULE]
        process = subprocess.Popen(  # noqa: S603 - our interpreter, our module
            [*command, "--socket", str(socket_path)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd="/",
        )
        try:
            _wait_listening(process, socket_path)
            asyncio.run(_drive_session(socket_path, token_kid, data_dir))
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=STOP_TIMEOUT)
            if process.returncode != 0:
                raise TraceError(f"the enclave process exited {process.returncode}: {stderr!r}")
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate(timeout=STOP_TIMEOUT)
        return Trace(
            profiles=("session",),
            records=_read_records(trace_dir),
            data_dirs=(str(data_dir),),
            ignore=(str(recorder_dir),),
        )


def _prepare_data_dir(data_dir: Path) -> str:
    """A token signing key in the file key store the enclave opens (development backend)."""
    from healthid.keys.file import FileKeyStore

    return FileKeyStore(data_dir / "keys").generate("token").kid


def _wait_listening(process: subprocess.Popen[bytes], socket_path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        if process.poll() is not None:
            err = process.stderr.read().decode() if process.stderr else ""
            raise TraceError(f"the enclave process exited before listening: {err}")
        if socket_path.exists():
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(str(socket_path))
                return
            except OSError:
                pass
            finally:
                probe.close()
        if time.monotonic() > deadline:
            raise TraceError("the enclave process did not start listening")
        time.sleep(0.05)


def _registry_csv(count: int) -> bytes:
    import csv
    import io

    from healthid.demo.synthetic import FIELDS, synthetic_rows

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(synthetic_rows(count, seed=11))
    return out.getvalue().encode()


async def _drive_session(socket_path: Path, token_kid: str, data_dir: Path) -> None:
    """One call of each kind the host makes, over the real RPC: an import, an eGK proof, a
    device bound and logged in, an ID token for that login."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from healthid.demo.egk_test_ca import TestEgkCa
    from healthid.demo.synthetic import synthetic_rows
    from healthid.enclave import api
    from healthid.enclave.rpc import RemoteEnclave
    from healthid.enclave_runtime import EGK_TEST_CA_DIR
    from healthid.protocol import device_auth
    from healthid.protocol.jose.keys import public_jwk
    from healthid.protocol.oauth.token import TokenGrant

    remote = RemoteEnclave(socket_path)
    try:
        await remote.status()
        prepared = await remote.prepare_import(
            _registry_csv(2), filename="registry.csv", fmt=None, accept_test_kvnr=False
        )
        sealed: list[api.SealedPolicyholder] = []
        for index in range(prepared.chunk_count):
            sealed += (await remote.seal_import_chunk(prepared.import_id, index)).sealed
        await remote.discard_import(prepared.import_id)
        await remote.seal_history(sealed[0], api.HistoryEvent(kind="login", at=1))
        await remote.verify_policyholders(sealed)
        # identity proof, device binding and login, as the wallet service drives them
        row = next(iter(synthetic_rows(2, seed=11)))
        card = TestEgkCa.create(data_dir / EGK_TEST_CA_DIR).issue_card(
            row["kvnr"], row["ik"], row["given_name"], row["family_name"]
        )
        challenge = os.urandom(32)
        lookup = await remote.egk_prove(
            certificate=card.certificate_der, signature=card.sign(challenge), challenge=challenge
        )
        match = await remote.match_identity(lookup.proof_id, [sealed[0]])
        device = ec.generate_private_key(ec.SECP256R1())
        device_id = os.urandom(16).hex()
        public_key = device.public_key().public_bytes(
            Encoding.DER, PublicFormat.SubjectPublicKeyInfo
        )
        bound = await remote.bind_device(
            api.DeviceBindingRequest(
                proof_ticket=match.proof_ticket,
                device_id=device_id,
                public_key=public_key,
                key_class="software",
                attestation_format="healthid-software",
            )
        )
        (login_challenge,) = await remote.login_challenges(1)
        r, s = decode_dss_signature(
            device.sign(
                device_auth.message(login_challenge, device_id, 1), ec.ECDSA(hashes.SHA256())
            )
        )
        grant = await remote.login(
            api.LoginRequest(
                device_id=device_id,
                pseudonym=bound.pseudonym,
                public_key=public_key,
                key_class="software",
                attestation_format="healthid-software",
                proofing_method=bound.proofing_method,
                proofed_at=bound.proofed_at,
                sign_count=0,
                binding=bound.binding,
                challenge=login_challenge,
                counter=1,
                signature=r.to_bytes(32, "big") + s.to_bytes(32, "big"),
                session_ttl=300,
                owner=sealed[0],
            )
        )
        rp_key = ec.generate_private_key(ec.SECP256R1())
        await remote.mint_id_token(
            api.IdTokenRequest(
                sealed=sealed[0],
                issuer="https://idp.example",
                grant=TokenGrant(
                    client_id="https://rp.example",
                    nonce="trace",
                    id_token_version="1.0.0",  # noqa: S106 - a version, not a secret
                    consented_claims=("urn:telematik:claims:id",),
                ),
                ticket=grant.ticket,
                single_sign_on=False,
                kid=token_kid,
                x5c=(),
                rp_statements=(),
                rp_encryption_jwk=dict(public_jwk(rp_key.public_key(), kid="rp", use="enc")),
            )
        )
        # Refusals are fine (attestation not configured; no eID-Server listening): the
        # enclave has loaded the code of both paths by then.
        with contextlib.suppress(api.EnclaveError):
            await remote.attest(os.urandom(32))
        with contextlib.suppress(api.EnclaveError):
            await remote.eid_start()
    finally:
        await remote.aclose()


def merge(traces: Iterable[Trace]) -> Trace:
    items = list(traces)
    return Trace(
        profiles=tuple(p for t in items for p in t.profiles),
        records=tuple(r for t in items for r in t.records),
        data_dirs=tuple(d for t in items for d in t.data_dirs),
        ignore=tuple(i for t in items for i in t.ignore),
    )


# -- classification -------------------------------------------------------------------------
@dataclass(kw_only=True)
class LoadedFile:
    """A file some traced process loaded: where it lives and what it is for."""

    path: str  # absolute host path as loaded
    group: str  # one of GROUPS
    root: str | None = None  # the Python root (stdlib or a sys.path entry) it lies under
    relpath: str | None = None  # its path below that root
    distribution: str | None = None
    modules: set[str] = field(default_factory=set)
    how: set[str] = field(default_factory=set)  # module | mapped | opened

    def to_json(self) -> dict[str, object]:
        return {
            "path": self.path,
            "group": self.group,
            "relpath": self.relpath,
            "distribution": self.distribution,
            "modules": sorted(self.modules),
            "how": sorted(self.how),
        }


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


class _Classifier:
    def __init__(self, record: ProcessRecord, data_dirs: Sequence[str]) -> None:
        stdlib = {os.path.normpath(record.stdlib), os.path.normpath(record.platstdlib)}
        roots = [(p, "stdlib") for p in stdlib]
        for entry in record.sys_path:
            path = os.path.normpath(entry) if entry else ""
            if not path or not os.path.isdir(path) or path in stdlib:
                continue
            # lib-dynload lies below the stdlib; a venv's site-packages too (platstdlib).
            site = os.path.basename(path) in SITE_DIR_NAMES
            stdlib_part = not site and any(_under(path, s) for s in stdlib)
            roots.append((path, "stdlib" if stdlib_part else "site"))
        # The longest root wins: a venv's site-packages lies below its platstdlib.
        self.roots = sorted(roots, key=lambda r: len(r[0]), reverse=True)
        self.executable = os.path.realpath(record.executable)
        self.libpython = (
            os.path.realpath(os.path.join(record.libdir, record.instsoname))
            if record.libdir and record.instsoname and ".so" in record.instsoname
            else None
        )
        self.data_dirs = [os.path.normpath(d) for d in data_dirs]
        self.dists = record.distributions

    def classify(self, path: str) -> LoadedFile:
        path = os.path.normpath(path)
        if os.path.realpath(path) in (self.executable, self.libpython):
            # A shared libpython (pyenv, --enable-shared) counts as the interpreter: the
            # distribution's python3 the manifest names links it statically.
            return LoadedFile(path=path, group="interpreter")
        for data_dir in self.data_dirs:
            if _under(path, data_dir):
                return LoadedFile(
                    path=path, group="sealed-state", relpath=os.path.relpath(path, data_dir)
                )
        for root, kind in self.roots:
            if _under(path, root) and path != root:
                return self._python_file(path, root, kind)
        if path.startswith(PSEUDO_PREFIXES):
            return LoadedFile(path=path, group="pseudo")
        if _under(path, "/tmp"):  # noqa: S108 - classifying paths, not creating files
            return LoadedFile(path=path, group="tmp")
        if GRAMINE_GLIBC.fullmatch(os.path.basename(path)):
            return LoadedFile(path=path, group="gramine-runtime")
        return LoadedFile(path=path, group="system")

    def _python_file(self, path: str, root: str, kind: str) -> LoadedFile:
        relpath = os.path.relpath(path, root)
        if kind == "stdlib":
            return LoadedFile(path=path, group="stdlib", root=root, relpath=relpath)
        parts = relpath.split("/")
        top = parts[0]
        if top == "__pycache__" and len(parts) > 1:  # the bytecode of a top-level module
            top = parts[1]
        name = top.split(".", 1)[0]  # cffi's "_cffi_backend.cpython-311-x86_64-linux-gnu.so"
        if top.endswith(".dist-info"):
            dist = _canonical_name(top.removesuffix(".dist-info").rsplit("-", 1)[0])
            group = "healthid" if dist == "healthid" else "site-packages"
        elif name == "healthid":
            group, dist = "healthid", "healthid"
        else:
            dists = self.dists.get(name) or []
            group, dist = "site-packages", _canonical_name(dists[0] if dists else top)
        return LoadedFile(path=path, group=group, root=root, relpath=relpath, distribution=dist)


def _canonical_name(name: str) -> str:
    """PEP 503 normalised distribution name (``python_dotenv`` and ``python-dotenv`` agree)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _development_only(module: str) -> bool:
    return any(module == m or module.startswith(m + ".") for m in DEVELOPMENT_ONLY_MODULES)


def classify(trace: Trace) -> list[LoadedFile]:
    """Every file of the trace, merged by path, sorted by group and path.

    These files are set apart from what the enclave needs:

    - ``site-startup``: modules a site directory's ``.pth`` files imported before the program
      started (the recorder's baseline: setuptools' ``_distutils_hack``). The enclave adds
      its packages with ``PYTHONPATH``, where no ``.pth`` file runs.
    - ``development-only``: :data:`DEVELOPMENT_ONLY_MODULES`.
    - ``foreign-metadata``: ``*.dist-info`` files of distributions no traced process imported
      from (alembic scans every installed distribution's entry points; the development venv
      holds pytest, mypy, ...). The enclave image installs only the distributions it imports.
    - ``optional``: :data:`OPTIONAL_MODULES` and their metadata.
    - ``read-as-data``: healthid source files opened but never imported. In development the
      enclave hashes every healthid source into its SIMULATED MRENCLAVE
      (``key_release.simulated_code_measurement``); under SGX the hardware measures instead.

    The recorder itself is left out.
    """
    found: dict[str, LoadedFile] = {}
    startup: set[str] = set()
    for record in trace.records:
        classifier = _Classifier(record, trace.data_dirs)
        startup |= record.baseline - {"__main__", "__mp_main__"}
        sources: list[tuple[str, str, str | None]] = [
            (where, "module", name) for name, where in record.modules.items() if where
        ]
        sources += [(p, "mapped", None) for p in record.maps if not p.endswith(" (deleted)")]
        for path, existed in record.opened:
            if os.path.isdir(path):
                continue  # a directory opened to fsync it holds no code
            if existed or classifier.classify(path).group in ("sealed-state", "tmp"):
                sources.append((path, "opened", None))  # else: a failed attempt
        for path, how, module in sources:
            if any(_under(path, ignored) for ignored in trace.ignore):
                continue
            item = found.get(os.path.normpath(path)) or classifier.classify(path)
            found[item.path] = item
            item.how.add(how)
            if module is not None:
                item.modules.add(module)
    for item in found.values():
        if not item.modules or item.group not in ("site-packages", "healthid"):
            continue
        if all(m in startup for m in item.modules):
            item.group = "site-startup"
        elif all(_development_only(m) for m in item.modules):
            item.group = "development-only"
        elif all(m.split(".")[0] in OPTIONAL_MODULES for m in item.modules):
            item.group = "optional"
    imported = {
        f.distribution
        for f in found.values()
        if f.group in ("site-packages", "healthid") and not _is_metadata(f)
    }
    for item in found.values():  # no traced process imported it
        if item.group == "healthid" and not item.modules and item.path.endswith(".py"):
            item.group = "read-as-data"
    for item in found.values():  # a bytecode cache goes with its source
        source = found.get(source_of(item.path))
        if not item.modules and source is not None and source is not item:
            if source.group in ("site-startup", "development-only", "optional"):
                item.group = source.group
    optional = {f.distribution for f in found.values() if f.group == "optional"}
    for item in found.values():
        if item.group == "site-packages" and item.distribution in optional:
            item.group = "optional"
        elif _is_metadata(item) and item.distribution not in imported:
            item.group = "foreign-metadata"
    order = {g: i for i, g in enumerate(GROUPS)}
    return sorted(found.values(), key=lambda f: (order[f.group], f.path))


def _is_metadata(item: LoadedFile) -> bool:
    return (item.relpath or "").split("/", 1)[0].endswith(".dist-info")


# -- the manifest ---------------------------------------------------------------------------
_EXPRESSION: Final = re.compile(r"\{\{\s*(.*?)\s*\}\}")
_STATEMENT: Final = re.compile(r"\{%|\{#")


class TemplateError(ValueError):
    """The template uses something this renderer does not offer."""


def render_template(text: str, values: Mapping[str, str]) -> str:
    """Substitute every ``{{ expression }}`` by ``values[expression]``; refuse Jinja
    statements and expressions without a value (like Jinja's StrictUndefined)."""
    if _STATEMENT.search(text):
        raise TemplateError("Jinja statements and comments are not supported by this renderer")

    def value(match: re.Match[str]) -> str:
        expression = match.group(1)
        if expression not in values:
            raise TemplateError(f"no value for {{{{ {expression} }}}}")
        return values[expression]

    return _EXPRESSION.sub(value, text)


def template_expressions(text: str) -> set[str]:
    return set(_EXPRESSION.findall(text))


@dataclass(frozen=True, kw_only=True)
class TrustedEntry:
    """An ``sgx.trusted_files`` entry. Gramine compares the URI of the file it opens (mount
    URI + path below the mount) with these as text, so this check does too."""

    uri: str
    path: str  # the URI's path, normalised
    is_dir: bool


def trusted_entries(manifest: Mapping[str, Any]) -> list[TrustedEntry]:
    entries = []
    for item in manifest.get("sgx", {}).get("trusted_files", []):
        uri = item if isinstance(item, str) else item["uri"]
        if not uri.startswith("file:"):
            raise ValueError(f"trusted file {uri!r} is not a file: URI")
        raw = uri[len("file:") :]
        path = os.path.normpath(raw)
        entries.append(TrustedEntry(uri=uri, path=path, is_dir=raw.endswith("/")))
    return entries


def covered_by(path: str, entries: Sequence[TrustedEntry]) -> TrustedEntry | None:
    for entry in entries:
        if path == entry.path or (entry.is_dir and _under(path, entry.path)):
            return entry
    return None


@dataclass(frozen=True, kw_only=True)
class Layout:
    """Where the production image has what the traced development process loaded."""

    entrypoint: str  # libos.entrypoint: the interpreter (with libpython linked in)
    site_packages: str  # loader.env.PYTHONPATH: everything outside the stdlib
    runtimedir: str  # Gramine's glibc: the uri of the /lib mount
    library_path: tuple[str, ...]  # loader.env.LD_LIBRARY_PATH without /lib
    data_dir: str  # loader.env.HEALTHID_DATA_DIR

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> Layout:
        env = manifest["loader"]["env"]
        lib = [m for m in manifest["fs"]["mounts"] if m.get("path") == "/lib"]
        if len(lib) != 1:
            raise ValueError("the manifest has no single /lib mount (Gramine's runtime)")
        return cls(
            entrypoint=str(manifest["libos"]["entrypoint"]),
            site_packages=str(env["PYTHONPATH"]),
            runtimedir=str(lib[0]["uri"]).removeprefix("file:"),
            library_path=tuple(
                d for d in str(env.get("LD_LIBRARY_PATH", "")).split(":") if d and d != "/lib"
            ),
            data_dir=str(env["HEALTHID_DATA_DIR"]),
        )

    def image_path(self, item: LoadedFile) -> str:
        """The path under which Gramine opens ``item``: what the manifest must trust."""
        if item.group == "interpreter":
            return os.path.normpath(self.entrypoint)
        if item.group in _PYTHON_PACKAGE_GROUPS:
            if item.relpath is None:
                raise ValueError(f"{item.path}: no path below a Python root")
            return os.path.normpath(os.path.join(self.site_packages, item.relpath))
        if item.group == "gramine-runtime":
            return os.path.normpath(os.path.join(self.runtimedir, os.path.basename(item.path)))
        if item.group == "sealed-state":
            return os.path.normpath(os.path.join(self.data_dir, item.relpath or ""))
        if item.group == "system":
            return self._library(item.path)
        return os.path.normpath(item.path)

    def _library(self, path: str) -> str:
        """The dynamic loader finds a library in the first LD_LIBRARY_PATH directory holding
        it; the traced path is the host's resolved one (/proc/self/maps), so compare the
        directories resolved (/lib/x86_64-linux-gnu is /usr/lib/x86_64-linux-gnu on a merged
        /usr) and name the file as Gramine opens it."""
        real = os.path.realpath(path)
        for directory in self.library_path:
            resolved = os.path.realpath(directory)
            if _under(real, resolved):
                return os.path.normpath(os.path.join(directory, os.path.relpath(real, resolved)))
        return os.path.normpath(path)


@dataclass(frozen=True, kw_only=True)
class Problem:
    item: LoadedFile
    image_path: str
    reason: str

    def __str__(self) -> str:
        who = f" ({', '.join(sorted(self.item.modules))})" if self.item.modules else ""
        return f"{self.image_path}{who}: {self.reason}"


def check(files: Sequence[LoadedFile], manifest: Mapping[str, Any]) -> list[Problem]:
    """What the manifest fails to provide for the traced files (empty: all covered).

    Code (TRUSTED_GROUPS) must be a trusted file; the enclave's state must lie in an encrypted
    mount, scratch files in a tmpfs; development-only modules must *not* be trusted.
    """
    layout = Layout.from_manifest(manifest)
    entries = trusted_entries(manifest)
    mounts = manifest["fs"]["mounts"]
    problems = []
    for item in files:
        image = source_of(layout.image_path(item))
        if item.group in TRUSTED_GROUPS and covered_by(image, entries) is None:
            problems.append(Problem(item=item, image_path=image, reason="not a trusted file"))
        elif item.group == "development-only" and covered_by(image, entries) is not None:
            reason = "development-only code is trusted"
            problems.append(Problem(item=item, image_path=image, reason=reason))
        elif item.group == "sealed-state" and not _in_mount(image, mounts, "encrypted"):
            problems.append(Problem(item=item, image_path=image, reason="not encrypted"))
        elif item.group == "tmp" and not _in_mount(image, mounts, "tmpfs"):
            problems.append(Problem(item=item, image_path=image, reason="not in a tmpfs"))
    return problems


_PYC: Final = re.compile(r"(?P<dir>.*)/__pycache__/(?P<name>[^/.]+)\.[^/]+\.pyc")


def source_of(path: str) -> str:
    """A bytecode cache counts as its source: the image has none outside the stdlib
    (``pip install --no-compile``; PYTHONDONTWRITEBYTECODE), so Python compiles the trusted
    source in memory."""
    match = _PYC.fullmatch(path)
    return f"{match['dir']}/{match['name']}.py" if match else path


def _in_mount(path: str, mounts: Sequence[Mapping[str, Any]], kind: str) -> bool:
    return any(m.get("type") == kind and _under(path, str(m["path"])) for m in mounts)


# -- command line ---------------------------------------------------------------------------
def requirements(trace: Trace, files: Sequence[LoadedFile]) -> str:
    """``name==version`` of every third-party distribution the enclave imports: the enclave
    image installs exactly these (``pip install --no-deps --require-hashes --target``)."""
    versions: dict[str, str] = {}
    for record in trace.records:
        versions |= {_canonical_name(k): v for k, v in record.versions.items()}
    names = sorted({f.distribution for f in files if f.group == "site-packages" and f.distribution})
    return REQUIREMENTS_HEADER + "".join(f"{n}=={versions.get(n, '?')}\n" for n in names)


def summary(files: Sequence[LoadedFile]) -> str:
    """Grouped, human-readable: libraries by path, Python files by distribution/package."""
    lines: list[str] = []
    for group in GROUPS:
        items = [f for f in files if f.group == group]
        if not items:
            continue
        lines.append(f"[{group}] {len(items)} files")
        if group in _PYTHON_PACKAGE_GROUPS:
            by_dist: dict[str, set[str]] = {}
            for f in items:
                parts = (f.relpath or f.path).split("/")
                top = "/".join(parts[:2]) if group == "healthid" and len(parts) > 2 else parts[0]
                by_dist.setdefault(f.distribution or "?", set()).add(top)
            for dist, tops in sorted(by_dist.items()):
                lines.append(f"  {dist}: {', '.join(sorted(tops))}")
        elif group == "stdlib":
            stdlib_tops = sorted({(f.relpath or "").split("/")[0] for f in items})
            lines.append(f"  {', '.join(stdlib_tops)}")
        else:
            lines += [f"  {f.path}" for f in items]
    return "\n".join(lines)


def _parse_defines(values: Sequence[str]) -> dict[str, str]:
    defines = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep:
            raise SystemExit(f"-D {value!r}: expected EXPRESSION=VALUE")
        defines[key.strip()] = val
    return defines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--profile", choices=("import", "session", "both"), default="both")
    parser.add_argument("--python", default=sys.executable, help="the interpreter to trace")
    parser.add_argument("--pythonpath", help="production layout: the site_packages directory")
    parser.add_argument("--json", action="store_true", help="print the files as JSON")
    parser.add_argument(
        "--requirements", action="store_true", help="print the distributions, pinned"
    )
    parser.add_argument("--manifest", type=Path, help="check this rendered manifest")
    parser.add_argument("--template", type=Path, help="render and check this template")
    parser.add_argument("-D", dest="defines", action="append", default=[], metavar="EXPR=VALUE")
    args = parser.parse_args(argv)

    traces = []
    if args.profile in ("import", "both"):
        traces.append(trace_import(args.python, args.pythonpath))
    if args.profile in ("session", "both"):
        traces.append(trace_session(args.python, args.pythonpath))
    trace = merge(traces)
    files = classify(trace)
    if args.json:
        print(json.dumps([f.to_json() for f in files], indent=2))
    elif args.requirements:
        print(requirements(trace, files), end="")
    else:
        print(summary(files))

    if args.manifest is None and args.template is None:
        return 0
    if args.manifest is not None:
        text = args.manifest.read_text(encoding="utf-8")
    else:
        template = args.template.read_text(encoding="utf-8")
        text = render_template(template, _parse_defines(args.defines))
    problems = check(files, tomllib.loads(text))
    for problem in problems:
        print(f"NOT COVERED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
