"""Sealing of the enclave root key at rest.

Development (``tee: simulated``): the root key lies in a file under the data directory, marked
insecure, readable by the owner only. Production seals it with the SGX sealing key under
Gramine (the enclave issue); that sealer is not part of this module yet, and production mode
refuses to start with the simulated TEE (settings.py).
"""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from typing import Protocol

from healthid.enclave.vault import ROOT_KEY_LEN, RootKey

SIMULATED_WARNING = (
    "INSECURE: tee=simulated. This root key is NOT sealed by a trusted execution environment; "
    "anyone who can read this file can decrypt every policyholder record. Development only."
)


class SealingError(Exception):
    """The sealed root key cannot be read, or would be stored unsafely."""


class RootKeySealer(Protocol):
    tee: str

    def load_or_create(self) -> RootKey: ...


class SimulatedFileSealer:
    """Keeps the root key in a JSON file marked ``tee: simulated`` (mode 0600)."""

    tee = "simulated"

    def __init__(self, path: Path) -> None:
        self._path = path

    def load_or_create(self) -> RootKey:
        if self._path.exists():
            return self._load()
        self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        root = RootKey.from_secret(os.urandom(ROOT_KEY_LEN))
        doc = {
            "tee": self.tee,
            "warning": SIMULATED_WARNING,
            "root_key_id": root.key_id,
            "secret": base64.b64encode(root.secret).decode("ascii"),
        }
        fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh, indent=2)
        return root

    def _load(self) -> RootKey:
        mode = self._path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SealingError(f"{self._path} is readable by others; chmod 600 it")
        try:
            doc = json.loads(self._path.read_text())
            secret = base64.b64decode(doc["secret"], validate=True)
            root = RootKey.from_secret(secret)
        except (ValueError, KeyError, TypeError) as exc:
            raise SealingError(f"{self._path} is not a valid root key file") from exc
        if doc.get("tee") != self.tee or doc.get("root_key_id") != root.key_id:
            raise SealingError(f"{self._path} does not match its recorded root key id")
        return root
