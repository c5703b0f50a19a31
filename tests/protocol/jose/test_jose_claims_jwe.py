"""Time claims with an injected clock, and ID-token JWE ECDH-ES + A256GCM (spec §5, §7, §8)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jose_testlib import b64, new_key, segment, unb64

from healthid.protocol.jose import (
    CLOCK_SKEW_SECONDS,
    AlgorithmNotAllowed,
    DecryptionFailed,
    Expired,
    ForbiddenHeader,
    InvalidClaims,
    NotYetValid,
    UnsuitableKey,
    WrongType,
    check_times,
    decrypt_id_token,
    encrypt_id_token,
    public_jwk,
    sign_compact,
)
from healthid.protocol.jose.jwe import concat_kdf

NOW = 1_750_000_000


def test_accepts_valid_times_and_returns_exp() -> None:
    assert check_times({"iat": NOW, "exp": NOW + 300}, now=NOW) == NOW + 300


def test_refuses_expired() -> None:
    with pytest.raises(Expired):
        check_times({"iat": NOW - 400, "exp": NOW - CLOCK_SKEW_SECONDS}, now=NOW)


def test_tolerates_expiry_within_clock_skew() -> None:
    check_times({"iat": NOW - 400, "exp": NOW - CLOCK_SKEW_SECONDS + 1}, now=NOW)


def test_refuses_not_yet_valid_nbf() -> None:
    claims = {"iat": NOW, "nbf": NOW + CLOCK_SKEW_SECONDS + 1, "exp": NOW + 900}
    with pytest.raises(NotYetValid):
        check_times(claims, now=NOW)


def test_refuses_iat_in_the_future() -> None:
    with pytest.raises(NotYetValid):
        check_times({"iat": NOW + CLOCK_SKEW_SECONDS + 1, "exp": NOW + 900}, now=NOW)


@pytest.mark.parametrize(
    "claims", [{"iat": NOW}, {"iat": NOW, "exp": "later"}, {"iat": NOW, "exp": True}, {"exp": NOW}]
)
def test_refuses_missing_or_mistyped_time_claims(claims: dict[str, object]) -> None:
    with pytest.raises(InvalidClaims):
        check_times(claims, now=NOW)


SIGNING = new_key("puk_fed_idp_token")
RP_ENC = ec.generate_private_key(ec.SECP256R1())
RP_ENC_JWK = public_jwk(RP_ENC.public_key(), kid="puk_fd_enc", use="enc")


def id_token() -> str:
    return sign_compact({"iss": "https://idp"}, kid=SIGNING.kid, typ="JWT", signer=SIGNING.sign)


def test_jwe_round_trip_with_gematik_header() -> None:
    jws = id_token()
    jwe = encrypt_id_token(jws, recipient_jwk=RP_ENC_JWK)
    header = json.loads(unb64(jwe.split(".")[0]))
    assert header["alg"] == "ECDH-ES" and header["enc"] == "A256GCM"
    assert header["cty"] == "JWT" and header["kid"] == "puk_fd_enc"
    assert header["version"] == "2.0.0" and header["epk"]["crv"] == "P-256"
    assert "crit" not in header
    assert jwe.split(".")[1] == ""  # direct key agreement: empty encrypted key
    assert decrypt_id_token(jwe, private_key=RP_ENC) == jws


ECDH_ES_VECTOR = json.loads(
    (Path(__file__).parents[2] / "vectors" / "jose" / "rfc7518_appendix_c_ecdh_es.json").read_text()
)


def test_concat_kdf_matches_rfc7518_appendix_c() -> None:
    v = ECDH_ES_VECTOR
    bob = ec.derive_private_key(int.from_bytes(unb64(v["bob_recipient_d"]), "big"), ec.SECP256R1())
    alice = ec.derive_private_key(
        int.from_bytes(unb64(v["alice_ephemeral_d"]), "big"), ec.SECP256R1()
    )
    assert public_jwk(alice.public_key(), kid="a", use="enc")["x"] == v["alice_ephemeral_x"]
    assert public_jwk(bob.public_key(), kid="b", use="enc")["x"] == v["bob_recipient_x"]
    shared = alice.exchange(ec.ECDH(), bob.public_key())
    assert list(shared) == v["shared_secret"]
    key = concat_kdf(
        shared,
        enc=v["enc"],
        key_bytes=v["key_bytes"],
        apu=v["apu"].encode(),
        apv=v["apv"].encode(),
    )
    assert b64(key) == v["derived_key"]


def test_jwe_uses_a_fresh_ephemeral_key_and_iv_for_every_token() -> None:
    jws = id_token()
    first, second = (encrypt_id_token(jws, recipient_jwk=RP_ENC_JWK) for _ in range(2))
    epks = [json.loads(unb64(t.split(".")[0]))["epk"] for t in (first, second)]
    assert epks[0] != epks[1] and first.split(".")[2] != second.split(".")[2]
    assert set(epks[0]) == {"kty", "crv", "x", "y"}  # the public part only (RFC 7518 §4.6.1.1)
    assert len(unb64(first.split(".")[2])) == 12 and len(unb64(first.split(".")[4])) == 16
    assert decrypt_id_token(first, private_key=RP_ENC) == decrypt_id_token(
        second, private_key=RP_ENC
    )


def test_jwe_header_is_authenticated() -> None:
    jwe = encrypt_id_token(id_token(), recipient_jwk=RP_ENC_JWK)
    protected, *rest = jwe.split(".")
    header = json.loads(unb64(protected))
    forged = b64(json.dumps({**header, "kid": "other"}).encode())
    with pytest.raises(DecryptionFailed):
        decrypt_id_token(".".join([forged, *rest]), private_key=RP_ENC)


def test_jwe_refuses_sig_key_as_recipient() -> None:
    with pytest.raises(UnsuitableKey):
        encrypt_id_token(id_token(), recipient_jwk={**RP_ENC_JWK, "use": "sig"})


def test_jwe_refuses_p384_recipient() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key().public_numbers()
    jwk = {**RP_ENC_JWK, "crv": "P-384", "x": b64(p384.x.to_bytes(48, "big"))}
    with pytest.raises(UnsuitableKey):
        encrypt_id_token(id_token(), recipient_jwk=jwk)


def _with_header(jwe: str, **changes: object) -> str:
    parts = jwe.split(".")
    header = {**json.loads(unb64(parts[0])), **changes}
    return ".".join([segment(header), *parts[1:]])


@pytest.mark.parametrize(
    "changes", [{"alg": "ECDH-ES+A256KW"}, {"alg": "RSA-OAEP"}, {"enc": "A128CBC-HS256"}]
)
def test_jwe_refuses_algorithms_outside_the_closed_list(changes: dict[str, object]) -> None:
    jwe = encrypt_id_token(id_token(), recipient_jwk=RP_ENC_JWK)
    with pytest.raises(AlgorithmNotAllowed):
        decrypt_id_token(_with_header(jwe, **changes), private_key=RP_ENC)


def test_jwe_refuses_wrong_cty_and_key_supplying_header() -> None:
    jwe = encrypt_id_token(id_token(), recipient_jwk=RP_ENC_JWK)
    with pytest.raises(WrongType):
        decrypt_id_token(_with_header(jwe, cty="json"), private_key=RP_ENC)
    with pytest.raises(ForbiddenHeader):
        decrypt_id_token(_with_header(jwe, jku="https://evil"), private_key=RP_ENC)


def test_jwe_refuses_tampered_ciphertext_and_wrong_key() -> None:
    jwe = encrypt_id_token(id_token(), recipient_jwk=RP_ENC_JWK)
    parts = jwe.split(".")
    flipped = bytearray(unb64(parts[3]))
    flipped[0] ^= 1
    with pytest.raises(DecryptionFailed):
        decrypt_id_token(".".join([*parts[:3], b64(bytes(flipped)), parts[4]]), private_key=RP_ENC)
    with pytest.raises(DecryptionFailed):
        decrypt_id_token(jwe, private_key=ec.generate_private_key(ec.SECP256R1()))
