"""Configuration and signing key of the DEVELOPMENT federation master (spec §1.2, §4, §9).

The config file (TOML, or JSON by its ``.json`` suffix) names the master's entity identifier
and its members::

    entity_id = "http://127.0.0.1:8083"          # the master's own entity identifier

    [[members]]
    entity_id = "https://rp.example"            # an RP: its client_id
    jwks_file = "rp-federation-jwks.json"       # or: jwks = { keys = [ ... ] }
    [members.metadata.openid_relying_party]     # metadata the master imposes (spec §4)
    client_registration_types = ["automatic"]

    [[members]]
    entity_id = "https://idp.example"
    jwks = { keys = [ { kty = "EC", crv = "P-256", kid = "puk_idp_sig", x = "…", y = "…" } ] }
    idp = { organization_name = "Test-Kasse", logo_uri = "https://idp.example/logo.png" }

A member's ``jwks`` are its federation (entity-statement) public keys, P-256 (spec §7);
``idp`` lists it in the idp list (spec §9). Paths are relative to the config file.

The master's own signing key is a P-256 key generated on first start under the data
directory, in a file named and headed TEST-ONLY; its public JWKS is written beside it, and
that file is what IdPs pin (``HEALTHID_FEDMASTER_JWKS_FILE``).
"""

from __future__ import annotations

import json
import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from healthid.protocol.federation.master import MASTER_KID
from healthid.protocol.jose import JoseError, public_jwk
from healthid.protocol.jose.keys import jwks_keys, p256_public_key

# CONVENTIONS 6: bounds on what a config file may hold.
MAX_CONFIG_BYTES: Final = 1024 * 1024
MAX_MEMBERS: Final = 1000
MAX_ENTITY_ID_CHARS: Final = 256

KEY_FILE: Final = "TEST-ONLY-fedmaster-sig.key.pem"
JWKS_FILE: Final = "fedmaster-jwks.json"
README_FILE: Final = "TEST-ONLY-README.txt"
KEY_FILE_MODE: Final = 0o600
_README: Final = (
    "healthid DEVELOPMENT federation master - TEST ONLY, NOT FOR PRODUCTION.\n"
    f"{KEY_FILE} is an UNENCRYPTED private key; statements it signs vouch for nobody.\n"
    f"{JWKS_FILE} is its public key set: pin it in development IdPs only\n"
    "(HEALTHID_FEDMASTER_JWKS_FILE). Production IdPs pin gematik's federation master.\n"
)
_MEMBER_KEYS: Final = frozenset({"entity_id", "jwks", "jwks_file", "metadata", "idp"})
_IDP_KEYS: Final = frozenset({"organization_name", "logo_uri", "user_type_supported", "pkv"})


class FedmasterConfigError(ValueError):
    """The fedmaster configuration or key file cannot be used; the message says why."""


@dataclass(frozen=True, kw_only=True)
class IdpListing:
    """How an IdP member appears in the idp list (spec §9)."""

    organization_name: str
    logo_uri: str
    user_type_supported: str = "IP"
    pkv: bool = False


@dataclass(frozen=True, kw_only=True)
class Member:
    """A federation member: its federation keys and the metadata the master imposes."""

    entity_id: str
    jwks: Mapping[str, Any]
    metadata: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    idp: IdpListing | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "jwks", MappingProxyType(dict(self.jwks)))
        object.__setattr__(self, "metadata", MappingProxyType(dict(self.metadata)))


@dataclass(frozen=True, kw_only=True)
class FedmasterConfig:
    """The master's entity identifier and its members, keyed by entity identifier."""

    entity_id: str
    members: tuple[Member, ...]

    def member(self, entity_id: str) -> Member | None:
        return next((m for m in self.members if m.entity_id == entity_id), None)


def _entity_id(value: object, what: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ENTITY_ID_CHARS:
        raise FedmasterConfigError(f"{what}: entity_id must be a short string")
    if not value.startswith(("https://", "http://")) or "?" in value or "#" in value:
        raise FedmasterConfigError(f"{what}: entity_id must be an http(s) URL without query")
    return value


def _jwks(raw: Mapping[str, Any], base: Path, what: str) -> Mapping[str, Any]:
    if ("jwks" in raw) == ("jwks_file" in raw):
        raise FedmasterConfigError(f"{what}: give exactly one of jwks and jwks_file")
    if "jwks_file" in raw:
        path = base / str(raw["jwks_file"])
        try:
            value: object = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise FedmasterConfigError(f"{what}: cannot read {path}: {exc}") from None
    else:
        value = raw["jwks"]
    if not isinstance(value, Mapping):
        raise FedmasterConfigError(f"{what}: jwks is not an object")
    try:
        keys = jwks_keys(value)
        for key in keys:
            p256_public_key(key, use="sig")  # spec §7: members' federation keys are P-256
            if not isinstance(key.get("kid"), str):
                raise FedmasterConfigError(f"{what}: every federation key needs a kid")
    except JoseError as exc:
        raise FedmasterConfigError(f"{what}: jwks: {exc}") from None
    if not keys:
        raise FedmasterConfigError(f"{what}: jwks holds no key")
    return {"keys": [dict(k) for k in keys]}


def _idp(value: object, what: str) -> IdpListing | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or set(value) - _IDP_KEYS:
        raise FedmasterConfigError(f"{what}: idp takes only {sorted(_IDP_KEYS)}")
    name, logo = value.get("organization_name"), value.get("logo_uri")
    if not isinstance(name, str) or not isinstance(logo, str) or not name or not logo:
        raise FedmasterConfigError(f"{what}: idp needs organization_name and logo_uri")
    user_type = value.get("user_type_supported", "IP")
    pkv = value.get("pkv", False)
    if not isinstance(user_type, str) or not isinstance(pkv, bool):
        raise FedmasterConfigError(f"{what}: idp user_type_supported/pkv have the wrong type")
    return IdpListing(organization_name=name, logo_uri=logo, user_type_supported=user_type, pkv=pkv)


def _member(raw: object, base: Path, index: int) -> Member:
    what = f"members[{index}]"
    if not isinstance(raw, Mapping):
        raise FedmasterConfigError(f"{what} is not a table")
    unknown = set(raw) - _MEMBER_KEYS
    if unknown:
        raise FedmasterConfigError(f"{what}: unknown key(s) {sorted(unknown)}")
    metadata = raw.get("metadata", {})
    if not isinstance(metadata, Mapping) or not all(
        isinstance(v, Mapping) for v in metadata.values()
    ):
        raise FedmasterConfigError(f"{what}: metadata must map entity types to tables")
    return Member(
        entity_id=_entity_id(raw.get("entity_id"), what),
        jwks=_jwks(raw, base, what),
        metadata={str(k): dict(v) for k, v in metadata.items()},
        idp=_idp(raw.get("idp"), what),
    )


def parse_fedmaster_config(data: Mapping[str, Any], *, base: Path) -> FedmasterConfig:
    """The typed config of a parsed TOML/JSON document (``base``: for relative paths)."""
    unknown = set(data) - {"entity_id", "members"}
    if unknown:
        raise FedmasterConfigError(f"unknown setting(s) {sorted(unknown)}")
    raw_members = data.get("members", [])
    if not isinstance(raw_members, list) or len(raw_members) > MAX_MEMBERS:
        raise FedmasterConfigError(f"members must be a list of at most {MAX_MEMBERS}")
    entity_id = _entity_id(data.get("entity_id"), "fedmaster")
    members = tuple(_member(m, base, i) for i, m in enumerate(raw_members))
    ids = [m.entity_id for m in members]
    if len(set(ids)) != len(ids) or entity_id in ids:
        raise FedmasterConfigError("member entity_ids must be unique and differ from the master")
    return FedmasterConfig(entity_id=entity_id, members=members)


def load_fedmaster_config(path: Path) -> FedmasterConfig:
    """Read ``path`` (TOML, or JSON when it ends in ``.json``) and validate it."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise FedmasterConfigError(f"cannot read {path}: {exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise FedmasterConfigError(f"{path} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        data = json.loads(raw) if path.suffix == ".json" else tomllib.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise FedmasterConfigError(f"{path} does not parse: {exc}") from None
    if not isinstance(data, dict):
        raise FedmasterConfigError(f"{path} is not a table")
    return parse_fedmaster_config(data, base=path.parent)


def master_public_jwks(key: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    """The master's public JWKS (``kid: puk_fedmaster_sig``, spec §1.2)."""
    return {"keys": [public_jwk(key.public_key(), kid=MASTER_KID, use="sig")]}


def _read_key(path: Path) -> ec.EllipticCurvePrivateKey:
    st = path.stat()
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise FedmasterConfigError(f"{path} is readable by group or others (chmod 600)")
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise FedmasterConfigError(f"{path} is not a P-256 private key")
    return key


def load_or_create_signing_key(data_dir: Path) -> ec.EllipticCurvePrivateKey:
    """The master's TEST-ONLY signing key under ``data_dir``, generated on first start.

    Also (re)writes the public JWKS file that development IdPs pin, and a README.
    """
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = data_dir / KEY_FILE
    if path.exists():
        key = _read_key(path)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(path, flags, KEY_FILE_MODE)
        try:
            os.fchmod(fd, KEY_FILE_MODE)
            os.write(fd, pem)
        finally:
            os.close(fd)
    (data_dir / README_FILE).write_text(_README, encoding="utf-8")
    (data_dir / JWKS_FILE).write_text(
        json.dumps(master_public_jwks(key), indent=2) + "\n", encoding="utf-8"
    )
    return key
