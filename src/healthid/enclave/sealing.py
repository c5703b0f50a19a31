"""Sealing of the enclave root key at rest.

The root key never leaves the enclave in plaintext: at rest it is sealed, and a new enclave
instance gets it only through the attested key release (``healthid.enclave.key_release``).

- **Development** (``tee: simulated``, :class:`SimulatedFileSealer`): the root key lies in a
  file under the data directory, marked insecure, readable by the owner only. No protection.
- **Production** (``tee: sgx``, :class:`GramineSealer`): the root key lies in a file under a
  directory that the Gramine manifest mounts as an **encrypted mount keyed with
  ``_sgx_mrenclave``** (spec vau-and-tee.md §3.1 "Encrypted files")::

      fs.mounts = [ ...,
        { type = "encrypted", path = "/var/lib/healthid-enclave/sealed-root",
          uri = "file:/var/lib/healthid-enclave/sealed-root", key_name = "_sgx_mrenclave" } ]

  Gramine encrypts and integrity-protects the file with a key derived from the SGX sealing
  key for this MRENCLAVE on this CPU, and binds it to its path. In code that is a plain file
  write and read; the mount (and so the sealing policy) is part of the measured manifest, so a
  verifier that pins MRENCLAVE also pins how the root key is sealed. The sealer refuses to
  run outside Gramine-SGX (``/dev/attestation/attestation_type`` must read ``dcap``).

**Why MRENCLAVE, not MRSIGNER.** With ``_sgx_mrenclave`` only this exact enclave build on this
CPU can open the sealed root key; a build with a vulnerability fixed (and an ISVSVN bump)
cannot be tricked into sharing state with the vulnerable one, and nothing signed later by the
same key can read it. The price: a new build (or the same build on another machine) cannot
read the old sealed state at all. That is exactly why the attested key release exists: the
new instance proves its measurement, signer, security version and debug flag to a running
instance (or a key-release service), which wraps the root key to a key only that enclave
holds. Sealing is a same-build, same-host restart cache; the key release is how the root key
moves (spec §4.3). With ``_sgx_mrsigner`` a new build would silently inherit the old sealed
state, and its policy would live in the signing key alone, outside any verifier's view.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from typing import Final, Protocol

from healthid.enclave.attestation import ATTESTATION_TYPE_FILE, DCAP, DEV_ATTESTATION
from healthid.enclave.vault import ROOT_KEY_LEN, RootKey

SIMULATED_WARNING = (
    "INSECURE: tee=simulated. This root key is NOT sealed by a trusted execution environment; "
    "anyone who can read this file can decrypt every policyholder record. Development only."
)
GRAMINE_SEALING: Final = "gramine-encrypted-fs/_sgx_mrenclave"
ROOT_FILE_MODE: Final = 0o600
MAX_ROOT_FILE_BYTES: Final = 4096  # a root key file is ~400 bytes


class SealingError(Exception):
    """The sealed root key cannot be read, or would be stored unsafely."""


class RootKeySealer(Protocol):
    tee: str

    def exists(self) -> bool: ...

    def load(self) -> RootKey: ...

    def seal(self, root: RootKey) -> None: ...

    def load_or_create(self) -> RootKey: ...


def _root_document(tee: str, root: RootKey, **markers: str) -> str:
    doc = {
        "tee": tee,
        **markers,
        "root_key_id": root.key_id,
        "secret": base64.b64encode(root.secret).decode("ascii"),
    }
    return json.dumps(doc, indent=2)


def _parse_root_document(text: str, tee: str, path: Path) -> RootKey:
    try:
        doc = json.loads(text)
        secret = base64.b64decode(doc["secret"], validate=True)
        root = RootKey.from_secret(secret)
    except (ValueError, KeyError, TypeError) as exc:
        raise SealingError(f"{path} is not a valid root key file") from exc
    if doc.get("tee") != tee or doc.get("root_key_id") != root.key_id:
        raise SealingError(f"{path} does not match its recorded root key id")
    return root


def _create(path: Path, text: str) -> None:
    """Create ``path`` (mode 0600) with ``text``; SealingError if it exists already."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, ROOT_FILE_MODE)
    except FileExistsError:
        raise SealingError(f"{path} exists: this enclave already holds a root key") from None
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


class SimulatedFileSealer:
    """Keeps the root key in a JSON file marked ``tee: simulated`` (mode 0600)."""

    tee = "simulated"

    def __init__(self, path: Path) -> None:
        self._path = path

    @property
    def path(self) -> Path:
        return self._path

    def exists(self) -> bool:
        return self._path.exists()

    def load_or_create(self) -> RootKey:
        if self._path.exists():
            return self.load()
        root = RootKey.from_secret(os.urandom(ROOT_KEY_LEN))
        self.seal(root)
        return root

    def seal(self, root: RootKey) -> None:
        """Store ``root`` (a new one, or one released to this enclave); never overwrites."""
        _create(self._path, _root_document(self.tee, root, warning=SIMULATED_WARNING))

    def load(self) -> RootKey:
        mode = self._path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SealingError(f"{self._path} is readable by others; chmod 600 it")
        return _parse_root_document(self._path.read_text(), self.tee, self._path)


class GramineSealer:
    """Keeps the root key in a file on Gramine's ``_sgx_mrenclave`` encrypted mount.

    ``path`` must lie under the encrypted mount (module docstring); ``attestation_dir`` is
    configurable so tests can point it at a fake ``/dev/attestation``. Every operation first
    checks that this process runs under Gramine-SGX with DCAP attestation: outside it the
    "sealed" file would be a plaintext file on the host's disk.
    """

    tee = "sgx"

    def __init__(self, path: Path, *, attestation_dir: Path = DEV_ATTESTATION) -> None:
        self._path = path
        self._attestation_dir = attestation_dir

    @property
    def path(self) -> Path:
        return self._path

    def check_available(self) -> None:
        """Refuse unless running under Gramine-SGX (CONVENTIONS 7)."""
        try:
            kind = (self._attestation_dir / ATTESTATION_TYPE_FILE).read_text().strip()
        except OSError:
            raise SealingError(
                f"tee=sgx: {self._attestation_dir} is not available: not running under "
                "Gramine-SGX, so the root key cannot be sealed"
            ) from None
        if kind != DCAP:
            raise SealingError(
                f"tee=sgx: Gramine attestation type is {kind!r}, not {DCAP!r}: not an SGX "
                "enclave with DCAP attestation, so the root key cannot be sealed"
            )

    def exists(self) -> bool:
        self.check_available()
        return self._path.exists()

    def load_or_create(self) -> RootKey:
        if self.exists():
            return self.load()
        root = RootKey.from_secret(os.urandom(ROOT_KEY_LEN))
        self.seal(root)
        return root

    def seal(self, root: RootKey) -> None:
        self.check_available()
        _create(self._path, _root_document(self.tee, root, sealing=GRAMINE_SEALING))

    def load(self) -> RootKey:
        self.check_available()
        try:
            with self._path.open("rb") as fh:
                raw = fh.read(MAX_ROOT_FILE_BYTES + 1)
        except OSError as exc:
            # Gramine refuses to open a file of its encrypted mount it cannot decrypt: sealed
            # by another enclave build (another MRENCLAVE), on another CPU, or tampered with.
            raise SealingError(
                f"{self._path} cannot be opened ({exc.strerror or type(exc).__name__}): it was "
                "sealed by another enclave build or on another machine, or it was altered; "
                "receive the root key from a running instance instead (--join)"
            ) from None
        if len(raw) > MAX_ROOT_FILE_BYTES:
            raise SealingError(f"{self._path} is not a valid root key file")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise SealingError(f"{self._path} is not a valid root key file") from None
        return _parse_root_document(text, self.tee, self._path)
