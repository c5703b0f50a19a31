"""RFC 7638 thumbprints, RFC 7518 §3.4 signature encoding and the P-256-only JWK reader."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from keys_testlib import b64u, joserfc_thumbprint

from healthid.keys import es256
from healthid.keys.base import KeyNotFound, check_kid, check_purpose
from healthid.keys.jwk import (
    JwkError,
    b64url_decode,
    ec_public_jwk,
    public_key_from_jwk,
    signing_jwk,
    thumbprint,
)


def _public(vector: dict[str, Any]) -> dict[str, str]:
    return {k: vector["jwk"][k] for k in ("kty", "crv", "x", "y")}


def test_thumbprint_matches_rfc7515_a3_vector(rfc7515_a3: dict[str, Any]) -> None:
    assert thumbprint(_public(rfc7515_a3)) == rfc7515_a3["thumbprint"]


def test_thumbprint_matches_joserfc() -> None:
    jwk = ec_public_jwk(ec.generate_private_key(ec.SECP256R1()).public_key())
    assert thumbprint(jwk) == joserfc_thumbprint(jwk)


def test_thumbprint_ignores_optional_members(rfc7515_a3: dict[str, Any]) -> None:
    jwk = {**_public(rfc7515_a3), "kid": "x", "use": "sig", "alg": "ES256"}
    assert thumbprint(jwk) == rfc7515_a3["thumbprint"]


def test_signing_jwk_carries_kid_use_alg_and_no_private_member(
    rfc7515_a3: dict[str, Any],
) -> None:
    key = public_key_from_jwk(_public(rfc7515_a3))
    jwk = signing_jwk(key)
    assert jwk == {
        **_public(rfc7515_a3),
        "kid": rfc7515_a3["thumbprint"],
        "use": "sig",
        "alg": "ES256",
    }
    assert "d" not in jwk


def test_rfc7515_a3_signature_verifies(rfc7515_a3: dict[str, Any]) -> None:
    key = public_key_from_jwk(_public(rfc7515_a3))
    data = rfc7515_a3["signing_input"].encode("ascii")
    signature = b64u(rfc7515_a3["signature"])
    assert es256.verify(key, data, signature)
    assert es256.jose_from_der(es256.der_from_jose(signature)) == signature


def test_es256_verify_rejects_tampered_data(rfc7515_a3: dict[str, Any]) -> None:
    key = public_key_from_jwk(_public(rfc7515_a3))
    data = rfc7515_a3["signing_input"].encode("ascii") + b"x"
    assert not es256.verify(key, data, b64u(rfc7515_a3["signature"]))


def test_es256_verify_rejects_der_signatures(rfc7515_a3: dict[str, Any]) -> None:
    key = public_key_from_jwk(_public(rfc7515_a3))
    data = rfc7515_a3["signing_input"].encode("ascii")
    der = es256.der_from_jose(b64u(rfc7515_a3["signature"]))
    assert not es256.verify(key, data, der)
    with pytest.raises(ValueError, match="64 octets"):
        es256.der_from_jose(der)


def test_es256_verify_rejects_other_curves() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    assert not es256.verify(p384, b"data", bytes(64))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kty": "RSA"}, "kty"),
        ({"crv": "P-384"}, "crv"),
        ({"alg": "HS256"}, "alg"),
        ({"alg": "none"}, "alg"),
        ({"x": "AAAA"}, "32 octets"),
        ({"y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0="}, "base64url"),
        ({"y": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU"}, "not on P-256"),
    ],
)
def test_public_key_from_jwk_rejects_non_es256_keys(
    rfc7515_a3: dict[str, Any], change: dict[str, str], message: str
) -> None:
    with pytest.raises(JwkError, match=message):
        public_key_from_jwk({**_public(rfc7515_a3), **change})


def test_ec_public_jwk_rejects_p384() -> None:
    with pytest.raises(JwkError, match="P-256"):
        ec_public_jwk(ec.generate_private_key(ec.SECP384R1()).public_key())


def test_b64url_decode_rejects_standard_alphabet() -> None:
    with pytest.raises(JwkError):
        b64url_decode("ab+/")


@pytest.mark.parametrize("kid", ["", "../../etc/passwd", "a" * 42, "a" * 44, "a" * 42 + "/"])
def test_check_kid_rejects_non_thumbprints(kid: str) -> None:
    with pytest.raises(KeyNotFound):
        check_kid(kid)


@pytest.mark.parametrize("purpose", ["", "Federation", "a" * 33, "fed/../x", "-x", "fed key"])
def test_check_purpose_rejects_unsafe_names(purpose: str) -> None:
    with pytest.raises(ValueError, match="purpose"):
        check_purpose(purpose)


def test_es256_sign_produces_raw_signatures_that_verify() -> None:
    from cryptography.hazmat.primitives.asymmetric import ec as _ec

    from healthid.keys import es256

    key = _ec.generate_private_key(_ec.SECP256R1())
    signature = es256.sign(key, b"payload")
    assert len(signature) == 64
    assert es256.verify(key.public_key(), b"payload", signature)
    assert not es256.verify(key.public_key(), b"payloaD", signature)
    import pytest as _pytest

    with _pytest.raises(ValueError):
        es256.sign(_ec.generate_private_key(_ec.SECP384R1()), b"payload")
