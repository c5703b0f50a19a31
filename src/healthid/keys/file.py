"""Development key store: one unencrypted PKCS#8 PEM file per key. INSECURE by design.

Private keys lie on disk in plaintext, protected only by file permissions (directory 0700,
files 0600, owned by this user). A key file that the group or others may access, that is a
symlink, or whose key does not match the kid in its name is refused. Production mode refuses
``key_backend=file`` (settings.py, CONVENTIONS.md rule 7).
"""

from __future__ import annotations

import hmac
import os
import stat
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from healthid.keys.base import (
    KeyInfo,
    KeyNotFound,
    KeyStoreError,
    check_kid,
    check_purpose,
    is_kid,
)
from healthid.keys.es256 import jose_from_der
from healthid.keys.jwk import signing_jwk, thumbprint

DIR_MODE: Final = 0o700
FILE_MODE: Final = 0o600
# Any permission bit for group or others makes a directory or key file unacceptable.
_GROUP_OTHER_BITS: Final = 0o077
KEY_SUFFIX: Final = ".pem"
# A P-256 PKCS#8 PEM is about 240 bytes; anything much larger is not one of our keys.
MAX_KEY_FILE_LEN: Final = 4096
MARKER_NAME: Final = "README-INSECURE-DEVELOPMENT-KEYS.txt"
MARKER_TEXT: Final = (
    "INSECURE: these are DEVELOPMENT signing keys (healthid key_backend=file).\n"
    "The private keys in this directory are stored UNENCRYPTED (PKCS#8 PEM). Anyone who can\n"
    "read them can sign as this identity provider. Never use them in production; production\n"
    "keys live in an HSM (key_backend=pkcs11).\n"
)
_OPEN_NEW: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_OPEN_READ: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


def _write_private(path: Path, data: bytes) -> None:
    """Create ``path`` (must not exist) with mode 0600 and ``data``, flushed to disk."""
    fd = os.open(path, _OPEN_NEW, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # the umask may only remove bits; make the mode exact
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_private_stat(st: os.stat_result, what: str) -> None:
    if st.st_uid != os.geteuid():
        raise KeyStoreError(f"{what} is not owned by this user")
    if stat.S_IMODE(st.st_mode) & _GROUP_OTHER_BITS:
        raise KeyStoreError(
            f"{what} is accessible to group or others (mode {stat.S_IMODE(st.st_mode):o}); "
            "refusing to use it (chmod go-rwx)"
        )


def _identity(st: os.stat_result) -> tuple[int, ...]:
    """What changes whenever a file is replaced, rewritten, renamed over, re-owned or
    re-moded: the inode, and the change time (ctime, which no unprivileged call can set back)
    together with the modification time, size and mode."""
    return (st.st_dev, st.st_ino, st.st_ctime_ns, st.st_mtime_ns, st.st_size, st.st_mode)


class FileKeyStore:
    """ES256 keys as PKCS#8 PEM files ``<kid>.pem`` in ``directory``. Development only."""

    backend: Final = "file"

    def __init__(self, directory: Path) -> None:
        self._dir = directory
        # kid -> (its file, the identity of the file when read, its bytes, the parsed key)
        self._parsed: dict[str, tuple[str, tuple[int, ...], bytes, ec.EllipticCurvePrivateKey]] = {}
        self._prepare_directory()

    def __repr__(self) -> str:
        return f"FileKeyStore(directory={str(self._dir)!r})"

    def _prepare_directory(self) -> None:
        if not self._dir.exists():
            self._dir.mkdir(mode=DIR_MODE, parents=True)
            self._dir.chmod(DIR_MODE)
        st = os.lstat(self._dir)
        if not stat.S_ISDIR(st.st_mode):
            raise KeyStoreError(f"key directory {self._dir} is not a directory")
        _check_private_stat(st, f"key directory {self._dir}")
        try:
            _write_private(self._dir / MARKER_NAME, MARKER_TEXT.encode("utf-8"))
        except FileExistsError:
            pass

    def _path(self, kid: str) -> Path:
        return self._dir / f"{check_kid(kid)}{KEY_SUFFIX}"

    def _read_key_file(self, kid: str) -> tuple[bytes, os.stat_result]:
        """The key file's bytes and the status of the very file they were read from."""
        path = self._path(kid)
        try:
            fd = os.open(path, _OPEN_READ)
        except FileNotFoundError:
            raise KeyNotFound(f"no key {kid}") from None
        except OSError as exc:  # ELOOP: the name is a symlink
            raise KeyStoreError(f"key file {path.name} cannot be opened safely") from exc
        try:
            st = os.fstat(fd)  # the opened file itself: no race with a rename
            if not stat.S_ISREG(st.st_mode):
                raise KeyStoreError(f"key file {path.name} is not a regular file")
            _check_private_stat(st, f"key file {path.name}")
            data = os.read(fd, MAX_KEY_FILE_LEN + 1)
        finally:
            os.close(fd)
        if len(data) > MAX_KEY_FILE_LEN:
            raise KeyStoreError(f"key file {path.name} is too large")
        return data, st

    def _load(self, kid: str) -> ec.EllipticCurvePrivateKey:
        """The parsed key. On every use the key file's status is read again (one ``lstat``,
        not following a symlink) and its owner and permissions are checked; the file is
        opened and read again only when it is no longer the file the key was read from
        (:func:`_identity`), and parsed again only when its bytes changed."""
        cached = self._parsed.get(kid)
        if cached is not None:
            path, identity, data, key = cached
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                raise KeyNotFound(f"no key {kid}") from None
            if stat.S_ISREG(st.st_mode) and identity == _identity(st):
                _check_private_stat(st, f"key file {kid}{KEY_SUFFIX}")
                return key
        data, opened = self._read_key_file(kid)
        if cached is not None and hmac.compare_digest(cached[2], data):
            key = cached[3]
        else:
            key = self._parse(kid, data)
        self._parsed[kid] = (str(self._path(kid)), _identity(opened), data, key)
        return key

    def _parse(self, kid: str, data: bytes) -> ec.EllipticCurvePrivateKey:
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise KeyStoreError(f"key file for {kid} is not an unencrypted PKCS#8 PEM") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise KeyStoreError(f"key file for {kid} is not an EC key")
        if not isinstance(key.curve, ec.SECP256R1):
            raise KeyStoreError(f"key file for {kid} is not a P-256 key")
        # RFC 7638: the kid is checkable; a file renamed to another kid is refused.
        actual = thumbprint(signing_jwk(key.public_key()))
        if not hmac.compare_digest(actual, kid):
            raise KeyStoreError(f"key file for {kid} holds a key with another thumbprint")
        return key

    def generate(self, purpose: str) -> KeyInfo:
        """Generate a P-256 key and store it as ``<kid>.pem`` (mode 0600)."""
        check_purpose(purpose)
        key = ec.generate_private_key(ec.SECP256R1())
        jwk = signing_jwk(key.public_key())
        kid = jwk["kid"]
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        tmp = self._dir / f".{kid}.tmp"
        _write_private(tmp, pem)
        try:
            os.link(tmp, self._path(kid))  # never replaces an existing key file
        finally:
            tmp.unlink()
        return KeyInfo(kid=kid, purpose=purpose, backend=self.backend, public_jwk=jwk)

    def sign(self, kid: str, data: bytes) -> bytes:
        """RFC 7518 §3.4: ECDSA P-256 over SHA-256(data), returned as raw R || S."""
        der = self._load(kid).sign(data, ec.ECDSA(hashes.SHA256()))
        return jose_from_der(der)

    def public_jwk(self, kid: str) -> dict[str, str]:
        return signing_jwk(self._load(kid).public_key())

    def list_kids(self) -> list[str]:
        return sorted(
            p.name.removesuffix(KEY_SUFFIX)
            for p in self._dir.iterdir()
            if p.name.endswith(KEY_SUFFIX) and is_kid(p.name.removesuffix(KEY_SUFFIX))
        )

    def delete(self, kid: str) -> None:
        self._parsed.pop(kid, None)
        try:
            self._path(kid).unlink()
        except FileNotFoundError:
            raise KeyNotFound(f"no key {kid}") from None
