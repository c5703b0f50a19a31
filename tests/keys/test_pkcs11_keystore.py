"""Pkcs11KeyStore against a real SoftHSM2 token (fixture ``softhsm_token``)."""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pkcs11
import pytest
from keys_testlib import joserfc_thumbprint, verify_es256
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11 import exceptions as p11

from healthid.keys.base import KeyNotFound, KeyStoreError, KeyStoreUnavailable, SigningKeyStore
from healthid.keys.pkcs11 import (
    LABEL_PREFIX,
    P256_EC_PARAMS,
    RECONNECT_INTERVAL,
    Pkcs11KeyStore,
)

pytestmark = pytest.mark.softhsm

WRONG_PIN = "wrong-pin-918273"


@pytest.fixture(autouse=True)
def _fresh_module(softhsm_token: Any) -> Iterator[None]:
    """Each test's token lives in its own SOFTHSM2_CONF; finalise the module afterwards so
    the next test's C_Initialize reads its own configuration."""
    yield
    pkcs11.unload(str(softhsm_token.module))


@pytest.fixture
def store(softhsm_token: Any) -> Iterator[Pkcs11KeyStore]:
    with Pkcs11KeyStore(softhsm_token.module, softhsm_token.label, softhsm_token.pin) as s:
        yield s


def _raw_session(token: Any) -> Any:
    """A second, unauthenticated session; it shares the store's login (login is per process)."""
    lib = pkcs11.lib(str(token.module))
    return lib.get_token(token_label=token.label).open(rw=True)


def _raw_keypair(token: Any, *, label: str, id_: bytes) -> None:
    with _raw_session(token) as session:
        session.generate_keypair(
            KeyType.EC,
            id=id_,
            label=label,
            store=True,
            capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
            mechanism=Mechanism.EC_KEY_PAIR_GEN,
            public_template={Attribute.EC_PARAMS: P256_EC_PARAMS},
        )


def _full_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc)


def test_pkcs11_store_satisfies_the_port(store: Pkcs11KeyStore) -> None:
    port: SigningKeyStore = store
    assert port.backend == "pkcs11"


def test_pkcs11_signature_verifies_with_cryptography(store: Pkcs11KeyStore) -> None:
    info = store.generate("federation")
    signature = store.sign(info.kid, b"entity statement")
    assert len(signature) == 64
    assert verify_es256(dict(info.public_jwk), b"entity statement", signature)
    assert verify_es256(store.public_jwk(info.kid), b"entity statement", signature)
    assert not verify_es256(dict(info.public_jwk), b"entity statemenT", signature)


def test_pkcs11_kids_are_unique_rfc7638_thumbprints(store: Pkcs11KeyStore) -> None:
    infos = [store.generate("federation") for _ in range(4)]
    kids = [i.kid for i in infos]
    assert len(set(kids)) == 4
    for info in infos:
        jwk = store.public_jwk(info.kid)
        assert jwk == dict(info.public_jwk)
        assert jwk["kid"] == info.kid == joserfc_thumbprint(jwk)
        assert (jwk["kty"], jwk["crv"], jwk["alg"]) == ("EC", "P-256", "ES256")
    assert store.list_kids() == sorted(kids)


def test_pkcs11_private_key_is_not_extractable(store: Pkcs11KeyStore, softhsm_token: Any) -> None:
    info = store.generate("federation")
    with _raw_session(softhsm_token) as session:
        private = session.get_key(
            object_class=ObjectClass.PRIVATE_KEY, key_type=KeyType.EC, id=info.kid.encode()
        )
        with pytest.raises(p11.AttributeSensitive):
            private[Attribute.VALUE]
        assert private[Attribute.SENSITIVE] is True
        assert private[Attribute.ALWAYS_SENSITIVE] is True
        assert private[Attribute.EXTRACTABLE] is False
        assert private[Attribute.NEVER_EXTRACTABLE] is True
        assert private[Attribute.TOKEN] is True
        assert private[Attribute.PRIVATE] is True
        assert private[Attribute.SIGN] is True
        assert private[Attribute.DERIVE] is False
        assert private[Attribute.DECRYPT] is False
        assert private[Attribute.LABEL] == LABEL_PREFIX + "federation"
        public = session.get_key(
            object_class=ObjectClass.PUBLIC_KEY, key_type=KeyType.EC, id=info.kid.encode()
        )
        assert public[Attribute.EC_PARAMS] == P256_EC_PARAMS


def test_pkcs11_keys_persist_on_the_token(softhsm_token: Any) -> None:
    t = softhsm_token
    with Pkcs11KeyStore(t.module, t.label, t.pin) as first:
        info = first.generate("federation")
    with Pkcs11KeyStore(t.module, t.label, t.pin) as second:
        assert second.list_kids() == [info.kid]
        assert verify_es256(dict(info.public_jwk), b"x", second.sign(info.kid, b"x"))


def test_pkcs11_wrong_pin_is_unavailable_and_never_echoed(softhsm_token: Any) -> None:
    t = softhsm_token
    store = Pkcs11KeyStore(t.module, t.label, WRONG_PIN)
    with pytest.raises(KeyStoreUnavailable, match="rejected the PIN") as first:
        store.list_kids()
    with pytest.raises(KeyStoreUnavailable, match="rejected the PIN earlier") as second:
        store.generate("federation")
    for exc in (first.value, second.value):
        assert WRONG_PIN not in _full_text(exc)
        assert t.pin not in str(exc)
    assert WRONG_PIN not in repr(store)
    store.close()
    # The right PIN still works: the store did not keep trying the wrong one.
    with Pkcs11KeyStore(t.module, t.label, t.pin) as good:
        assert good.list_kids() == []


def test_pkcs11_repr_does_not_contain_the_pin(store: Pkcs11KeyStore, softhsm_token: Any) -> None:
    assert softhsm_token.pin not in repr(store)
    assert "token_label" in repr(store)


def test_pkcs11_unknown_token_is_unavailable(softhsm_token: Any) -> None:
    store = Pkcs11KeyStore(softhsm_token.module, "no-such-token", softhsm_token.pin)
    with pytest.raises(KeyStoreUnavailable, match="no PKCS#11 token labelled 'no-such-token'"):
        store.generate("federation")


def test_pkcs11_unloadable_module_is_unavailable(tmp_path: Path, softhsm_token: Any) -> None:
    module = tmp_path / "not-a-module.so"
    module.write_bytes(b"not an ELF file")
    store = Pkcs11KeyStore(module, softhsm_token.label, softhsm_token.pin)
    with pytest.raises(
        KeyStoreUnavailable, match="cannot load or initialise PKCS#11 module"
    ) as caught:
        store.sign("A" * 43, b"x")
    assert softhsm_token.pin not in _full_text(caught.value)


def test_pkcs11_refuses_second_login_in_same_process(
    store: Pkcs11KeyStore, softhsm_token: Any
) -> None:
    store.list_kids()  # logged in
    t = softhsm_token
    other = Pkcs11KeyStore(t.module, t.label, WRONG_PIN)
    with pytest.raises(KeyStoreError, match="already logged in") as caught:
        other.list_kids()
    assert WRONG_PIN not in _full_text(caught.value)


def test_pkcs11_unknown_kid_is_key_not_found(store: Pkcs11KeyStore) -> None:
    with pytest.raises(KeyNotFound):
        store.sign("A" * 43, b"x")
    with pytest.raises(KeyNotFound):
        store.public_jwk("A" * 43)
    with pytest.raises(KeyNotFound):
        store.delete("A" * 43)
    with pytest.raises(KeyNotFound):
        store.sign("../x", b"x")


def test_pkcs11_delete_destroys_both_halves(store: Pkcs11KeyStore, softhsm_token: Any) -> None:
    keep = store.generate("federation")
    gone = store.generate("federation")
    store.delete(gone.kid)
    assert store.list_kids() == [keep.kid]
    with pytest.raises(KeyNotFound):
        store.sign(gone.kid, b"x")
    with _raw_session(softhsm_token) as session:
        assert list(session.get_objects({Attribute.ID: gone.kid.encode()})) == []


def test_pkcs11_list_ignores_foreign_and_pending_objects(
    store: Pkcs11KeyStore, softhsm_token: Any
) -> None:
    info = store.generate("federation")
    _raw_keypair(softhsm_token, label="someone-else", id_=b"x" * 43)
    _raw_keypair(softhsm_token, label=LABEL_PREFIX + "federation", id_=b"pending:123")
    assert store.list_kids() == [info.kid]


def test_pkcs11_refuses_object_whose_id_is_not_its_thumbprint(
    store: Pkcs11KeyStore, softhsm_token: Any
) -> None:
    store.list_kids()  # logged in
    forged = "F" * 43
    _raw_keypair(softhsm_token, label=LABEL_PREFIX + "federation", id_=forged.encode())
    with pytest.raises(KeyStoreError, match="another thumbprint"):
        store.public_jwk(forged)
    assert forged not in store.list_kids()


def test_pkcs11_concurrent_signing_is_serialised(store: Pkcs11KeyStore) -> None:
    info = store.generate("federation")
    messages = [f"message {i}".encode() for i in range(64)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        signatures = list(pool.map(lambda m: store.sign(info.kid, m), messages))
    jwk = dict(info.public_jwk)
    assert all(verify_es256(jwk, m, s) for m, s in zip(messages, signatures, strict=True))


def test_pkcs11_reopens_after_close(store: Pkcs11KeyStore) -> None:
    info = store.generate("federation")
    store.close()
    assert verify_es256(dict(info.public_jwk), b"x", store.sign(info.kid, b"x"))


# -- outages: the token removed, the session broken (issue #7) --------------------------------
@contextmanager
def token_removed(token: Any) -> Iterator[None]:
    """SoftHSM's token pulled: its token directory moved away (and back at the end)."""
    tokendir = next(
        line.split("=", 1)[1].strip()
        for line in token.conf.read_text().splitlines()
        if line.startswith("directories.tokendir")
    )
    tokens = Path(tokendir)
    away = tokens.with_name(tokens.name + "-away")
    tokens.rename(away)
    try:
        yield
    finally:
        away.rename(tokens)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_pkcs11_removed_token_is_unavailable_not_a_missing_key(
    store: Pkcs11KeyStore, softhsm_token: Any
) -> None:
    """SoftHSM answers "no such object" once its token is gone: that must read as an outage
    (503 at the token endpoint), not as a key that does not exist."""
    info = store.generate("token")
    with token_removed(softhsm_token):
        for call in (
            lambda: store.sign(info.kid, b"x"),
            lambda: store.public_jwk(info.kid),
            store.list_kids,
            store.check,
        ):
            with pytest.raises(KeyStoreUnavailable) as caught:
                call()
            assert not isinstance(caught.value, KeyNotFound)
            assert softhsm_token.pin not in _full_text(caught.value)


def test_pkcs11_store_resumes_when_the_token_returns_without_a_restart(
    softhsm_token: Any,
) -> None:
    t, clock = softhsm_token, Clock()
    with Pkcs11KeyStore(t.module, t.label, t.pin, clock=clock) as store:
        info = store.generate("token")
        store.check()
        with token_removed(t):
            with pytest.raises(KeyStoreUnavailable):
                store.sign(info.kid, b"id token")
            with pytest.raises(KeyStoreUnavailable):  # tried to reconnect: failed
                store.check()
        # back, but within RECONNECT_INTERVAL of the failed attempt: fail fast, no new try
        with pytest.raises(KeyStoreUnavailable, match="next attempt in"):
            store.sign(info.kid, b"id token")
        clock.now += RECONNECT_INTERVAL
        store.check()  # the health probe reconnects (re-initialises the module, logs in)
        signature = store.sign(info.kid, b"id token")
        assert verify_es256(dict(info.public_jwk), b"id token", signature)
        assert store.list_kids() == [info.kid]


# python-pkcs11's object search, abandoned on the dead session, fails again in its finaliser
# (C_FindObjectsFinal: SessionHandleInvalid), which Python can only report as "ignored"
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_pkcs11_broken_session_is_unavailable_and_reopened(store: Pkcs11KeyStore) -> None:
    info = store.generate("token")
    session = store._session  # the store's session, closed behind its back
    assert session is not None
    session.close()
    with pytest.raises(KeyStoreUnavailable, match="became unavailable"):
        store.sign(info.kid, b"x")
    assert verify_es256(dict(info.public_jwk), b"x", store.sign(info.kid, b"x"))
