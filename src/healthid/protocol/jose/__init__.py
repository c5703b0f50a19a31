"""JOSE for the sectoral IdP: a thin wrapper over joserfc with closed lists per context.

JWS ES256 on P-256 (entity statements, signed JWKS, ID tokens) and JWE ECDH-ES + A256GCM
(ID-token encryption), gematik sectoral IdP spec §5 and §7.
"""

from healthid.protocol.jose.claims import CLOCK_SKEW_SECONDS, check_times
from healthid.protocol.jose.errors import (
    AlgorithmNotAllowed,
    BadSignature,
    DecryptionFailed,
    Expired,
    ForbiddenHeader,
    InvalidClaims,
    JoseError,
    MalformedToken,
    NotYetValid,
    TokenTooLarge,
    UnknownKey,
    UnsuitableKey,
    WrongType,
)
from healthid.protocol.jose.jwe import decrypt_id_token, encrypt_id_token
from healthid.protocol.jose.jws import (
    TYP_ENTITY_STATEMENT,
    TYP_ID_TOKEN,
    TYP_IDP_LIST,
    TYP_SIGNED_JWKS,
    Signer,
    VerifiedJws,
    sign_compact,
    verify_compact,
)
from healthid.protocol.jose.keys import public_jwk

__all__ = [
    "CLOCK_SKEW_SECONDS",
    "TYP_ENTITY_STATEMENT",
    "TYP_IDP_LIST",
    "TYP_ID_TOKEN",
    "TYP_SIGNED_JWKS",
    "AlgorithmNotAllowed",
    "BadSignature",
    "DecryptionFailed",
    "Expired",
    "ForbiddenHeader",
    "InvalidClaims",
    "JoseError",
    "MalformedToken",
    "NotYetValid",
    "Signer",
    "TokenTooLarge",
    "UnknownKey",
    "UnsuitableKey",
    "VerifiedJws",
    "WrongType",
    "check_times",
    "decrypt_id_token",
    "encrypt_id_token",
    "public_jwk",
    "sign_compact",
    "verify_compact",
]
