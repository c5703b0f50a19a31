import os
import stat
from pathlib import Path

import pytest

from healthid.enclave.sealing import SealingError, SimulatedFileSealer
from healthid.enclave.vault import (
    RecordIntegrityError,
    RootKey,
    Vault,
    WrappedKey,
    WrongRootKeyError,
)


@pytest.fixture
def vault() -> Vault:
    return Vault(RootKey.from_secret(os.urandom(32)))


def _sealed(vault: Vault, pseudonym: str, plaintext: bytes) -> tuple[bytes, bytes]:
    key = vault.new_data_key()
    blob = vault.seal(
        key, pseudonym=pseudonym, record_type="master_data", version=1, plaintext=plaintext
    )
    return key, blob


def test_record_round_trips_under_its_owner_type_and_version(vault: Vault) -> None:
    key, blob = _sealed(vault, "p1", b"Erika Mustermann")
    assert b"Erika" not in blob
    assert (
        vault.open(key, pseudonym="p1", record_type="master_data", version=1, blob=blob)
        == b"Erika Mustermann"
    )


@pytest.mark.parametrize(
    ("pseudonym", "record_type", "version"),
    [("p2", "master_data", 1), ("p1", "history", 1), ("p1", "master_data", 2)],
)
def test_record_refuses_other_owner_type_or_version(
    vault: Vault, pseudonym: str, record_type: str, version: int
) -> None:
    key, blob = _sealed(vault, "p1", b"secret")
    with pytest.raises(RecordIntegrityError):
        vault.open(key, pseudonym=pseudonym, record_type=record_type, version=version, blob=blob)


def test_record_refuses_tampered_ciphertext(vault: Vault) -> None:
    key, blob = _sealed(vault, "p1", b"secret")
    for i in (0, 1, len(blob) - 1):
        bad = bytearray(blob)
        bad[i] ^= 1
        with pytest.raises(RecordIntegrityError):
            vault.open(key, pseudonym="p1", record_type="master_data", version=1, blob=bytes(bad))


def test_wrapped_key_refuses_other_pseudonym(vault: Vault) -> None:
    data_key = vault.new_data_key()
    wrapped = vault.wrap("p1", data_key)
    assert vault.unwrap("p1", wrapped) == data_key
    assert data_key not in wrapped.blob
    with pytest.raises(RecordIntegrityError):
        vault.unwrap("p2", wrapped)


def test_wrapped_key_refuses_other_root_key(vault: Vault) -> None:
    other = Vault(RootKey.from_secret(os.urandom(32)))
    wrapped = other.wrap("p1", other.new_data_key())
    with pytest.raises(WrongRootKeyError):
        vault.unwrap("p1", wrapped)
    relabelled = WrappedKey(root_key_id=vault.root_key_id, blob=wrapped.blob)
    with pytest.raises(RecordIntegrityError):
        vault.unwrap("p1", relabelled)


def test_blind_index_is_keyed_deterministic_and_separated_by_kind(vault: Vault) -> None:
    a = vault.blind_index("kvnr", "X110411675")
    assert a == vault.blind_index("kvnr", "X110411675")
    assert a != vault.blind_index("name_birth", "X110411675")
    assert a != Vault(RootKey.from_secret(os.urandom(32))).blind_index("kvnr", "X110411675")
    assert len(a) == 32


def test_pseudonyms_are_random_not_derived(vault: Vault) -> None:
    seen = {vault.new_pseudonym() for _ in range(1000)}
    assert len(seen) == 1000
    assert all(len(p) == 32 for p in seen)


def test_root_key_repr_hides_the_secret() -> None:
    secret = os.urandom(32)
    assert secret.hex() not in repr(RootKey.from_secret(secret))


def test_simulated_sealer_persists_root_key_marked_insecure(tmp_path: Path) -> None:
    path = tmp_path / "enclave" / "root.json"
    first = SimulatedFileSealer(path).load_or_create()
    again = SimulatedFileSealer(path).load_or_create()
    assert first.key_id == again.key_id and first.secret == again.secret
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    doc = path.read_text()
    assert '"tee": "simulated"' in doc and "INSECURE" in doc


def test_simulated_sealer_refuses_group_readable_file(tmp_path: Path) -> None:
    path = tmp_path / "root.json"
    SimulatedFileSealer(path).load_or_create()
    path.chmod(0o644)
    with pytest.raises(SealingError, match="readable by others"):
        SimulatedFileSealer(path).load_or_create()


def test_simulated_sealer_refuses_corrupted_file(tmp_path: Path) -> None:
    path = tmp_path / "root.json"
    SimulatedFileSealer(path).load_or_create()
    path.write_text(path.read_text().replace('"root_key_id": "', '"root_key_id": "00'))
    with pytest.raises(SealingError):
        SimulatedFileSealer(path).load_or_create()
