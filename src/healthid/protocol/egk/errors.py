"""Errors of the eGK card authentication: one small hierarchy under :class:`EgkError`.

A message names the check that failed and never repeats certificate content: no KVNR, no name
(CONVENTIONS 15). ``public_reason`` is a short stable code a caller may show or count.
"""

from __future__ import annotations

from typing import ClassVar


class EgkError(ValueError):
    """The eGK authentication is refused."""

    public_reason: ClassVar[str] = "refused"


class EgkMalformed(EgkError):  # noqa: N818 - names of the agreed API
    """An input is oversized or not what it claims to be (DER, X.509, subject, KVNR, IK)."""

    public_reason = "malformed"


class EgkUntrusted(EgkError):  # noqa: N818 - names of the agreed API
    """No valid certification path to a configured eGK CA, or the card is not an end entity."""

    public_reason = "untrusted"


class EgkExpired(EgkError):  # noqa: N818 - names of the agreed API
    """A certificate of the path is outside its validity period at ``now`` (either side)."""

    public_reason = "expired"


class EgkSignatureInvalid(EgkError):  # noqa: N818 - names of the agreed API
    """The card's signature over the server challenge does not verify."""

    public_reason = "signature_invalid"


class EgkNotInsured(EgkError):  # noqa: N818 - names of the agreed API
    """Not an insured person's C.CH.AUT: certificate type or professionOID missing or wrong."""

    public_reason = "not_insured"


class EgkWrongKeyType(EgkError):  # noqa: N818 - names of the agreed API
    """The card key is outside the closed list (brainpoolP256r1 ECDSA only)."""

    public_reason = "wrong_key_type"
