"""Errors of the enclave RPC, and the closed table that carries exceptions across it.

An exception raised inside the enclave travels as ``{code, message}`` and is raised again at
the client as the same class with the same message. Only the classes in :data:`ERROR_CLASSES`
travel (their messages are written to be shown, CONVENTIONS.md rule 15); anything else is
reported as ``internal`` with the class name only (its message may hold data from the request).
"""

from __future__ import annotations

from typing import Final

from healthid.enclave import api
from healthid.enclave.vault import RecordIntegrityError, VaultError, WrongRootKeyError
from healthid.keys.base import KeyStoreUnavailable
from healthid.protocol.jose.errors import JoseError, TokenTooLarge, UnsuitableKey
from healthid.protocol.oauth.errors import ServerError

MAX_ERROR_MESSAGE: Final = 1_000  # characters of an error message carried over the wire
CODE_INTERNAL: Final = "internal"
CODE_TIMEOUT: Final = "timeout"


class RpcError(api.EnclaveError):
    """The RPC layer refused a request (the enclave's logic never saw it)."""

    code: str = "bad_request"


class CodecError(RpcError):
    """Bytes or values that do not follow the wire format. Never names a value, only where."""


class FrameTooLarge(CodecError):  # noqa: N818 - the name says the refusal
    """A frame (or a method's request) is larger than its limit."""

    code = "too_large"


class UnknownMethod(RpcError):  # noqa: N818 - the name says the refusal
    """The method is not on the allow-list."""

    code = "unknown_method"


# code -> class; a class's code is that of its nearest listed ancestor (see error_code).
ERROR_CLASSES: Final[dict[str, type[Exception]]] = {
    "enclave_error": api.EnclaveError,
    "identity_not_confirmed": api.IdentityNotConfirmed,
    "proof_rejected": api.ProofRejected,
    "session_refused": api.SessionRefused,
    "unknown_import": api.UnknownImport,
    "unavailable": api.EnclaveUnavailable,
    "vault_error": VaultError,
    "record_integrity": RecordIntegrityError,
    "wrong_root_key": WrongRootKeyError,
    # minting an ID token: the RP's encryption key or the token itself refused (the host
    # maps these ValueErrors to server_error), or the claims refused
    "jose_error": JoseError,
    "jose_unsuitable_key": UnsuitableKey,
    "jose_token_too_large": TokenTooLarge,
    "server_error": ServerError,
    # the token key's store (the HSM) cannot sign just now: the host answers 503
    "key_store_unavailable": KeyStoreUnavailable,
    RpcError.code: RpcError,
    FrameTooLarge.code: FrameTooLarge,
    UnknownMethod.code: UnknownMethod,
}
_CODES: Final = {cls: code for code, cls in ERROR_CLASSES.items()}
_CODES[CodecError] = RpcError.code  # a codec error arrives as bad_request


def error_code(exc: BaseException) -> str | None:
    """The wire code of ``exc`` (its nearest listed class), None if it may not travel."""
    for cls in type(exc).__mro__:
        code = _CODES.get(cls)
        if code is not None:
            return code
    return None


def error_from(code: str, message: str) -> Exception:
    """The exception a client raises for an error response."""
    if code == CODE_TIMEOUT:
        return api.EnclaveUnavailable(message)
    cls = ERROR_CLASSES.get(code, api.EnclaveError)
    return cls(message)
