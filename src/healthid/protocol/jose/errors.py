"""Errors of the JOSE layer: one flat hierarchy under :class:`JoseError`.

Every refusal is its own class directly under :class:`JoseError`, so a caller can tell what was
refused (and a test can name it) while the HTTP boundary maps all of them in one place
(CONVENTIONS 4). Messages name the check that failed and never echo token content (rule 15).
"""

from __future__ import annotations

from typing import ClassVar


class JoseError(ValueError):
    """A JOSE object (JWS, JWE, JWK) is refused."""

    public_reason: ClassVar[str] = "refused"


class TokenTooLarge(JoseError):  # noqa: N818 - the name says the state
    """The compact token, its header or its payload exceeds the bound checked before parsing."""

    public_reason = "too_large"


class MalformedToken(JoseError):  # noqa: N818 - the name says the state
    """Not a well-formed compact serialization, base64url or JSON object."""

    public_reason = "malformed"


class AlgorithmNotAllowed(JoseError):  # noqa: N818 - the name says the state
    """The ``alg``/``enc`` is outside the closed list of the context (ES256; ECDH-ES+A256GCM)."""

    public_reason = "algorithm_not_allowed"


class ForbiddenHeader(JoseError):  # noqa: N818 - the name says the state
    """The header tries to supply a key (``jwk``, ``jku``, ``x5u``) or demands ``crit``."""

    public_reason = "forbidden_header"


class WrongType(JoseError):  # noqa: N818 - the name says the state
    """The header ``typ`` (or JWE ``cty``) is not the one the context requires."""

    public_reason = "wrong_type"


class UnknownKey(JoseError):  # noqa: N818 - the name says the state
    """No trusted key with the header's ``kid`` (or the ``kid`` is missing or ambiguous)."""

    public_reason = "unknown_key"


class UnsuitableKey(JoseError):  # noqa: N818 - the name says the state
    """A JWK is not an EC P-256 public key for the required ``use``, or is malformed."""

    public_reason = "unsuitable_key"


class BadSignature(JoseError):  # noqa: N818 - the name says the state
    """The signature does not verify with the selected trusted key."""

    public_reason = "bad_signature"


class DecryptionFailed(JoseError):  # noqa: N818 - the name says the state
    """The JWE cannot be decrypted with the given key (wrong key or tampered ciphertext)."""

    public_reason = "decryption_failed"


class InvalidClaims(JoseError):  # noqa: N818 - the name says the state
    """A registered time claim is missing or not an integer."""

    public_reason = "invalid_claims"


class Expired(JoseError):  # noqa: N818 - the name says the state
    """``exp`` lies in the past (beyond the allowed clock skew)."""

    public_reason = "expired"


class NotYetValid(JoseError):  # noqa: N818 - the name says the state
    """``nbf`` or ``iat`` lies in the future (beyond the allowed clock skew)."""

    public_reason = "not_yet_valid"
