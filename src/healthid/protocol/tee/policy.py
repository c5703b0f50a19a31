"""The relying client's enclave policy: which enclaves, on which platforms, it trusts.

Source: ../shared/spec/vau-and-tee.md §3.2 "Verification" steps 3-5 (Signal: TCB status with
accepted advisories, expected MRENCLAVE, debug off), §3.1 (Gramine RA-TLS:
``RA_TLS_MRENCLAVE``, ``RA_TLS_MRSIGNER``, ``RA_TLS_ISV_PROD_ID``, ``RA_TLS_ISV_SVN``) and §4.5.2
(MRENCLAVE pinned in the app release, or MRSIGNER + ISVPRODID + ISVSVN ≥ min).

JSON form (unknown members are refused, so a typo cannot silently drop a check)::

    {"mrenclave": ["<64 hex>", ...],        # allow list; empty or absent: not pinned
     "mrsigner": ["<64 hex>", ...],         # allow list; needs isv_prod_id
     "isv_prod_id": 1,                      # required with mrsigner, optional otherwise
     "min_isv_svn": 0,
     "tcb_statuses": ["UpToDate", ...],     # default: DEFAULT_TCB_STATUSES
     "advisories": ["INTEL-SA-00615", ...], # optional allow list; absent/null: any advisory
     "allow_debug": false,                  # true for tests only
     "max_age_seconds": 300}                # how old a document's iat may be
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from healthid.protocol.tee.errors import TeePolicyError
from healthid.protocol.tee.quote import MEASUREMENT_BYTES

# Intel TCB statuses (dcap-qvl, Intel "TCB Info" v3 tcbStatus).
TCB_UP_TO_DATE: Final = "UpToDate"
TCB_SW_HARDENING_NEEDED: Final = "SWHardeningNeeded"
TCB_CONFIGURATION_NEEDED: Final = "ConfigurationNeeded"
TCB_CONFIGURATION_AND_SW_HARDENING_NEEDED: Final = "ConfigurationAndSWHardeningNeeded"
TCB_OUT_OF_DATE: Final = "OutOfDate"
TCB_OUT_OF_DATE_CONFIGURATION_NEEDED: Final = "OutOfDateConfigurationNeeded"
TCB_REVOKED: Final = "Revoked"
# What a policy may allow. "Revoked" is not on the list: no configuration can accept it.
ALLOWABLE_TCB_STATUSES: Final = frozenset(
    {
        TCB_UP_TO_DATE,
        TCB_SW_HARDENING_NEEDED,
        TCB_CONFIGURATION_NEEDED,
        TCB_CONFIGURATION_AND_SW_HARDENING_NEEDED,
        TCB_OUT_OF_DATE,
        TCB_OUT_OF_DATE_CONFIGURATION_NEEDED,
    }
)
# Up to date, or up to date with software mitigations the enclave is built with (Gramine
# enables them), possibly on a platform whose BIOS configuration Intel flags.
DEFAULT_TCB_STATUSES: Final = frozenset(
    {TCB_UP_TO_DATE, TCB_SW_HARDENING_NEEDED, TCB_CONFIGURATION_AND_SW_HARDENING_NEEDED}
)
# A document answers a fresh nonce; its iat only bounds how long a relay may hold it.
DEFAULT_MAX_AGE_SECONDS: Final = 300
MAX_MAX_AGE_SECONDS: Final = 24 * 3600
MAX_ISV_VALUE: Final = 0xFFFF  # ISVPRODID and ISVSVN are u16
MAX_ALLOW_LIST: Final = 256
_MEMBERS: Final = frozenset(
    {
        "mrenclave",
        "mrsigner",
        "isv_prod_id",
        "min_isv_svn",
        "tcb_statuses",
        "advisories",
        "allow_debug",
        "max_age_seconds",
    }
)


@dataclass(frozen=True, kw_only=True, slots=True)
class TeePolicy:
    """Which SGX enclaves a client accepts. Every configured allow list must match.

    ``mrenclaves``: MRENCLAVE allow list (the exact build). ``mrsigners``: MRSIGNER allow list
    (any build by that key; then ``isv_prod_id`` is required so another product by the same
    signer is refused). At least one of the two is required. ``min_isv_svn`` refuses builds
    older than a security fix. ``tcb_statuses``/``advisories`` accept platforms; ``allow_debug``
    (tests only) accepts debug enclaves, whose memory the host can read.
    """

    mrenclaves: frozenset[bytes] = frozenset()
    mrsigners: frozenset[bytes] = frozenset()
    isv_prod_id: int | None = None
    min_isv_svn: int = 0
    tcb_statuses: frozenset[str] = field(default=DEFAULT_TCB_STATUSES)
    advisories: frozenset[str] | None = None
    allow_debug: bool = False
    max_age_seconds: int = DEFAULT_MAX_AGE_SECONDS

    def __post_init__(self) -> None:
        for value in self.mrenclaves | self.mrsigners:
            if not isinstance(value, bytes) or len(value) != MEASUREMENT_BYTES:
                raise TeePolicyError(f"a measurement has {MEASUREMENT_BYTES} bytes")
        if not self.mrenclaves and not self.mrsigners:
            raise TeePolicyError("the policy pins neither an MRENCLAVE nor an MRSIGNER")
        if self.mrsigners and self.isv_prod_id is None:
            raise TeePolicyError("an MRSIGNER allow list needs isv_prod_id")
        if self.isv_prod_id is not None and not _is_u16(self.isv_prod_id):
            raise TeePolicyError("isv_prod_id is a 16-bit unsigned integer")
        if not _is_u16(self.min_isv_svn):
            raise TeePolicyError("min_isv_svn is a 16-bit unsigned integer")
        if not self.tcb_statuses:
            raise TeePolicyError("the policy allows no TCB status")
        if not self.tcb_statuses <= ALLOWABLE_TCB_STATUSES:
            bad = sorted(self.tcb_statuses - ALLOWABLE_TCB_STATUSES)
            raise TeePolicyError(f"TCB status {bad} cannot be allowed")
        if not isinstance(self.allow_debug, bool):
            raise TeePolicyError("allow_debug is a boolean")
        if not _is_int(self.max_age_seconds) or not 0 < self.max_age_seconds <= MAX_MAX_AGE_SECONDS:
            raise TeePolicyError(f"max_age_seconds is 1..{MAX_MAX_AGE_SECONDS}")

    @classmethod
    def from_json(cls, text: str) -> TeePolicy:
        """Load a policy from its JSON form (module docstring); TeePolicyError if invalid."""
        try:
            obj = json.loads(text)
        except ValueError:
            raise TeePolicyError("the policy is not JSON") from None
        return cls.from_dict(obj)

    @classmethod
    def from_dict(cls, obj: object) -> TeePolicy:
        if not isinstance(obj, dict):
            raise TeePolicyError("the policy is not a JSON object")
        unknown = set(obj) - _MEMBERS
        if unknown:
            raise TeePolicyError(f"unknown policy members {sorted(unknown)}")
        advisories = obj.get("advisories")
        return cls(
            mrenclaves=_measurements(obj.get("mrenclave", []), "mrenclave"),
            mrsigners=_measurements(obj.get("mrsigner", []), "mrsigner"),
            isv_prod_id=_optional_int(obj.get("isv_prod_id"), "isv_prod_id"),
            min_isv_svn=_int(obj.get("min_isv_svn", 0), "min_isv_svn"),
            tcb_statuses=_strings(obj.get("tcb_statuses", sorted(DEFAULT_TCB_STATUSES)), "tcb"),
            advisories=None if advisories is None else _strings(advisories, "advisories"),
            allow_debug=obj.get("allow_debug", False),
            max_age_seconds=_int(obj.get("max_age_seconds", DEFAULT_MAX_AGE_SECONDS), "max_age"),
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (round-trips through :meth:`from_dict`)."""
        return {
            "mrenclave": sorted(m.hex() for m in self.mrenclaves),
            "mrsigner": sorted(m.hex() for m in self.mrsigners),
            "isv_prod_id": self.isv_prod_id,
            "min_isv_svn": self.min_isv_svn,
            "tcb_statuses": sorted(self.tcb_statuses),
            "advisories": None if self.advisories is None else sorted(self.advisories),
            "allow_debug": self.allow_debug,
            "max_age_seconds": self.max_age_seconds,
        }


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_u16(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_ISV_VALUE


def _int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TeePolicyError(f"{name} is not an integer")
    return value


def _optional_int(value: object, name: str) -> int | None:
    return None if value is None else _int(value, name)


def _list(value: object, name: str) -> list[object]:
    if not isinstance(value, list) or len(value) > MAX_ALLOW_LIST:
        raise TeePolicyError(f"{name} is not a list of at most {MAX_ALLOW_LIST} entries")
    return value


def _strings(value: object, name: str) -> frozenset[str]:
    items = _list(value, name)
    if not all(isinstance(item, str) for item in items):
        raise TeePolicyError(f"{name} holds a non-string")
    return frozenset(str(item) for item in items)


def _measurements(value: object, name: str) -> frozenset[bytes]:
    return frozenset(_hex32(item, name) for item in _list(value, name))


def _hex32(value: object, name: str) -> bytes:
    if not isinstance(value, str) or len(value) != 2 * MEASUREMENT_BYTES:
        raise TeePolicyError(f"a {name} is not {2 * MEASUREMENT_BYTES} hex digits")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise TeePolicyError(f"a {name} is not hex") from None


def measurements(values: Iterable[str]) -> frozenset[bytes]:
    """Convenience for code and tests: hex strings to a measurement allow list."""
    return frozenset(_hex32(v, "measurement") for v in values)
