"""Typed, bounded field access on decoded CBOR maps (one failure per ``raise``)."""

from __future__ import annotations

from collections.abc import Mapping

from healthid.protocol.vau.cbor import MAX_UINT, CborValue
from healthid.protocol.vau.errors import VauMalformedError


def _get(m: Mapping[str, CborValue], key: str) -> CborValue:
    if key not in m:
        raise VauMalformedError(f"field {key!r} is missing")
    return m[key]


def bytes_field(
    m: Mapping[str, CborValue],
    key: str,
    *,
    size: int | None = None,
    max_size: int | None = None,
) -> bytes:
    """A byte string of exactly ``size`` or at most ``max_size`` bytes."""
    value = _get(m, key)
    if not isinstance(value, bytes):
        raise VauMalformedError(f"field {key!r} is not a byte string")
    if size is not None and len(value) != size:
        raise VauMalformedError(f"field {key!r} must be {size} bytes")
    if max_size is not None and len(value) > max_size:
        raise VauMalformedError(f"field {key!r} exceeds {max_size} bytes")
    return value


def text_field(m: Mapping[str, CborValue], key: str, *, max_size: int) -> str:
    value = _get(m, key)
    if not isinstance(value, str):
        raise VauMalformedError(f"field {key!r} is not text")
    if len(value) > max_size:
        raise VauMalformedError(f"field {key!r} exceeds {max_size} characters")
    return value


def uint_field(m: Mapping[str, CborValue], key: str, *, maximum: int = MAX_UINT) -> int:
    value = _get(m, key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise VauMalformedError(f"field {key!r} is not an integer")
    if value < 0 or value > maximum:
        raise VauMalformedError(f"field {key!r} is out of range")
    return value


def bool_field(m: Mapping[str, CborValue], key: str) -> bool:
    value = _get(m, key)
    if not isinstance(value, bool):
        raise VauMalformedError(f"field {key!r} is not a boolean")
    return value


def map_field(m: Mapping[str, CborValue], key: str) -> dict[str, CborValue]:
    value = _get(m, key)
    if not isinstance(value, dict):
        raise VauMalformedError(f"field {key!r} is not a map")
    return value


def require_text(m: Mapping[str, CborValue], key: str, expected: str) -> None:
    """``m[key]`` must be the text ``expected`` (``MessageType``, ``crv``)."""
    if text_field(m, key, max_size=64) != expected:
        raise VauMalformedError(f"field {key!r} must be {expected!r}")
