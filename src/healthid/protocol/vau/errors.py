"""Errors of the VAU channel: one flat hierarchy under :class:`VauError`.

Every refusal is its own class directly under :class:`VauError`, so a caller (and a test) can
tell what was refused while the host maps all of them in one place (CONVENTIONS 4).

``error_code`` and ``status_code`` are the ones gematik's ASL server puts on the wire
(``libasl/src/model.rs`` ``AslError``: 1 decoding, 2 missing parameters, 3 GCM FAIL,
4 PU/nonPU, 5 transcript, 6 bad format, 7 not a request, 8 unknown KeyID, 9 unknown CID,
13 internal); :func:`healthid.protocol.vau.messages.error_body` renders the CBOR error body
``{"MessageType": "Error", "ErrorCode": int, "ErrorMessage": tstr}``. Errors that only a client
raises (server keys, signature) carry the closest code but are never sent.

Messages name the check that failed and never echo key material or plaintext (rule 15).
"""

from __future__ import annotations

from typing import ClassVar


class VauError(ValueError):
    """A VAU handshake or user-data message is refused."""

    public_reason: ClassVar[str] = "refused"
    error_code: ClassVar[int] = 13
    status_code: ClassVar[int] = 500
    error_message: ClassVar[str] = "Internal error"


class VauMalformedError(VauError):
    """Not well-formed: CBOR outside the accepted subset, a field missing, of the wrong type
    or of the wrong size (ASL 1 "Decoding Error")."""

    public_reason = "malformed"
    error_code = 1
    status_code = 400
    error_message = "Decoding Error"


class VauOversizedError(VauError):
    """The input exceeds the bound checked before anything is decoded (ASL 6 "bad format")."""

    public_reason = "oversized"
    error_code = 6
    status_code = 400
    error_message = "bad format: extended ciphertext"


class VauMessageTypeError(VauError):
    """``MessageType`` is not the message the state machine expects next (ASL 1)."""

    public_reason = "unexpected_message"
    error_code = 1
    status_code = 400
    error_message = "Decoding Error"


class VauUnsupportedError(VauError):
    """A handshake option this implementation refuses (``ERP``/``ESO`` set; ASL 2)."""

    public_reason = "unsupported"
    error_code = 2
    status_code = 400
    error_message = "Missing Parameters"


class VauDecryptionError(VauError):
    """AES-256-GCM returns FAIL: wrong key, tampered ciphertext, tag, IV or header (ASL 3)."""

    public_reason = "decryption_failed"
    error_code = 3
    status_code = 403
    error_message = "GCM returns FAIL"


class VauKeyConfirmationError(VauError):
    """The key-confirmation ciphertext of M3 or M4 does not open with K2 (ASL 5)."""

    public_reason = "key_confirmation_failed"
    error_code = 5
    status_code = 403
    error_message = "Transscript Error"


class VauTranscriptError(VauError):
    """The peer's transcript hash differs from ours (ASL 5)."""

    public_reason = "transcript_mismatch"
    error_code = 5
    status_code = 403
    error_message = "Transscript Error"


class VauVersionError(VauError):
    """The header's version byte is not 0x02 (A_24628; ASL 6)."""

    public_reason = "bad_version"
    error_code = 6
    status_code = 400
    error_message = "bad format: extended ciphertext"


class VauLengthError(VauError):
    """A user-data message is shorter than header + IV + one byte + tag (A_24628; ASL 6)."""

    public_reason = "bad_length"
    error_code = 6
    status_code = 400
    error_message = "bad format: extended ciphertext"


class VauEnvironmentError(VauError):
    """The PU byte is not the receiver's configured environment (A_24628; ASL 4)."""

    public_reason = "wrong_environment"
    error_code = 4
    status_code = 403
    error_message = "PU/nonPU Failure"


class VauDirectionError(VauError):
    """The request/response byte is not the one this side receives (A_24628; ASL 7)."""

    public_reason = "wrong_direction"
    error_code = 7
    status_code = 403
    error_message = "is not a request"


class VauKeyIdError(VauError):
    """The header's KeyID is not the session's KeyID (A_24628; ASL 8)."""

    public_reason = "unknown_key_id"
    error_code = 8
    status_code = 403
    error_message = "unknow KeyID"


class VauCounterError(VauError):
    """The request counter repeats, goes backwards or is out of range (replay, reordering)."""

    public_reason = "bad_counter"
    error_code = 6
    status_code = 403
    error_message = "bad format: extended ciphertext"


class VauExpiredError(VauError):
    """The handshake or session state is past its expiry; the peer must start over (ASL 9)."""

    public_reason = "expired"
    error_code = 9
    status_code = 403
    error_message = "unknown CID"


class VauServerKeysError(VauError):
    """The signed public VAU keys are expired, not yet valid, valid for too long or do not
    match the private keys or the KEM mode."""

    public_reason = "server_keys_invalid"
    error_code = 5
    status_code = 403
    error_message = "Transscript Error"


class VauSignatureError(VauError):
    """The signature over the server's public VAU keys does not verify (A_24624-01 step 5)."""

    public_reason = "bad_signature"
    error_code = 5
    status_code = 403
    error_message = "Transscript Error"


class VauStateError(VauError):
    """A serialised state blob is corrupt or belongs to another step or KEM mode."""

    public_reason = "bad_state"
    error_code = 13
    status_code = 500
    error_message = "Internal error"
