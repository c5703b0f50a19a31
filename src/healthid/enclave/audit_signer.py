"""The enclave's audit key: it signs checkpoints of the host's audit chain (a witness).

The ES256 key is generated inside the enclave and stored only wrapped (AES-256-GCM) under a
key derived from the enclave root key, in a file under the enclave directory, like the root
key itself (sealing.py). The enclave does not sign a head the host names: it recomputes the
chain from the last checkpoint it signed itself (its own JWS, kept beside the key and checked
against its own public key on every use) over the entries the host hands in, and signs only an
exact extension (healthid.protocol.audit.extend). So whoever can write the database cannot
rewrite history up to the last checkpoint without the enclave refusing to go on, and an
auditor holding the public key detects it.

Limits: rolling the head file back to an older checkpoint of this key (or deleting it, which
restarts from genesis) is not detected here; that needs a monotonic counter (SGX) or
checkpoints published outside the operator's reach. Several processes sharing the directory
(in-process enclaves of several host workers) serialise on an advisory file lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from healthid.enclave import api
from healthid.enclave.sealed_keys import load_or_create_key
from healthid.enclave.vault import RootKey
from healthid.keys import es256
from healthid.keys.jwk import signing_jwk
from healthid.protocol.audit import (
    GENESIS_HASH,
    TYP_AUDIT_CHECKPOINT,
    ChainError,
    Checkpoint,
    SignedCheckpoint,
    checkpoint_claims,
    checkpoint_verifier,
    extend,
)
from healthid.protocol.jose import sign_compact

KEY_FILE = "audit-key.sealed.json"
HEAD_FILE = "audit-head.jws"
LOCK_FILE = "audit.lock"
PURPOSE = "audit"  # the sealed-key label: keys wrapped for one purpose open for no other


class AuditSigner:
    """Implements :class:`healthid.enclave.api.AuditWitness` inside the enclave."""

    def __init__(
        self,
        key: ec.EllipticCurvePrivateKey,
        directory: Path,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = key
        self._jwk = signing_jwk(key.public_key())
        self._kid = self._jwk["kid"]
        self._dir = directory
        self._clock = clock
        self._verify = checkpoint_verifier({"keys": [self._jwk]})
        self._thread_lock = threading.Lock()

    @classmethod
    def load_or_create(
        cls, root: RootKey, directory: Path, *, clock: Callable[[], float] = time.time
    ) -> AuditSigner:
        """The audit key sealed under ``directory``; generated on first use."""
        key = load_or_create_key(root, PURPOSE, directory / KEY_FILE)
        signer = cls(key, directory, clock=clock)
        signer._publish()
        return signer

    def _publish(self) -> None:
        """Write the public JWK beside the key (for `healthid audit verify` in development)."""
        path = self._dir / api.AUDIT_PUBLIC_JWK_FILE
        text = json.dumps(self._jwk, indent=2) + "\n"
        if path.exists() and path.read_text() == text:
            return
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.chmod(0o644)
        tmp.replace(path)

    def public_jwk(self) -> dict[str, str]:
        """The audit key's public JWK (kid = RFC 7638 thumbprint, use sig, alg ES256)."""
        return dict(self._jwk)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # A POSIX record lock (lockf, which Gramine implements; flock it does not) serialises
        # the processes sharing the directory; the thread lock, this process's threads.
        with self._thread_lock:
            fd = os.open(self._dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # closing releases the lock

    def _read_head(self) -> SignedCheckpoint | None:
        path = self._dir / HEAD_FILE
        try:
            jws = path.read_text().strip()
        except FileNotFoundError:
            return None
        checkpoint = self._verify(jws)
        if checkpoint is None:
            raise api.EnclaveError(f"{HEAD_FILE} is not a checkpoint signed by this audit key")
        return SignedCheckpoint(checkpoint=checkpoint, jws=jws)

    def _write_head(self, signed: SignedCheckpoint) -> None:
        path = self._dir / HEAD_FILE
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(signed.jws + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)

    def head(self) -> SignedCheckpoint | None:
        """The last checkpoint this key signed (None before the first)."""
        with self._locked():
            return self._read_head()

    def sign_checkpoint(self, request: api.AuditCheckpointRequest) -> SignedCheckpoint:
        """Sign the chain head after ``request.entries`` if they extend the last checkpoint."""
        entries = request.entries
        if not entries:
            raise api.EnclaveError("a checkpoint needs at least one new audit entry")
        if len(entries) > api.MAX_AUDIT_CHECKPOINT_ENTRIES:
            raise api.EnclaveError(
                f"at most {api.MAX_AUDIT_CHECKPOINT_ENTRIES} entries per checkpoint"
            )
        with self._locked():
            last = self._read_head()
            seq, head = (
                (0, GENESIS_HASH)
                if last is None
                else (
                    last.checkpoint.seq,
                    last.checkpoint.head,
                )
            )
            try:
                seq, head = extend(seq, head, entries)
            except ChainError as exc:
                raise api.EnclaveError(
                    f"audit entries do not extend the signed chain: {exc}"
                ) from None
            now = int(self._clock())
            if last is not None:
                now = max(now, last.checkpoint.time)  # checkpoint times never go back
            checkpoint = Checkpoint(seq=seq, head=head, time=now)
            jws = sign_compact(
                checkpoint_claims(checkpoint),
                kid=self._kid,
                typ=TYP_AUDIT_CHECKPOINT,
                signer=self._sign,
            )
            signed = SignedCheckpoint(checkpoint=checkpoint, jws=jws)
            self._write_head(signed)
        return signed

    def _sign(self, kid: str, data: bytes) -> bytes:
        if kid != self._kid:
            raise api.EnclaveError("unknown audit key")
        return es256.sign(self._key, data)

    # -- api.AuditWitness ----------------------------------------------------------------
    async def audit_head(self) -> SignedCheckpoint | None:
        return self.head()

    async def sign_audit_checkpoint(self, request: api.AuditCheckpointRequest) -> SignedCheckpoint:
        return self.sign_checkpoint(request)
