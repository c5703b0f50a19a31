"""eGK card authentication: identity proofing with the eGK and its PIN (spec §2.4).

The wallet sends the card's C.CH.AUT_E256 certificate and the card's signature (raw r||s) over
our challenge; :func:`verify_egk_authentication` turns them into an :class:`EgkIdentity` or
raises an :class:`EgkError`. Modules: :mod:`.chain` (path to a configured eGK CA),
:mod:`.profile` (what makes it an insured person's card), :mod:`.signature` (the challenge
signature), :mod:`.authentication` (the whole check).
"""

from healthid.protocol.egk.authentication import (
    MAX_CERTIFICATE_BYTES,
    MAX_CHALLENGE_BYTES,
    MIN_CHALLENGE_BYTES,
    EgkIdentity,
    card_id,
    verify_egk_authentication,
)
from healthid.protocol.egk.chain import MAX_INTERMEDIATES
from healthid.protocol.egk.errors import (
    EgkError,
    EgkExpired,
    EgkMalformed,
    EgkNotInsured,
    EgkSignatureInvalid,
    EgkUntrusted,
    EgkWrongKeyType,
)
from healthid.protocol.egk.profile import (
    POLICY_OID_EGK_AUT,
    PROFESSION_OID_VERSICHERTER,
)
from healthid.protocol.egk.signature import RAW_SIGNATURE_BYTES

__all__ = [
    "MAX_CERTIFICATE_BYTES",
    "MAX_CHALLENGE_BYTES",
    "MAX_INTERMEDIATES",
    "MIN_CHALLENGE_BYTES",
    "POLICY_OID_EGK_AUT",
    "PROFESSION_OID_VERSICHERTER",
    "RAW_SIGNATURE_BYTES",
    "EgkError",
    "EgkExpired",
    "EgkIdentity",
    "EgkMalformed",
    "EgkNotInsured",
    "EgkSignatureInvalid",
    "EgkUntrusted",
    "EgkWrongKeyType",
    "card_id",
    "verify_egk_authentication",
]
