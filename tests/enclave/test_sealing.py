"""Sealing the root key: the insecure development file and Gramine's _sgx_mrenclave encrypted
mount (against a fake /dev/attestation: no SGX here), and how the runtime picks one."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from healthid.enclave.sealing import (
    GRAMINE_SEALING,
    GramineSealer,
    SealingError,
    SimulatedFileSealer,
)
from healthid.enclave.vault import RootKey
from healthid.enclave_runtime import (
    ROOT_KEY_FILE,
    StartupError,
    build_enclave,
    enclave_evidence,
    key_release_policy,
    root_key_sealer,
)
from healthid.settings import Settings, TeeKind, load_settings


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in list(os.environ):
        if name.startswith("HEALTHID_"):
            monkeypatch.delenv(name)
    return load_settings(mode="development", data_dir=tmp_path / "data", enclave_workers=1)


def fake_gramine(tmp_path: Path, kind: str = "dcap") -> Path:
    directory = tmp_path / "attestation"
    directory.mkdir()
    (directory / "attestation_type").write_text(kind)
    return directory


# -- development ----------------------------------------------------------------------------
def test_a_released_root_key_is_sealed_and_loaded_back(tmp_path: Path) -> None:
    root = RootKey.from_secret(os.urandom(32))
    sealer = SimulatedFileSealer(tmp_path / "enclave" / "root.json")
    assert not sealer.exists()
    sealer.seal(root)
    assert sealer.exists() and sealer.load().secret == root.secret
    assert stat.S_IMODE(sealer.path.stat().st_mode) == 0o600
    assert "INSECURE" in sealer.path.read_text()


def test_sealing_never_overwrites_a_root_key(tmp_path: Path) -> None:
    sealer = SimulatedFileSealer(tmp_path / "root.json")
    first = sealer.load_or_create()
    with pytest.raises(SealingError, match="already holds a root key"):
        sealer.seal(RootKey.from_secret(os.urandom(32)))
    assert sealer.load().key_id == first.key_id


# -- Gramine-SGX ----------------------------------------------------------------------------
def test_gramine_sealer_writes_the_root_key_to_the_encrypted_mount(tmp_path: Path) -> None:
    sealer = GramineSealer(
        tmp_path / "sealed-root" / "root.json", attestation_dir=fake_gramine(tmp_path)
    )
    root = sealer.load_or_create()
    assert sealer.exists()
    assert sealer.load().secret == root.secret
    again = GramineSealer(sealer.path, attestation_dir=tmp_path / "attestation").load_or_create()
    assert again.key_id == root.key_id
    doc = json.loads(sealer.path.read_text())  # Gramine encrypts it; here it is a plain file
    assert doc["tee"] == "sgx" and doc["sealing"] == GRAMINE_SEALING == (
        "gramine-encrypted-fs/_sgx_mrenclave"
    )
    assert "INSECURE" not in sealer.path.read_text()


def test_gramine_sealer_refuses_to_run_outside_gramine(tmp_path: Path) -> None:
    sealer = GramineSealer(tmp_path / "root.json", attestation_dir=tmp_path / "missing")
    with pytest.raises(SealingError, match="not running under Gramine-SGX"):
        sealer.load_or_create()
    with pytest.raises(SealingError, match="not running under Gramine-SGX"):
        sealer.seal(RootKey.from_secret(os.urandom(32)))
    assert not sealer.path.exists()


@pytest.mark.parametrize("kind", ["none", "epid", ""])
def test_gramine_sealer_needs_sgx_with_dcap(tmp_path: Path, kind: str) -> None:
    sealer = GramineSealer(tmp_path / "root.json", attestation_dir=fake_gramine(tmp_path, kind))
    with pytest.raises(SealingError, match="dcap"):
        sealer.exists()


def test_gramine_sealer_refuses_a_file_it_cannot_use(tmp_path: Path) -> None:
    sealer = GramineSealer(tmp_path / "root.json", attestation_dir=fake_gramine(tmp_path))
    sealer.load_or_create()
    sealer.path.write_bytes(b"\xff" * 100)
    with pytest.raises(SealingError, match="not a valid root key file"):
        sealer.load()
    sealer.path.unlink()
    sealer.path.mkdir()  # open() fails as Gramine's does for another build's sealed file
    with pytest.raises(SealingError, match="another enclave build"):
        sealer.load()


# -- what the runtime picks -------------------------------------------------------------------
def test_development_seals_to_the_insecure_file(settings: Settings) -> None:
    sealer = root_key_sealer(settings)
    assert isinstance(sealer, SimulatedFileSealer) and sealer.path.name == ROOT_KEY_FILE


def test_sgx_seals_to_gramine_and_refuses_to_start_outside_it(settings: Settings) -> None:
    sgx = settings.model_copy(update={"tee": TeeKind.SGX})
    assert isinstance(root_key_sealer(sgx), GramineSealer)
    with pytest.raises(StartupError, match="tee=sgx"):
        enclave_evidence(sgx)
    with pytest.raises(StartupError, match="tee=sgx"):
        build_enclave(sgx)
    assert not settings.data_dir.exists()  # nothing was created


def test_a_bad_simulated_measurement_refuses_to_start(settings: Settings) -> None:
    bad = settings.model_copy(update={"simulated_measurement": {"mrenclave": "xyz"}})
    with pytest.raises(StartupError, match="HEALTHID_SIMULATED_MEASUREMENT"):
        enclave_evidence(bad)
    unknown = settings.model_copy(update={"simulated_measurement": {"mrenclav": "ab" * 32}})
    with pytest.raises(StartupError, match="unknown"):
        enclave_evidence(unknown)


def test_a_bad_release_policy_refuses_to_start(settings: Settings, tmp_path: Path) -> None:
    assert key_release_policy(settings) is None
    missing = settings.model_copy(update={"key_release_policy": tmp_path / "nope.json"})
    with pytest.raises(StartupError, match="HEALTHID_KEY_RELEASE_POLICY"):
        key_release_policy(missing)
    (tmp_path / "p.json").write_text(json.dumps({"mrenclave": ["ab" * 32], "debug": False}))
    typo = settings.model_copy(update={"key_release_policy": tmp_path / "p.json"})
    with pytest.raises(StartupError, match="unknown policy members"):
        key_release_policy(typo)


def test_production_refuses_a_simulated_measurement(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("HEALTHID_"):
            monkeypatch.delenv(name)
    problems = Settings(mode="production", simulated_measurement={"debug": True})
    assert "HEALTHID_SIMULATED_MEASUREMENT is for tee=simulated only" in (
        problems.production_problems()
    )
