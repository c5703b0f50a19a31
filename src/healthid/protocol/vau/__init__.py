"""gematik's VAU channel protocol ("VAU-Protokoll", gemSpec_Krypt ch. 7) and its ASL variant,
as pure state machines for both sides.

The handshake M1-M4 is a hybrid (ECDH P-256 + ML-KEM-768 or Kyber768) KEM exchange that ends
in the application keys ``K2_c2s_app_data`` / ``K2_s2c_app_data`` and a KeyID; after it,
each inner HTTP message travels as one AES-256-GCM user-data message (A_24628).

Sources, as gematik publishes no KAT for the spec text: gematik ``lib-vau`` 1.0.16 (Java
reference), ``zeta-guard-ngx-pep/libasl`` (Rust, ASL = ML-KEM variant, with the known-answer
vectors the tests replay), ``lib-vau-csharp`` (AES-GCM KAT); see vau-and-tee.md §1.

Modules:

- :mod:`.server`, :mod:`.client`: the state machines (functions: state in, state out);
- :mod:`.state`: the serialisable state objects;
- :mod:`.messages`: M1-M4 and the error body; :mod:`.channel`: the user-data message;
- :mod:`.keys`: signed public VAU keys, server private keys, signing and verification;
- :mod:`.kem`, :mod:`.hybrid`, :mod:`.primitives`, :mod:`.cbor`: the building blocks;
- :mod:`.errors`: :class:`VauError` and its subclasses.
"""

from healthid.protocol.vau import client, server
from healthid.protocol.vau.channel import Direction, Environment, VauHeader
from healthid.protocol.vau.client import ClientConfig
from healthid.protocol.vau.errors import (
    VauCounterError,
    VauDecryptionError,
    VauDirectionError,
    VauEnvironmentError,
    VauError,
    VauExpiredError,
    VauKeyConfirmationError,
    VauKeyIdError,
    VauLengthError,
    VauMalformedError,
    VauMessageTypeError,
    VauOversizedError,
    VauServerKeysError,
    VauSignatureError,
    VauStateError,
    VauTranscriptError,
    VauUnsupportedError,
    VauVersionError,
)
from healthid.protocol.vau.kem import ExpandedKemKey, KemMode, SeedKemKey
from healthid.protocol.vau.keys import (
    KeyVerifier,
    ServerPrivateKeys,
    SignedPublicVauKeys,
    Signer,
    VauPublicKeys,
    es256_signer,
    es256_verifier,
    parse_server_private_keys,
    parse_signed_public_keys,
    sign_public_keys,
)
from healthid.protocol.vau.messages import error_body
from healthid.protocol.vau.server import ServerConfig, VauRequest
from healthid.protocol.vau.state import (
    ClientHandshake,
    ClientKeyConfirmation,
    ClientSession,
    ServerHandshake,
    ServerSession,
)

__all__ = [
    "ClientConfig",
    "ClientHandshake",
    "ClientKeyConfirmation",
    "ClientSession",
    "Direction",
    "Environment",
    "ExpandedKemKey",
    "KemMode",
    "KeyVerifier",
    "SeedKemKey",
    "ServerConfig",
    "ServerHandshake",
    "ServerPrivateKeys",
    "ServerSession",
    "SignedPublicVauKeys",
    "Signer",
    "VauCounterError",
    "VauDecryptionError",
    "VauDirectionError",
    "VauEnvironmentError",
    "VauError",
    "VauExpiredError",
    "VauHeader",
    "VauKeyConfirmationError",
    "VauKeyIdError",
    "VauLengthError",
    "VauMalformedError",
    "VauMessageTypeError",
    "VauOversizedError",
    "VauPublicKeys",
    "VauRequest",
    "VauServerKeysError",
    "VauSignatureError",
    "VauStateError",
    "VauTranscriptError",
    "VauUnsupportedError",
    "VauVersionError",
    "client",
    "error_body",
    "es256_signer",
    "es256_verifier",
    "parse_server_private_keys",
    "parse_signed_public_keys",
    "server",
    "sign_public_keys",
]
