"""Private keys generated inside the enclave and stored only wrapped under the root key.

Each key lives in a JSON file under the enclave directory: its P-256 scalar AES-256-GCM
wrapped under a key derived (HKDF, one label per purpose) from the enclave root key, with the
root key id and the key's RFC 7638 thumbprint as associated data. The file is created once,
complete (written aside, then linked into place, so concurrent first starts agree on one key),
mode 0600; a file readable by others, sealed under another root key, or not matching its
recorded key id is refused.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import time
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from healthid.enclave.sealing import SealingError
from healthid.enclave.vault import RootKey
from healthid.keys.jwk import signing_jwk

KEY_FORMAT: Final = 1
SCALAR_LEN: Final = 32  # P-256 private scalar
NONCE_LEN: Final = 12
SETTLE_ATTEMPTS: Final = 40  # x SETTLE_PAUSE: how long a half-written key file is waited for
SETTLE_PAUSE: Final = 0.05


def _kek(root: RootKey, purpose: str) -> AESGCM:
    info = f"healthid/v1/{purpose}-key-wrap".encode("ascii")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info)
    return AESGCM(hkdf.derive(root.secret))


def _aad(root: RootKey, purpose: str, kid: str) -> bytes:
    label = f"healthid/{purpose}-key/v1".encode("ascii")
    return b"|".join((label, root.key_id.encode("ascii"), kid.encode("ascii")))


def write_new(path: Path, text: str, mode: int) -> bool:
    """Create ``path`` with ``text``; False if another process created it first.

    Exclusive create (O_EXCL) rather than write-aside-and-link: Gramine implements no link().
    A reader racing the creator may see the file before it is complete: :func:`read_settled`.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        return False
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return True


def read_settled(path: Path, *, attempts: int = SETTLE_ATTEMPTS) -> str:
    """The text of a file another process may just be writing (see :func:`write_new`): read
    again, briefly, while it is not yet a complete JSON document."""
    for _ in range(attempts - 1):
        text = path.read_text()
        try:
            json.loads(text)
        except ValueError:
            time.sleep(SETTLE_PAUSE)
            continue
        return text
    return path.read_text()


def seal_key(root: RootKey, purpose: str, key: ec.EllipticCurvePrivateKey) -> str:
    """The sealed-key file's text for ``key``."""
    kid = signing_jwk(key.public_key())["kid"]
    scalar = key.private_numbers().private_value.to_bytes(SCALAR_LEN, "big")
    nonce = os.urandom(NONCE_LEN)
    blob = nonce + _kek(root, purpose).encrypt(nonce, scalar, _aad(root, purpose, kid))
    doc = {
        "format": KEY_FORMAT,
        "root_key_id": root.key_id,
        "kid": kid,
        "wrapped": base64.b64encode(blob).decode("ascii"),
    }
    return json.dumps(doc, indent=2)


def unseal_key(root: RootKey, purpose: str, path: Path) -> ec.EllipticCurvePrivateKey:
    """The key in the sealed-key file ``path`` (SealingError if it is not a valid one)."""
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SealingError(f"{path} is readable by others; chmod 600 it")
    try:
        doc = json.loads(read_settled(path))
        kid = str(doc["kid"])
        blob = base64.b64decode(doc["wrapped"], validate=True)
        if doc.get("format") != KEY_FORMAT or doc.get("root_key_id") != root.key_id:
            raise SealingError(f"{path} was sealed under another root key or format")
        scalar = _kek(root, purpose).decrypt(
            blob[:NONCE_LEN], blob[NONCE_LEN:], _aad(root, purpose, kid)
        )
        key = ec.derive_private_key(int.from_bytes(scalar, "big"), ec.SECP256R1())
    except (ValueError, KeyError, TypeError, InvalidTag) as exc:
        raise SealingError(f"{path} is not a valid sealed {purpose} key") from exc
    if signing_jwk(key.public_key())["kid"] != kid:
        raise SealingError(f"{path} does not match its recorded key id")
    return key


def load_or_create_key(root: RootKey, purpose: str, path: Path) -> ec.EllipticCurvePrivateKey:
    """The ``purpose`` key sealed at ``path``; generated (and sealed) on first use."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        key = ec.generate_private_key(ec.SECP256R1())
        if write_new(path, seal_key(root, purpose, key), 0o600):
            return key
    return unseal_key(root, purpose, path)
