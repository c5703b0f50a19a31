"""JWS ES256 round trips and the refusals of the closed list (spec §7, CONVENTIONS 5)."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from jose_testlib import b64, new_key, segment, unb64

from healthid.protocol.jose import (
    TYP_ENTITY_STATEMENT,
    TYP_ID_TOKEN,
    AlgorithmNotAllowed,
    BadSignature,
    ForbiddenHeader,
    MalformedToken,
    TokenTooLarge,
    UnknownKey,
    UnsuitableKey,
    WrongType,
    sign_compact,
    verify_compact,
)
from healthid.protocol.jose.jws import (
    MAX_COMPACT_JWS_CHARS,
    MAX_HEADER_SEGMENT_CHARS,
    MAX_PAYLOAD_SEGMENT_CHARS,
)

KEY = new_key("k1")


def token(claims: dict[str, object] | None = None, typ: str = TYP_ID_TOKEN, **extra: object) -> str:
    return sign_compact(
        claims or {"sub": "x"}, kid=KEY.kid, typ=typ, signer=KEY.sign, extra_header=extra or None
    )


def forged(header: dict[str, object], claims: dict[str, object], signature: bytes) -> str:
    return f"{segment(header)}.{segment(claims)}.{b64(signature)}"


def test_es256_round_trip_with_injected_signer() -> None:
    verified = verify_compact(token({"a": 1}), jwks=KEY.jwks, typ=TYP_ID_TOKEN)
    assert verified.claims == {"a": 1}
    assert dict(verified.header) == {"alg": "ES256", "kid": "k1", "typ": "JWT"}
    assert verified.kid == "k1"


def test_x5c_header_is_carried_but_never_selects_the_key() -> None:
    tok = token(x5c=["MIIB"])
    assert verify_compact(tok, jwks=KEY.jwks, typ=TYP_ID_TOKEN).header["x5c"] == ["MIIB"]


def test_typ_comparison_allows_application_prefix() -> None:
    tok = token(typ="application/entity-statement+jwt")
    verify_compact(tok, jwks=KEY.jwks, typ=TYP_ENTITY_STATEMENT)


def test_refuses_alg_none() -> None:
    tok = f"{segment({'alg': 'none', 'kid': 'k1', 'typ': 'JWT'})}.{segment({'a': 1})}."
    with pytest.raises(AlgorithmNotAllowed):
        verify_compact(tok, jwks=KEY.jwks, typ=TYP_ID_TOKEN)


def test_refuses_hs256_with_the_public_key_as_secret() -> None:
    header = {"alg": "HS256", "kid": "k1", "typ": "JWT"}
    secret = KEY.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = f"{segment(header)}.{segment({'a': 1})}".encode()
    mac = hmac.new(secret, signing_input, hashlib.sha256).digest()
    with pytest.raises(AlgorithmNotAllowed):
        verify_compact(f"{signing_input.decode()}.{b64(mac)}", jwks=KEY.jwks, typ=TYP_ID_TOKEN)


def test_refuses_rs256() -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    header = {"alg": "RS256", "kid": "k1", "typ": "JWT"}
    signing_input = f"{segment(header)}.{segment({'a': 1})}".encode()
    sig = rsa_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    with pytest.raises((AlgorithmNotAllowed, TokenTooLarge)):
        verify_compact(f"{signing_input.decode()}.{b64(sig)}", jwks=KEY.jwks, typ=TYP_ID_TOKEN)
    small = f"{signing_input.decode()}.{b64(b'x' * 64)}"
    with pytest.raises(AlgorithmNotAllowed):
        verify_compact(small, jwks=KEY.jwks, typ=TYP_ID_TOKEN)


def test_refuses_es384_token_and_p384_key() -> None:
    header = {"alg": "ES384", "kid": "k1", "typ": "JWT"}
    with pytest.raises(AlgorithmNotAllowed):
        verify_compact(forged(header, {"a": 1}, b"x" * 64), jwks=KEY.jwks, typ=TYP_ID_TOKEN)
    p384 = new_key("k1", ec.SECP384R1())
    with pytest.raises(UnsuitableKey):
        p384.jwk  # noqa: B018 - public_jwk refuses a P-384 key


@pytest.mark.parametrize("name", ["jwk", "jku", "x5u"])
def test_refuses_header_that_supplies_the_key(name: str) -> None:
    attacker = new_key("k1")
    values = {"jwk": attacker.jwk, "jku": "https://evil.example/jwks", "x5u": "https://evil/x"}
    header = {"alg": "ES256", "kid": "k1", "typ": "JWT", name: values[name]}
    signing_input = f"{segment(header)}.{segment({'a': 1})}"
    tok = f"{signing_input}.{b64(attacker.sign('k1', signing_input.encode()))}"
    with pytest.raises(ForbiddenHeader):
        verify_compact(tok, jwks=KEY.jwks, typ=TYP_ID_TOKEN)
    with pytest.raises(ForbiddenHeader):
        token(**{name: values[name]})


def test_refuses_crit_header() -> None:
    with pytest.raises(ForbiddenHeader):
        verify_compact(token(crit=["exp"]), jwks=KEY.jwks, typ=TYP_ID_TOKEN)


def test_refuses_unknown_kid() -> None:
    other = new_key("k2")
    with pytest.raises(UnknownKey):
        verify_compact(token(), jwks=other.jwks, typ=TYP_ID_TOKEN)


def test_refuses_ambiguous_kid() -> None:
    twin = new_key("k1")
    with pytest.raises(UnknownKey):
        verify_compact(token(), jwks={"keys": [KEY.jwk, twin.jwk]}, typ=TYP_ID_TOKEN)


def test_refuses_same_kid_other_key() -> None:
    impostor = new_key("k1")
    with pytest.raises(BadSignature):
        verify_compact(token(), jwks=impostor.jwks, typ=TYP_ID_TOKEN)


def test_refuses_enc_key_for_signature() -> None:
    enc = {**KEY.jwk, "use": "enc"}
    with pytest.raises(UnknownKey):
        verify_compact(token(), jwks={"keys": [enc]}, typ=TYP_ID_TOKEN)


def test_refuses_wrong_typ() -> None:
    with pytest.raises(WrongType):
        verify_compact(token(), jwks=KEY.jwks, typ=TYP_ENTITY_STATEMENT)
    with pytest.raises(WrongType):
        verify_compact(token(typ="jwk-set+json"), jwks=KEY.jwks, typ=TYP_ENTITY_STATEMENT)


def test_refuses_tampered_payload() -> None:
    header, _, sig = token({"sub": "alice"}).split(".")
    with pytest.raises(BadSignature):
        verify_compact(f"{header}.{segment({'sub': 'mallory'})}.{sig}", jwks=KEY.jwks, typ="JWT")


def test_refuses_too_large_token_header_and_payload() -> None:
    with pytest.raises(TokenTooLarge):
        verify_compact("a" * (MAX_COMPACT_JWS_CHARS + 1), jwks=KEY.jwks, typ=TYP_ID_TOKEN)
    big_header = f"{'a' * (MAX_HEADER_SEGMENT_CHARS + 1)}.{segment({})}.{'a' * 86}"
    with pytest.raises(TokenTooLarge):
        verify_compact(big_header, jwks=KEY.jwks, typ=TYP_ID_TOKEN)
    big_payload = f"{segment({})}.{'a' * (MAX_PAYLOAD_SEGMENT_CHARS + 1)}.{'a' * 86}"
    with pytest.raises(TokenTooLarge):
        verify_compact(big_payload, jwks=KEY.jwks, typ=TYP_ID_TOKEN)
    with pytest.raises(TokenTooLarge):
        token({"blob": "x" * MAX_PAYLOAD_SEGMENT_CHARS})


@pytest.mark.parametrize("bad", ["a.b", "a.b.c.d", "!!!.e30.AA", "WzFd.e30.AA"])
def test_refuses_malformed_compact(bad: str) -> None:
    with pytest.raises(MalformedToken):
        verify_compact(bad, jwks=KEY.jwks, typ=TYP_ID_TOKEN)


def test_refuses_signer_returning_der() -> None:
    def der_signer(kid: str, data: bytes) -> bytes:
        return KEY.private.sign(data, ec.ECDSA(hashes.SHA256()))

    with pytest.raises(BadSignature):
        sign_compact({}, kid="k1", typ="JWT", signer=der_signer)


def test_signature_segment_is_raw_r_s() -> None:
    assert len(unb64(token().split(".")[2])) == 64
