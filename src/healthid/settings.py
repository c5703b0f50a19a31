"""One typed settings object, read once at start-up.

Sources, highest priority first: ``HEALTHID_*`` environment variables, then the TOML file
named by ``HEALTHID_CONFIG`` (if any), then the embedded defaults. The object is validated as a
whole: production mode refuses every setting that would void the operator-exclusion promise
(simulated TEE, file keys, missing pinned federation master key, in-memory shared state), and
names each problem (CONVENTIONS.md rule 7).
"""

from __future__ import annotations

import os
import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

CONFIG_ENV = "HEALTHID_CONFIG"
DEFAULT_DATA_DIR = Path(".healthid")


class Mode(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class TeeKind(StrEnum):
    SIMULATED = "simulated"
    SGX = "sgx"


class KeyBackend(StrEnum):
    FILE = "file"
    PKCS11 = "pkcs11"


class SettingsError(Exception):
    """The configuration cannot be used; ``problems`` lists every reason."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"- {p}" for p in problems))


class _TomlFileSource(PydanticBaseSettingsSource):
    """Reads the optional TOML file named by ``HEALTHID_CONFIG``."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self._data: dict[str, Any] = {}
        if path is not None:
            try:
                with path.open("rb") as fh:
                    self._data = tomllib.load(fh)
            except FileNotFoundError as exc:
                raise SettingsError([f"{CONFIG_ENV}: file {path} does not exist"]) from exc
            except tomllib.TOMLDecodeError as exc:
                raise SettingsError([f"{CONFIG_ENV}: {path} is not valid TOML: {exc}"]) from exc

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        known = set(self.settings_cls.model_fields)
        unknown = sorted(set(self._data) - known)
        if unknown:
            raise SettingsError([f"{CONFIG_ENV}: unknown setting(s) {', '.join(unknown)}"])
        return dict(self._data)


class Settings(BaseSettings):
    """Every setting of a healthid process. Field ``x`` is env ``HEALTHID_X`` or TOML key ``x``."""

    model_config = SettingsConfigDict(env_prefix="HEALTHID_", extra="forbid", frozen=True)

    mode: Mode = Mode.DEVELOPMENT
    data_dir: Path = DEFAULT_DATA_DIR
    # SQL: SQLite file under data_dir unless a URL is given (postgresql+asyncpg://...).
    database_url: str | None = None
    # PostgreSQL connections each process (worker) keeps open; requests wait for a free one
    # rather than opening more (no connect per request under load). Workers x this must stay
    # below the server's max_connections (PostgreSQL's default: 100).
    database_pool_size: int = Field(default=16, ge=1, le=200)
    # Ephemeral store: in-memory unless a Redis URL is given.
    redis_url: str | None = None
    # Namespace of every Redis key (several deployments or test runs may share one Redis).
    redis_prefix: str = Field(default="healthid:", pattern=r"^[!-~]{1,64}$")
    tee: TeeKind = TeeKind.SIMULATED
    # The enclave process's Unix socket (`healthid enclave serve`); unset: the enclave runs
    # in-process (development only: tee=sgx needs the enclave process).
    enclave_socket: Path | None = None
    # ... or its TCP port on 127.0.0.1 (under Gramine, whose Unix sockets stay inside the
    # enclave); the two are exclusive.
    enclave_port: int | None = Field(default=None, ge=1, le=65535)
    # Attested key release (healthid.enclave.key_release): a TeePolicy JSON file naming the
    # enclaves that may receive this deployment's root key (and that a joining enclave accepts
    # it from). Unset: "the same enclave as I am", derived from the enclave's own evidence
    # (its MRENCLAVE, MRSIGNER, ISVPRODID, ISVSVN at least its own, debug off).
    key_release_policy: Path | None = None
    # A running enclave to receive the root key from while this one has none (a Unix socket
    # path, or tcp:<port> on 127.0.0.1); once sealed here, later starts load it.
    key_release_from: str | None = Field(default=None, max_length=4096)
    # Development only (tee=simulated): members of the SIMULATED report body the enclave
    # states in its evidence (mrenclave, mrsigner: 64 hex; isv_prod_id, isv_svn; debug), over
    # the defaults (mrenclave = hash of the healthid sources). Proves nothing; lets development
    # exercise the key-release policy. JSON in the environment, a table in TOML.
    simulated_measurement: dict[str, str | int | bool] | None = None
    key_backend: KeyBackend = KeyBackend.FILE
    pkcs11_module: Path | None = None
    pkcs11_token_label: str | None = None
    pkcs11_pin: SecretStr | None = None
    # The federation master we trust, and its pinned public key (JWK or JWKS file).
    fedmaster_url: str | None = None
    fedmaster_jwks_file: Path | None = None
    # Worker processes of the enclave for bulk work (registry import); 0 = one per CPU core.
    enclave_workers: int = Field(default=0, ge=0, le=64)
    # eGK CA certificates (PEM or DER files) that issue the C.CH.AUT certificates we accept.
    # Development adds the test eGK CA under data_dir/egk-test-ca.
    egk_ca_files: list[Path] = Field(default_factory=list)
    # App identity named in the reference client's software attestation (development only).
    wallet_app_id: str = "de.healthid.wallet.dev"
    # Device attestation of the insurer's app (production needs at least one platform).
    # Apple App Attest: Team ID + bundle id; roots: Apple's published App Attestation root.
    apple_team_id: str | None = None
    apple_bundle_id: str | None = None
    apple_development_environment: bool = False  # aaguid "appattestdevelop" (TestFlight/dev)
    # Android Key Attestation: package names and SHA-256 digests (hex) of the signing
    # certificates; roots: Google's published hardware attestation roots.
    android_package_names: list[str] = Field(default_factory=list)
    android_signing_cert_digests: list[str] = Field(default_factory=list)
    android_require_strongbox: bool = False
    android_min_patch_level: int | None = Field(default=None, ge=200001, le=299912)
    # The eID-Server (BSI TR-03130 eID-Interface); development default: `healthid eid-standin`.
    eid_server_url: str | None = None
    public_url: str = "http://127.0.0.1:8080"
    # Single sign-on: a device login this many seconds old may authorise further relying
    # parties without a new login (reported as amr sso / interactive: silent). 0: off.
    sso_window: int = Field(default=0, ge=0, le=12 * 60 * 60)
    # Addresses of the TLS terminators whose X-SSL-CERT header (the mTLS client certificate)
    # we believe; requests from anywhere else never carry a client certificate.
    trusted_proxies: list[str] = Field(default_factory=lambda: ["127.0.0.1", "::1"])
    # Base URL of the mTLS host (PAR and token endpoints); default: public_url.
    mtls_public_url: str | None = None
    # Federation entity metadata (spec §3).
    organization_name: str = "healthid Test-Krankenkasse"
    federation_contacts: list[str] = Field(default_factory=lambda: ["idp-ops@example.invalid"])
    logo_uri: str | None = None  # default: <public_url>/logo.svg
    homepage_uri: str | None = None  # default: public_url
    # Component-PKI certificate chains of the ID-token keys: <dir>/<kid>.pem (leaf first).
    # Development: a TEST Komp-PKI CA under data_dir issues them.
    token_certificates_dir: Path | None = None
    listen_host: str = "127.0.0.1"
    listen_port: int = Field(default=8080, ge=1, le=65535)
    # Test registries (gematik's published test identities) carry KVNRs whose check digit
    # fails; this lets development import them. Refused in production.
    allow_invalid_test_kvnr: bool = False
    # Logs (healthid.host.observability): one JSON object per line, or text; default: json in
    # production, text in development.
    log_format: Literal["json", "text"] | None = None
    # gematik's BDE performance log (gematik-sectoral-idp.md §10): the insurer's IK in each
    # record, and optionally a directory for gematik's 5-minute files
    # <bde_ci_id>_<start>_<end>_perf.log (shipping them to gematik is not part of healthid).
    bde_ik: str | None = Field(default=None, pattern=r"^[0-9]{9}$")
    bde_dir: Path | None = None
    bde_ci_id: str = Field(default="healthid", pattern=r"^[A-Za-z0-9._-]{1,64}$")

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.startswith(("postgres://", "postgresql://")):
            value = "postgresql+asyncpg://" + value.split("://", 1)[1]
        if not value.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
            raise ValueError("must be postgresql://... or sqlite+aiosqlite:///path")
        return value

    @field_validator("redis_url")
    @classmethod
    def _known_redis(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be redis://, rediss:// or unix://")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = os.environ.get(CONFIG_ENV)
        toml = _TomlFileSource(settings_cls, Path(path) if path else None)
        return (init_settings, env_settings, toml)

    @property
    def development(self) -> bool:
        return self.mode is Mode.DEVELOPMENT

    @property
    def sql_url(self) -> str:
        if self.database_url is not None:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'healthid.sqlite3').resolve()}"

    def production_problems(self) -> list[str]:
        """Why this configuration must not run in production mode (empty: it may)."""
        problems: list[str] = []
        if self.tee is TeeKind.SIMULATED:
            problems.append(
                "HEALTHID_TEE=simulated: personal data would be processed without an "
                "attested enclave; production needs tee=sgx"
            )
        if self.key_backend is KeyBackend.FILE:
            problems.append(
                "HEALTHID_KEY_BACKEND=file: private keys would lie on disk; production "
                "needs key_backend=pkcs11 (an HSM)"
            )
        elif not (self.pkcs11_module and self.pkcs11_token_label and self.pkcs11_pin):
            problems.append(
                "key_backend=pkcs11 needs HEALTHID_PKCS11_MODULE, HEALTHID_PKCS11_TOKEN_LABEL "
                "and HEALTHID_PKCS11_PIN"
            )
        if not self.fedmaster_url:
            problems.append("HEALTHID_FEDMASTER_URL is missing: no federation master to trust")
        if self.fedmaster_jwks_file is None:
            problems.append(
                "HEALTHID_FEDMASTER_JWKS_FILE is missing: the federation master's key must be "
                "pinned"
            )
        elif not self.fedmaster_jwks_file.is_file():
            problems.append(f"HEALTHID_FEDMASTER_JWKS_FILE: {self.fedmaster_jwks_file} not found")
        if self.database_url is None or self.database_url.startswith("sqlite"):
            problems.append(
                "HEALTHID_DATABASE_URL: production needs PostgreSQL, not the embedded SQLite file"
            )
        if self.redis_url is None:
            problems.append(
                "HEALTHID_REDIS_URL is missing: the in-memory ephemeral store is not shared "
                "between workers and loses one-time artefacts on restart"
            )
        if not (self.apple_team_id and self.apple_bundle_id) and not (
            self.android_package_names and self.android_signing_cert_digests
        ):
            problems.append(
                "no device attestation configured: set HEALTHID_APPLE_TEAM_ID and "
                "_APPLE_BUNDLE_ID and/or HEALTHID_ANDROID_PACKAGE_NAMES and "
                "_ANDROID_SIGNING_CERT_DIGESTS (software keys are for development only)"
            )
        if self.eid_server_url is None:
            problems.append("HEALTHID_EID_SERVER_URL is missing: no identity proofing with the eID")
        if self.allow_invalid_test_kvnr:
            problems.append("HEALTHID_ALLOW_INVALID_TEST_KVNR is for test registries only")
        if self.simulated_measurement is not None:
            problems.append("HEALTHID_SIMULATED_MEASUREMENT is for tee=simulated only")
        if self.key_release_policy is not None and not self.key_release_policy.is_file():
            problems.append(f"HEALTHID_KEY_RELEASE_POLICY: {self.key_release_policy} not found")
        if not self.public_url.startswith("https://"):
            problems.append("HEALTHID_PUBLIC_URL must be an https:// URL in production")
        return problems


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the settings; raise :class:`SettingsError` naming every problem."""
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(
            [
                f"HEALTHID_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
                for err in exc.errors()
            ]
        ) from None
    if not settings.development:
        problems = settings.production_problems()
        if problems:
            raise SettingsError(problems)
    return settings
