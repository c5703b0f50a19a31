"""FileKeyStore: development keys as 0600 PKCS#8 PEM files in a 0700 directory."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from keys_testlib import b64u, joserfc_thumbprint, verify_es256

from healthid.keys.base import KeyNotFound, KeyStoreError, SigningKeyStore
from healthid.keys.file import MARKER_NAME, FileKeyStore


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _put(directory: Path, name: str, data: bytes, mode: int = 0o600) -> Path:
    path = directory / name
    path.write_bytes(data)
    path.chmod(mode)
    return path


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    return tmp_path / "keys"


@pytest.fixture
def store(key_dir: Path) -> FileKeyStore:
    return FileKeyStore(key_dir)


def test_file_store_satisfies_the_port(store: FileKeyStore) -> None:
    port: SigningKeyStore = store
    assert port.backend == "file"


def test_file_store_signature_verifies_with_cryptography(store: FileKeyStore) -> None:
    info = store.generate("federation")
    signature = store.sign(info.kid, b"entity statement")
    assert len(signature) == 64
    assert verify_es256(dict(info.public_jwk), b"entity statement", signature)
    assert not verify_es256(dict(info.public_jwk), b"entity statemenT", signature)


def test_file_store_kid_is_rfc7638_thumbprint(store: FileKeyStore) -> None:
    info = store.generate("federation")
    jwk = store.public_jwk(info.kid)
    assert jwk == dict(info.public_jwk)
    assert jwk["kid"] == info.kid == joserfc_thumbprint(jwk)
    assert (jwk["kty"], jwk["crv"], jwk["alg"], jwk["use"]) == ("EC", "P-256", "ES256", "sig")
    assert "d" not in jwk
    assert info.purpose == "federation"
    assert info.backend == "file"


def test_file_store_kids_are_unique_and_listed(store: FileKeyStore) -> None:
    kids = [store.generate("federation").kid for _ in range(5)]
    assert len(set(kids)) == 5
    assert store.list_kids() == sorted(kids)


def test_file_store_creates_private_directory_files_and_insecure_marker(
    store: FileKeyStore, key_dir: Path
) -> None:
    info = store.generate("federation")
    assert _mode(key_dir) == 0o700
    assert _mode(key_dir / f"{info.kid}.pem") == 0o600
    marker = (key_dir / MARKER_NAME).read_text()
    assert "INSECURE" in marker
    assert "DEVELOPMENT" in marker
    pem = (key_dir / f"{info.kid}.pem").read_bytes()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8


def test_file_store_keeps_modes_under_a_permissive_umask(key_dir: Path) -> None:
    old = os.umask(0)
    try:
        store = FileKeyStore(key_dir)
        info = store.generate("federation")
    finally:
        os.umask(old)
    assert _mode(key_dir) == 0o700
    assert _mode(key_dir / f"{info.kid}.pem") == 0o600


def test_file_store_signs_with_the_rfc7515_a3_key(
    key_dir: Path, rfc7515_a3: dict[str, Any]
) -> None:
    store = FileKeyStore(key_dir)
    d = int.from_bytes(b64u(rfc7515_a3["jwk"]["d"]), "big")
    key = ec.derive_private_key(d, ec.SECP256R1())
    kid = rfc7515_a3["thumbprint"]
    _put(key_dir, f"{kid}.pem", _pem(key))
    jwk = store.public_jwk(kid)
    assert (jwk["x"], jwk["y"]) == (rfc7515_a3["jwk"]["x"], rfc7515_a3["jwk"]["y"])
    data = rfc7515_a3["signing_input"].encode("ascii")
    assert verify_es256(jwk, data, store.sign(kid, data))


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o602, 0o644, 0o660])
def test_file_store_refuses_group_or_world_accessible_key(
    store: FileKeyStore, key_dir: Path, mode: int
) -> None:
    info = store.generate("federation")
    (key_dir / f"{info.kid}.pem").chmod(mode)
    with pytest.raises(KeyStoreError, match="group or others"):
        store.sign(info.kid, b"data")
    with pytest.raises(KeyStoreError, match="group or others"):
        store.public_jwk(info.kid)


def test_file_store_refuses_group_accessible_directory(key_dir: Path) -> None:
    key_dir.mkdir(mode=0o750)
    key_dir.chmod(0o750)
    with pytest.raises(KeyStoreError, match="group or others"):
        FileKeyStore(key_dir)


def test_file_store_refuses_symlinked_key(
    store: FileKeyStore, key_dir: Path, tmp_path: Path
) -> None:
    target = _put(tmp_path, "elsewhere.pem", _pem(ec.generate_private_key(ec.SECP256R1())))
    info = store.generate("federation")
    path = key_dir / f"{info.kid}.pem"
    path.unlink()
    path.symlink_to(target)
    with pytest.raises(KeyStoreError, match="safely"):
        store.sign(info.kid, b"data")


def test_file_store_refuses_key_file_renamed_to_another_kid(
    store: FileKeyStore, key_dir: Path
) -> None:
    first = store.generate("federation")
    second = store.generate("federation")
    (key_dir / f"{first.kid}.pem").replace(key_dir / f"{second.kid}.pem")
    with pytest.raises(KeyStoreError, match="another thumbprint"):
        store.sign(second.kid, b"data")


def test_file_store_refuses_p384_key(store: FileKeyStore, key_dir: Path) -> None:
    kid = "A" * 43
    _put(key_dir, f"{kid}.pem", _pem(ec.generate_private_key(ec.SECP384R1())))
    with pytest.raises(KeyStoreError, match="P-256"):
        store.sign(kid, b"data")


def test_file_store_refuses_oversized_key_file(store: FileKeyStore, key_dir: Path) -> None:
    kid = "B" * 43
    _put(key_dir, f"{kid}.pem", b"-" * 5000)
    with pytest.raises(KeyStoreError, match="too large"):
        store.sign(kid, b"data")


def test_file_store_rejects_path_traversal_kid(store: FileKeyStore) -> None:
    with pytest.raises(KeyNotFound):
        store.sign("../../../../etc/ssl/private/key", b"data")


def test_file_store_unknown_kid_is_key_not_found(store: FileKeyStore) -> None:
    with pytest.raises(KeyNotFound):
        store.sign("C" * 43, b"data")


def test_file_store_delete_destroys_the_key(store: FileKeyStore) -> None:
    info = store.generate("federation")
    store.delete(info.kid)
    assert store.list_kids() == []
    with pytest.raises(KeyNotFound):
        store.sign(info.kid, b"data")
    with pytest.raises(KeyNotFound):
        store.delete(info.kid)


def test_file_store_reopens_existing_directory(store: FileKeyStore, key_dir: Path) -> None:
    info = store.generate("federation")
    again = FileKeyStore(key_dir)
    assert again.list_kids() == [info.kid]
    assert verify_es256(dict(info.public_jwk), b"x", again.sign(info.kid, b"x"))


def test_file_store_rejects_invalid_purpose(store: FileKeyStore) -> None:
    with pytest.raises(ValueError, match="purpose"):
        store.generate("../federation")


# -- a key already in use: the file is checked again on every use ----------------------------
@pytest.fixture
def in_use(store: FileKeyStore) -> str:
    """A key that has signed once (parsed and cached)."""
    kid = store.generate("federation").kid
    store.sign(kid, b"warm")
    return kid


def test_file_store_in_use_refuses_a_key_made_group_readable(
    store: FileKeyStore, key_dir: Path, in_use: str
) -> None:
    (key_dir / f"{in_use}.pem").chmod(0o640)
    with pytest.raises(KeyStoreError, match="group or others"):
        store.sign(in_use, b"data")


def test_file_store_in_use_refuses_a_key_swapped_for_a_symlink(
    store: FileKeyStore, key_dir: Path, tmp_path: Path, in_use: str
) -> None:
    path = key_dir / f"{in_use}.pem"
    target = _put(tmp_path, "elsewhere.pem", path.read_bytes())  # even the same key
    path.unlink()
    path.symlink_to(target)
    with pytest.raises(KeyStoreError, match="safely"):
        store.sign(in_use, b"data")


def test_file_store_in_use_refuses_another_key_renamed_over_it(
    store: FileKeyStore, key_dir: Path, in_use: str
) -> None:
    other = store.generate("federation")
    (key_dir / f"{other.kid}.pem").replace(key_dir / f"{in_use}.pem")
    with pytest.raises(KeyStoreError, match="another thumbprint"):
        store.sign(in_use, b"data")


def test_file_store_in_use_refuses_a_key_rewritten_in_place(
    store: FileKeyStore, key_dir: Path, in_use: str
) -> None:
    path = key_dir / f"{in_use}.pem"
    before = os.stat(path)
    replacement = _pem(ec.generate_private_key(ec.SECP256R1()))
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)  # the same inode, new bytes
    try:
        os.write(fd, replacement)
    finally:
        os.close(fd)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # even with the old mtime
    with pytest.raises(KeyStoreError, match="another thumbprint"):
        store.sign(in_use, b"data")


def test_file_store_in_use_forgets_a_deleted_key_file(
    store: FileKeyStore, key_dir: Path, in_use: str
) -> None:
    (key_dir / f"{in_use}.pem").unlink()
    with pytest.raises(KeyNotFound):
        store.sign(in_use, b"data")


def test_file_store_in_use_signs_again_after_its_file_was_restored(
    store: FileKeyStore, key_dir: Path, in_use: str
) -> None:
    path = key_dir / f"{in_use}.pem"
    path.chmod(0o644)
    with pytest.raises(KeyStoreError):
        store.sign(in_use, b"data")
    path.chmod(0o600)
    assert verify_es256(store.public_jwk(in_use), b"data", store.sign(in_use, b"data"))
