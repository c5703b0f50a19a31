from pathlib import Path

import pytest

from healthid.settings import KeyBackend, Mode, SettingsError, TeeKind, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("HEALTHID_"):
            monkeypatch.delenv(name)


def test_development_defaults_are_the_embedded_stack() -> None:
    s = load_settings()
    assert s.mode is Mode.DEVELOPMENT and s.tee is TeeKind.SIMULATED
    assert s.key_backend is KeyBackend.FILE and s.redis_url is None
    assert s.sql_url.startswith("sqlite+aiosqlite:///")


def test_environment_overrides_toml_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "healthid.toml"
    cfg.write_text('listen_port = 9000\npublic_url = "http://toml.example"\n')
    monkeypatch.setenv("HEALTHID_CONFIG", str(cfg))
    monkeypatch.setenv("HEALTHID_LISTEN_PORT", "9100")
    s = load_settings()
    assert s.listen_port == 9100 and s.public_url == "http://toml.example"


def test_plain_postgres_url_is_mapped_to_asyncpg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEALTHID_DATABASE_URL", "postgresql://u@127.0.0.1/db")
    assert load_settings().sql_url == "postgresql+asyncpg://u@127.0.0.1/db"


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"HEALTHID_LISTEN_PORT": "0"}, "LISTEN_PORT"),
        ({"HEALTHID_DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
        ({"HEALTHID_REDIS_URL": "http://x"}, "REDIS_URL"),
        ({"HEALTHID_TEE": "trustme"}, "TEE"),
        ({"HEALTHID_MODE": "yolo"}, "MODE"),
    ],
)
def test_invalid_values_are_refused_with_the_variable_named(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], needle: str
) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SettingsError, match=needle):
        load_settings()


def test_unknown_toml_setting_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("lisen_port = 1\n")
    monkeypatch.setenv("HEALTHID_CONFIG", str(cfg))
    with pytest.raises(SettingsError, match="lisen_port"):
        load_settings()


def test_missing_or_broken_toml_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEALTHID_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings()
    bad = tmp_path / "bad.toml"
    bad.write_text("x = = 1")
    monkeypatch.setenv("HEALTHID_CONFIG", str(bad))
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings()


def test_production_refuses_simulated_tee_file_keys_and_unpinned_fedmaster(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HEALTHID_MODE", "production")
    with pytest.raises(SettingsError) as info:
        load_settings()
    text = "\n".join(info.value.problems)
    for needle in (
        "TEE=simulated",
        "KEY_BACKEND=file",
        "FEDMASTER_JWKS_FILE",
        "FEDMASTER_URL",
        "DATABASE_URL",
        "REDIS_URL",
        "PUBLIC_URL",
    ):
        assert needle in text


def test_production_accepts_a_complete_secure_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jwks = tmp_path / "fedmaster.jwks.json"
    jwks.write_text('{"keys": []}')
    env = {
        "HEALTHID_MODE": "production",
        "HEALTHID_TEE": "sgx",
        "HEALTHID_KEY_BACKEND": "pkcs11",
        "HEALTHID_PKCS11_MODULE": "/usr/lib/softhsm/libsofthsm2.so",
        "HEALTHID_PKCS11_TOKEN_LABEL": "idp",
        "HEALTHID_PKCS11_PIN": "1234",
        "HEALTHID_FEDMASTER_URL": "https://app-test.federationmaster.de",
        "HEALTHID_FEDMASTER_JWKS_FILE": str(jwks),
        "HEALTHID_DATABASE_URL": "postgresql://idp@db/healthid",
        "HEALTHID_REDIS_URL": "redis://cache:6379/0",
        "HEALTHID_PUBLIC_URL": "https://idp.example",
        "HEALTHID_EID_SERVER_URL": "https://eid.example/eID",
        "HEALTHID_ANDROID_PACKAGE_NAMES": '["de.kasse.app"]',
        "HEALTHID_ANDROID_SIGNING_CERT_DIGESTS": '["' + "ab" * 32 + '"]',
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s = load_settings()
    assert s.mode is Mode.PRODUCTION
    assert "1234" not in repr(s)
    from healthid.runtime import attestation_policy

    policy = attestation_policy(s)
    assert policy.android is not None and policy.apple is None and not policy.allow_software
