"""Production key store: ES256 keys generated and used inside a PKCS#11 token (HSM).

Object layout (PKCS#11 v2.40 §4): each key is a token object pair (``CKA_TOKEN``) of class
``CKO_PRIVATE_KEY`` / ``CKO_PUBLIC_KEY``, key type ``CKK_EC`` on P-256 (``CKA_EC_PARAMS`` =
the prime256v1 OID). ``CKA_ID`` is the ASCII kid (RFC 7638 thumbprint); since the thumbprint
is only known once the token has made the key, the pair is created with a random
``pending:``-prefixed ``CKA_ID`` that is replaced by the kid right away (a pair left pending by
a crash is ignored by ``list_kids``). ``CKA_LABEL`` is ``healthid:<purpose>``; only objects with
that prefix are listed or deleted. The private key is ``CKA_SENSITIVE``, not
``CKA_EXTRACTABLE``, ``CKA_PRIVATE``, sign-only; these attributes are read back and a key
without them is destroyed.

Signing uses ``CKM_ECDSA`` over a SHA-256 digest computed here (RFC 7518 §3.4); PKCS#11 returns
R || S, the JOSE form. (SoftHSM 2.6 has no ``CKM_ECDSA_SHA256``; ``CKM_ECDSA`` works on every
token.)

Threads: python-pkcs11 initialises the module with ``C_Initialize(NULL_PTR)``, which tells it
the application will not call it from several threads at once (PKCS#11 v2.40, C_Initialize),
and its sessions are not thread-safe; every call into any token is therefore serialised by one
process-wide lock, and one session is kept open per store.

PIN: a rejected PIN is never retried by this store (each try counts towards locking the token);
``KeyStoreUnavailable`` follows until the store is rebuilt with the right PIN. A token that
reports its final PIN try is not logged in to at all. No message contains the PIN.

Outages (issue #7: with the HSM unavailable no token is issued, and service resumes without a
restart): a call that finds the token, slot or session gone raises ``KeyStoreUnavailable``
(the host answers 503 ``temporarily_unavailable``) and drops the session; the next call opens
a new one, at most once per ``RECONNECT_INTERVAL`` (in between, calls fail at once instead
of queueing on the token lock behind a slow device). A key that is missing while the token
cannot be listed counts as such an outage, not as ``KeyNotFound``: SoftHSM, for one, answers
"no such object" when its token directory disappeared. When the module itself cannot list
its slots any more, only ``C_Finalize`` + ``C_Initialize`` make it look for its tokens again
(PKCS#11 v2.40 §5.4: the slot list is the module's, read at initialisation), so the next
attempt re-initialises the module first (which ends every session of the module in this
process: the runtime builds one store). :meth:`Pkcs11KeyStore.check` is the health probe
(``healthid_dependency_up{dependency="hsm"}``); it reconnects too.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar

import pkcs11
from cryptography.hazmat.primitives.asymmetric import ec
from pkcs11 import (
    Attribute,
    KeyType,
    Mechanism,
    MechanismFlag,
    ObjectClass,
    Session,
    TokenFlag,
)
from pkcs11 import exceptions as p11

from healthid.keys.base import (
    KeyInfo,
    KeyNotFound,
    KeyStoreError,
    KeyStoreUnavailable,
    check_kid,
    check_purpose,
    is_kid,
)
from healthid.keys.es256 import SIGNATURE_LEN, digest
from healthid.keys.jwk import COORDINATE_LEN, signing_jwk

LABEL_PREFIX: Final = "healthid:"
# DER of OID 1.2.840.10045.3.1.7 (prime256v1 = P-256), RFC 5480 §2.1.1.1 namedCurve.
P256_EC_PARAMS: Final = bytes.fromhex("06082a8648ce3d030107")
_PENDING_ID_PREFIX: Final = b"pending:"
PENDING_ID_RANDOM_BYTES: Final = 16
# X9.62 uncompressed point: 0x04 || X || Y; tokens wrap it in a DER OCTET STRING (0x04 0x41).
_POINT_LEN: Final = 1 + 2 * COORDINATE_LEN
_DER_POINT_PREFIX: Final = bytes((0x04, _POINT_LEN))

# Errors that mean the token, slot or session is gone: drop the session, fail closed.
_CONNECTION_LOST: Final = (
    p11.DeviceError,
    p11.DeviceMemory,
    p11.DeviceRemoved,
    p11.GeneralError,
    p11.SessionClosed,
    p11.SessionHandleInvalid,
    p11.SlotIDInvalid,
    p11.TokenNotPresent,
    p11.TokenNotRecognised,
    p11.UserNotLoggedIn,
)
_PIN_REJECTED: Final = (
    p11.PinExpired,
    p11.PinIncorrect,
    p11.PinInvalid,
    p11.PinLenRange,
    p11.PinLocked,
    p11.UserPinNotInitialized,
)

# One lock for every PKCS#11 call in this process (see the module docstring).
_TOKEN_LOCK: Final = threading.Lock()
# Seconds between two attempts to reach a token that was unavailable (see the docstring).
RECONNECT_INTERVAL: Final = 1.0

_T = TypeVar("_T")


class _TokenGone(Exception):  # noqa: N818 - the name says the state
    """Inside :meth:`Pkcs11KeyStore._run`: the module no longer lists the token."""


def _ec_point(raw: bytes) -> bytes:
    """The uncompressed point from ``CKA_EC_POINT`` (DER OCTET STRING, or raw on some HSMs)."""
    if len(raw) == _POINT_LEN + len(_DER_POINT_PREFIX) and raw.startswith(_DER_POINT_PREFIX):
        return raw[len(_DER_POINT_PREFIX) :]
    if len(raw) == _POINT_LEN and raw[0] == 0x04:
        return raw
    raise KeyStoreError("token returned an EC point that is not an uncompressed P-256 point")


def _public_jwk_of(public: Any) -> dict[str, str]:
    """The publication JWK of a ``CKO_PUBLIC_KEY`` object; only P-256 is accepted."""
    if public[Attribute.EC_PARAMS] != P256_EC_PARAMS:
        raise KeyStoreError("token key is not on P-256")
    point = _ec_point(public[Attribute.EC_POINT])
    try:
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError as exc:
        raise KeyStoreError("token returned an EC point that is not on P-256") from exc
    return signing_jwk(key)


def _holds_key(public: Any, kid: str) -> bool:
    """Whether the public key object is a P-256 key whose thumbprint is ``kid``."""
    try:
        return _public_jwk_of(public)["kid"] == kid
    except KeyStoreError:
        return False


def _check_private_attributes(private: Any) -> None:
    """Refuse a private key the token made extractable or readable, despite the template."""
    if private[Attribute.EXTRACTABLE] or not private[Attribute.SENSITIVE]:
        raise KeyStoreError("token created an extractable or non-sensitive private key")
    if not private[Attribute.TOKEN] or not private[Attribute.PRIVATE]:
        raise KeyStoreError("token created a session or public private-key object")


def _destroy_quietly(*objects: Any) -> None:
    for obj in objects:
        try:
            obj.destroy()
        except p11.PKCS11Error:
            pass


def _close_quietly(session: Session) -> None:
    try:
        session.close()
    except p11.PKCS11Error:
        pass


class Pkcs11KeyStore:
    """ES256 keys on the PKCS#11 token ``token_label`` of ``module``, logged in with ``pin``.

    PKCS#11 login state is shared by all sessions of a process, so a second store on the same
    token in the same process is refused rather than silently riding on the first one's login
    (which would accept any PIN): use one store per token per process.
    """

    backend: Final = "pkcs11"

    def __init__(
        self,
        module: Path,
        token_label: str,
        pin: str,
        *,
        reconnect_interval: float = RECONNECT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._module = module
        self._token_label = token_label
        self._pin = pin
        self._session: Session | None = None
        self._pin_rejected = False
        self._reconnect_interval = reconnect_interval
        self._clock = clock
        self._retry_at = 0.0  # no attempt to open a session before this (clock seconds)
        self._reinitialize = False  # the module lost its slot list: C_Finalize + C_Initialize

    def __repr__(self) -> str:
        return f"Pkcs11KeyStore(module={str(self._module)!r}, token_label={self._token_label!r})"

    def __enter__(self) -> Pkcs11KeyStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Log out and close the session (best effort); the next call opens a new one."""
        with _TOKEN_LOCK:
            session, self._session = self._session, None
            if session is not None:
                _close_quietly(session)

    # -- session handling (callers hold _TOKEN_LOCK) -------------------------------------

    def _lib(self) -> Any:
        try:
            lib = pkcs11.lib(str(self._module))
        except p11.PKCS11Error as exc:
            raise KeyStoreUnavailable(
                f"cannot load or initialise PKCS#11 module {self._module} ({type(exc).__name__})"
            ) from exc
        if self._reinitialize:
            try:  # C_Finalize + C_Initialize: the module reads its slots anew
                lib.reinitialize()
            except p11.PKCS11Error as exc:
                raise KeyStoreUnavailable(
                    f"PKCS#11 module {self._module} cannot be initialised ({type(exc).__name__})"
                ) from exc
            self._reinitialize = False
        return lib

    def _token(self) -> Any:
        lib = self._lib()
        try:
            return lib.get_token(token_label=self._token_label)
        except p11.NoSuchToken:
            raise KeyStoreUnavailable(
                f"no PKCS#11 token labelled {self._token_label!r} in {self._module}"
            ) from None
        except p11.MultipleTokensReturned:
            raise KeyStoreError(
                f"several PKCS#11 tokens are labelled {self._token_label!r}"
            ) from None
        except p11.PKCS11Error as exc:
            self._reinitialize = True  # only a new C_Initialize lists the slots again
            raise KeyStoreUnavailable(
                f"PKCS#11 module {self._module} cannot list its tokens ({type(exc).__name__})"
            ) from exc

    def _login(self, token: Any) -> Session:
        where = f"PKCS#11 token {self._token_label!r}"
        if token.flags & TokenFlag.USER_PIN_LOCKED:
            raise KeyStoreUnavailable(f"{where}: the user PIN is locked")
        if token.flags & TokenFlag.USER_PIN_FINAL_TRY:
            raise KeyStoreUnavailable(f"{where}: one PIN try is left; not logging in automatically")
        try:
            session: Session = token.open(rw=True, user_pin=self._pin)
        except _PIN_REJECTED as exc:
            self._pin_rejected = True
            # from None: the cause adds nothing and this path must never echo a PIN.
            raise KeyStoreUnavailable(
                f"{where} rejected the PIN ({type(exc).__name__}); not retrying"
            ) from None
        except p11.UserAlreadyLoggedIn:
            raise KeyStoreError(
                f"{where}: another session of this process is already logged in; "
                "use one Pkcs11KeyStore per token"
            ) from None
        except p11.PKCS11Error as exc:
            raise KeyStoreUnavailable(
                f"{where}: cannot open a session ({type(exc).__name__})"
            ) from None
        return session

    def _open_session(self) -> Session:
        if self._session is not None:
            return self._session
        if self._pin_rejected:
            raise KeyStoreUnavailable(
                f"PKCS#11 token {self._token_label!r} rejected the PIN earlier; not retrying "
                "(it would count towards locking the token)"
            )
        now = self._clock()
        if now < self._retry_at:
            raise KeyStoreUnavailable(
                f"PKCS#11 token {self._token_label!r} is unavailable; next attempt in "
                f"{self._retry_at - now:.1f} s"
            )
        try:
            self._session = self._login(self._token())
        except KeyStoreUnavailable:
            self._retry_at = now + self._reconnect_interval
            raise
        self._retry_at = 0.0
        return self._session

    def _lose_session(self, session: Session) -> None:
        """The session went with the token: close what is left of it; the next call reopens."""
        self._session = None
        _close_quietly(session)

    def _token_present(self) -> bool:
        """Whether the module still lists our token (a missing key may mean a missing token)."""
        try:
            self._token()
        except KeyStoreUnavailable:
            return False
        return True

    def _run(self, operation: Callable[[Session], _T]) -> _T:
        with _TOKEN_LOCK:
            session = self._open_session()
            try:
                return operation(session)
            except _CONNECTION_LOST as exc:
                self._lose_session(session)
                raise KeyStoreUnavailable(
                    f"PKCS#11 token {self._token_label!r} became unavailable ({type(exc).__name__})"
                ) from exc
            except (KeyNotFound, _TokenGone) as exc:
                if isinstance(exc, KeyNotFound) and self._token_present():
                    raise
                self._lose_session(session)
                raise KeyStoreUnavailable(
                    f"PKCS#11 token {self._token_label!r} became unavailable (it is not listed)"
                ) from None
            except p11.PKCS11Error as exc:
                raise KeyStoreError(
                    f"PKCS#11 operation on token {self._token_label!r} failed "
                    f"({type(exc).__name__})"
                ) from exc

    def check(self) -> None:
        """The health probe: log in if need be and check that the token is still listed.

        Raises ``KeyStoreUnavailable`` when it is not (or cannot be reached); after an outage
        this is what reconnects, before any signature is asked for.
        """

        def op(_session: Session) -> None:
            if not self._token_present():
                raise _TokenGone

        self._run(op)

    @staticmethod
    def _key(session: Session, object_class: ObjectClass, kid: str) -> Any:
        try:
            return session.get_key(
                object_class=object_class, key_type=KeyType.EC, id=check_kid(kid).encode()
            )
        except p11.NoSuchKey:
            raise KeyNotFound(f"no key {kid}") from None
        except p11.MultipleObjectsReturned:
            raise KeyStoreError(f"several token objects have the id of key {kid}") from None

    # -- SigningKeyStore -------------------------------------------------------------------

    def generate(self, purpose: str) -> KeyInfo:
        """Generate a P-256 pair on the token (private half sensitive, non-extractable)."""
        label = LABEL_PREFIX + check_purpose(purpose)

        def op(session: Session) -> KeyInfo:
            pending = _PENDING_ID_PREFIX + secrets.token_bytes(PENDING_ID_RANDOM_BYTES)
            public, private = session.generate_keypair(
                KeyType.EC,
                id=pending,
                label=label,
                store=True,
                capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
                mechanism=Mechanism.EC_KEY_PAIR_GEN,
                public_template={Attribute.EC_PARAMS: P256_EC_PARAMS},
                private_template={
                    Attribute.TOKEN: True,
                    Attribute.PRIVATE: True,
                    Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: False,
                },
            )
            try:
                _check_private_attributes(private)
                jwk = _public_jwk_of(public)
                kid_id = jwk["kid"].encode()
                private[Attribute.ID] = kid_id
                public[Attribute.ID] = kid_id
            except BaseException:
                _destroy_quietly(public, private)
                raise
            return KeyInfo(kid=jwk["kid"], purpose=purpose, backend=self.backend, public_jwk=jwk)

        return self._run(op)

    def sign(self, kid: str, data: bytes) -> bytes:
        """RFC 7518 §3.4: CKM_ECDSA over SHA-256(data); the token returns raw R || S."""
        hashed = digest(data)

        def op(session: Session) -> bytes:
            signature: bytes = self._key(session, ObjectClass.PRIVATE_KEY, kid).sign(
                hashed, mechanism=Mechanism.ECDSA
            )
            if len(signature) != SIGNATURE_LEN:
                raise KeyStoreError("token returned a signature that is not 64 octets")
            return signature

        return self._run(op)

    def public_jwk(self, kid: str) -> dict[str, str]:
        def op(session: Session) -> dict[str, str]:
            jwk = _public_jwk_of(self._key(session, ObjectClass.PUBLIC_KEY, kid))
            # RFC 7638: the kid is checkable; an object whose id is not its thumbprint is refused.
            if jwk["kid"] != kid:
                raise KeyStoreError(f"token object {kid} holds a key with another thumbprint")
            return jwk

        return self._run(op)

    def list_kids(self) -> list[str]:
        def op(session: Session) -> list[str]:
            objects = list(
                session.get_objects(
                    {Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.KEY_TYPE: KeyType.EC}
                )
            )
            kids: list[str] = []
            for obj in objects:
                if not str(obj[Attribute.LABEL]).startswith(LABEL_PREFIX):
                    continue
                kid = bytes(obj[Attribute.ID]).decode("ascii", errors="replace")
                if is_kid(kid) and _holds_key(obj, kid):
                    kids.append(kid)
            if not kids and not self._token_present():  # no keys, or no token?
                raise _TokenGone
            return sorted(kids)

        return self._run(op)

    def delete(self, kid: str) -> None:
        kid_id = check_kid(kid).encode()

        def op(session: Session) -> None:
            objects = [
                obj
                for obj in session.get_objects({Attribute.ID: kid_id})
                if obj.object_class in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY)
                and str(obj[Attribute.LABEL]).startswith(LABEL_PREFIX)
            ]
            if not objects:
                raise KeyNotFound(f"no key {kid}")
            for obj in objects:
                obj.destroy()

        self._run(op)
