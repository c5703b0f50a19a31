"""Apple App Attest attestation and assertion (spec §4.1), on synthetic TEST-root data."""

from __future__ import annotations

import dataclasses
import time
from datetime import timedelta
from typing import NamedTuple

import cbor2
import pytest
from attestation_factory import (
    AAGUID_DEVELOPMENT,
    AAGUID_PRODUCTION,
    CHALLENGE,
    NOW,
    OTHER_CHALLENGE,
    TEAM_ID,
    ApplePki,
    apple_assertion,
    apple_attestation,
    cose_key,
    der,
    make_ca,
    make_root,
    p256,
    p384,
    sha256,
)
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from healthid.protocol.attestation import (
    AppIdentityMismatchError,
    AppleConfig,
    AppleDetails,
    AttestationFormat,
    AttestationTooLargeError,
    AttestedKey,
    ChallengeMismatchError,
    CounterReplayError,
    InvalidSignatureError,
    KeyClass,
    MalformedAttestationError,
    PolicyViolationError,
    UnsupportedKeyError,
    UntrustedChainError,
    verify_apple_assertion,
    verify_apple_attestation,
)


def verify(
    attestation: bytes, key_id: bytes, config: AppleConfig, challenge: bytes = CHALLENGE
) -> AttestedKey:
    return verify_apple_attestation(
        attestation, challenge=challenge, key_id=key_id, config=config, now=NOW
    )


# ------------------------------------------------------------------------------- attestation


def test_apple_accepts_a_genuine_production_attestation(
    apple_pki: ApplePki, apple_config: AppleConfig
) -> None:
    case = apple_attestation(apple_pki)
    key = verify_apple_attestation(
        case.attestation, challenge=CHALLENGE, key_id=case.key_id, config=apple_config, now=NOW
    )
    assert key.format is AttestationFormat.APPLE_APP_ATTEST
    assert key.key_class is KeyClass.SECURE_ELEMENT
    assert key.sign_count == 0
    assert key.development is False
    assert key.key_id == case.key_id
    assert key.public_key == case.device_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert key.details == AppleDetails(receipt=b"test receipt")


def test_apple_accepts_a_development_attestation_when_configured_for_development(
    apple_pki: ApplePki, apple_config: AppleConfig
) -> None:
    config = dataclasses.replace(apple_config, production=False)
    case = apple_attestation(apple_pki, aaguid=AAGUID_DEVELOPMENT)
    key = verify_apple_attestation(
        case.attestation, challenge=CHALLENGE, key_id=case.key_id, config=config, now=NOW
    )
    assert key.development is True


def test_apple_rejects_a_development_aaguid_in_production(
    apple_pki: ApplePki, apple_config: AppleConfig
) -> None:
    case = apple_attestation(apple_pki, aaguid=AAGUID_DEVELOPMENT)
    with pytest.raises(PolicyViolationError):
        verify(case.attestation, case.key_id, apple_config)


def test_apple_rejects_a_production_aaguid_in_development(
    apple_pki: ApplePki, apple_config: AppleConfig
) -> None:
    case = apple_attestation(apple_pki, aaguid=AAGUID_PRODUCTION)
    with pytest.raises(PolicyViolationError):
        verify(case.attestation, case.key_id, dataclasses.replace(apple_config, production=False))


def test_apple_rejects_an_unknown_aaguid(apple_pki: ApplePki, apple_config: AppleConfig) -> None:
    case = apple_attestation(apple_pki, aaguid=b"\x00" * 16)
    with pytest.raises(PolicyViolationError):
        verify(case.attestation, case.key_id, apple_config)


def test_apple_rejects_tampered_auth_data(apple_pki: ApplePki, apple_config: AppleConfig) -> None:
    case = apple_attestation(apple_pki)
    tampered = bytearray(case.auth_data)
    tampered[40] ^= 0x01  # inside the aaguid; the nonce no longer matches the certificate
    attestation = case.attestation.replace(case.auth_data, bytes(tampered))
    with pytest.raises(ChallengeMismatchError):
        verify(attestation, case.key_id, apple_config)


def test_apple_rejects_a_tampered_cred_cert_signature(
    apple_pki: ApplePki, apple_config: AppleConfig
) -> None:
    case = apple_attestation(apple_pki)
    cred_cert = cbor2.loads(case.attestation)["attStmt"]["x5c"][0]
    broken = cred_cert[:-3] + bytes([cred_cert[-3] ^ 0x01]) + cred_cert[-2:]
    with pytest.raises((UntrustedChainError, MalformedAttestationError)):
        verify(case.attestation.replace(cred_cert, broken), case.key_id, apple_config)


def test_apple_rejects_a_replayed_attestation_for_a_new_challenge(
    apple_pki: ApplePki, apple_config: AppleConfig
) -> None:
    case = apple_attestation(apple_pki, challenge=CHALLENGE)
    verify(case.attestation, case.key_id, apple_config, CHALLENGE)
    with pytest.raises(ChallengeMismatchError):
        verify(case.attestation, case.key_id, apple_config, OTHER_CHALLENGE)


def test_apple_rejects_the_wrong_challenge(apple_pki: ApplePki, apple_config: AppleConfig) -> None:
    case = apple_attestation(apple_pki, challenge=OTHER_CHALLENGE)
    with pytest.raises(ChallengeMismatchError):
        verify(case.attestation, case.key_id, apple_config)


def test_apple_rejects_another_apps_rp_id_hash(
    apple_pki: ApplePki, apple_config: AppleConfig
) -> None:
    case = apple_attestation(apple_pki, app_id=f"{TEAM_ID}.de.example.other")
    with pytest.raises(AppIdentityMismatchError):
        verify(case.attestation, case.key_id, apple_config)


def test_apple_rejects_another_teams_rp_id_hash(
    apple_pki: ApplePki, apple_config: AppleConfig
) -> None:
    case = apple_attestation(apple_pki)
    config = dataclasses.replace(apple_config, team_id="ZZZZZ99999")
    with pytest.raises(AppIdentityMismatchError):
        verify(case.attestation, case.key_id, config)


def test_apple_rejects_a_non_zero_counter(apple_pki: ApplePki, apple_config: AppleConfig) -> None:
    case = apple_attestation(apple_pki, sign_count=1)
    with pytest.raises(CounterReplayError):
        verify(case.attestation, case.key_id, apple_config)


def test_apple_rejects_a_key_id_that_is_not_the_cred_cert_key(
    apple_pki: ApplePki, apple_config: AppleConfig
) -> None:
    case = apple_attestation(apple_pki)
    with pytest.raises(MalformedAttestationError, match="keyId"):
        verify(case.attestation, sha256(b"another key"), apple_config)


def test_apple_rejects_a_credential_id_other_than_the_key_id(
    apple_pki: ApplePki, apple_config: AppleConfig
) -> None:
    case = apple_attestation(apple_pki, credential_id=sha256(b"another key"))
    with pytest.raises(MalformedAttestationError, match="credentialId"):
        verify(case.attestation, case.key_id, apple_config)


def test_apple_rejects_a_cose_key_other_than_the_cred_cert_key(
    apple_pki: ApplePki, apple_config: AppleConfig
) -> None:
    case = apple_attestation(apple_pki, cose=cose_key(p256().public_key()))
    with pytest.raises(MalformedAttestationError, match="COSE"):
        verify(case.attestation, case.key_id, apple_config)


def test_apple_rejects_a_chain_to_an_untrusted_root(
    apple_pki: ApplePki, apple_config: AppleConfig
) -> None:
    rogue = ApplePki.create()
    case = apple_attestation(rogue)
    with pytest.raises(UntrustedChainError):
        verify(case.attestation, case.key_id, apple_config)


def test_apple_rejects_a_chain_embedding_its_own_self_signed_root(
    apple_pki: ApplePki, apple_config: AppleConfig
) -> None:
    rogue_root = make_root("Test App Attestation Root CA")  # same name as the pinned root
    rogue = ApplePki(rogue_root, make_ca(rogue_root, "Test App Attestation CA 1"))
    case = apple_attestation(rogue)
    x5c = cbor2.loads(case.attestation)["attStmt"]["x5c"]
    forged = apple_attestation(
        rogue, device_key=case.device_key, x5c=[*x5c, der(rogue.root.certificate)]
    )
    with pytest.raises(UntrustedChainError):
        verify(forged.attestation, case.key_id, apple_config)


def test_apple_rejects_an_expired_cred_cert(apple_pki: ApplePki, apple_config: AppleConfig) -> None:
    case = apple_attestation(apple_pki, cred_cert_kwargs={"not_after": NOW - timedelta(minutes=1)})
    with pytest.raises(UntrustedChainError, match="expired"):
        verify(case.attestation, case.key_id, apple_config)


def test_apple_rejects_a_p384_device_key(apple_pki: ApplePki, apple_config: AppleConfig) -> None:
    case = apple_attestation(apple_pki, device_key=p384())
    with pytest.raises(UnsupportedKeyError):
        verify(case.attestation, case.key_id, apple_config)


def test_apple_rejects_10_megabytes_before_parsing(apple_config: AppleConfig) -> None:
    huge = b"\xa3" + b"\x00" * 10_000_000
    started = time.perf_counter()
    with pytest.raises(AttestationTooLargeError):
        verify(huge, sha256(b"k"), apple_config)
    assert time.perf_counter() - started < 0.1


def test_apple_rejects_another_format(apple_pki: ApplePki, apple_config: AppleConfig) -> None:
    case = apple_attestation(apple_pki, fmt="packed")
    with pytest.raises(MalformedAttestationError, match="fmt"):
        verify(case.attestation, case.key_id, apple_config)


def test_apple_rejects_a_cred_cert_with_a_foreign_nonce_extension(
    apple_pki: ApplePki, apple_config: AppleConfig
) -> None:
    case = apple_attestation(apple_pki, nonce_extension=b"\x30\x00")
    with pytest.raises(ChallengeMismatchError):
        verify(case.attestation, case.key_id, apple_config)


@pytest.mark.parametrize(
    "attestation",
    [
        b"",
        b"\xff",
        cbor2.dumps(["not", "a", "map"]),
        cbor2.dumps({"fmt": "apple-appattest"}),
        cbor2.dumps({"fmt": "apple-appattest", "attStmt": {}, "authData": b""}),
        cbor2.dumps(
            {"fmt": "apple-appattest", "attStmt": {"x5c": b"", "receipt": b""}, "authData": b""}
        ),
        cbor2.dumps({"a": [[[[[[[[[[1]]]]]]]]]]}),  # nesting beyond the bound
        bytes.fromhex("bf63666d74ff"),  # indefinite-length map
    ],
)
def test_apple_rejects_malformed_attestation_objects(
    attestation: bytes, apple_config: AppleConfig
) -> None:
    with pytest.raises(MalformedAttestationError):
        verify(attestation, sha256(b"k"), apple_config)


def test_apple_rejects_trailing_bytes_after_the_attestation_object(
    apple_pki: ApplePki, apple_config: AppleConfig
) -> None:
    case = apple_attestation(apple_pki)
    with pytest.raises(MalformedAttestationError, match="trailing"):
        verify(case.attestation + b"\x00", case.key_id, apple_config)


def test_apple_rejects_truncated_or_extended_auth_data(
    apple_pki: ApplePki, apple_config: AppleConfig
) -> None:
    case = apple_attestation(apple_pki)
    for auth_data in (case.auth_data[:-5], case.auth_data + b"\x00", case.auth_data[:36]):
        bad = apple_attestation(apple_pki, device_key=case.device_key, auth_data=auth_data)
        with pytest.raises(MalformedAttestationError):
            verify(bad.attestation, case.key_id, apple_config)


def test_apple_rejects_auth_data_flagging_extensions(
    apple_pki: ApplePki, apple_config: AppleConfig
) -> None:
    case = apple_attestation(apple_pki)
    auth_data = case.auth_data[:32] + b"\xc0" + case.auth_data[33:]
    bad = apple_attestation(apple_pki, device_key=case.device_key, auth_data=auth_data)
    with pytest.raises(MalformedAttestationError, match="extension"):
        verify(bad.attestation, case.key_id, apple_config)


def test_apple_config_refuses_an_invalid_team_id_or_no_roots(apple_pki: ApplePki) -> None:
    roots = (apple_pki.root.certificate,)
    with pytest.raises(ValueError, match="Team ID"):
        AppleConfig(team_id="abc", bundle_id="de.example", roots=roots, production=True)
    with pytest.raises(ValueError, match="root"):
        AppleConfig(team_id=TEAM_ID, bundle_id="de.example", roots=(), production=True)


# -------------------------------------------------------------------------------- assertion

CLIENT_DATA = b'{"challenge":"c2VydmVyIGNoYWxsZW5nZQ","action":"login"}'


class Registered(NamedTuple):
    device_key: ec.EllipticCurvePrivateKey
    public_key: bytes  # as stored after attestation


@pytest.fixture
def registered(apple_pki: ApplePki, apple_config: AppleConfig) -> Registered:
    case = apple_attestation(apple_pki)
    key = verify_apple_attestation(
        case.attestation, challenge=CHALLENGE, key_id=case.key_id, config=apple_config, now=NOW
    )
    return Registered(case.device_key, key.public_key)


def assert_(
    assertion: bytes,
    public_key: bytes,
    config: AppleConfig,
    previous: int = 0,
    client_data: bytes = CLIENT_DATA,
) -> int:
    return verify_apple_assertion(
        assertion,
        client_data=client_data,
        public_key=public_key,
        previous_sign_count=previous,
        config=config,
    )


def test_apple_assertion_returns_the_new_counter(
    registered: Registered, apple_config: AppleConfig
) -> None:
    device_key, public_key = registered
    assertion = apple_assertion(device_key, client_data=CLIENT_DATA, sign_count=1)
    assert assert_(assertion, public_key, apple_config, previous=0) == 1


def test_apple_assertion_rejects_a_counter_that_stays_equal(
    registered: Registered, apple_config: AppleConfig
) -> None:
    device_key, public_key = registered
    assertion = apple_assertion(device_key, client_data=CLIENT_DATA, sign_count=7)
    with pytest.raises(CounterReplayError):
        assert_(assertion, public_key, apple_config, previous=7)


def test_apple_assertion_rejects_a_counter_that_goes_backwards(
    registered: Registered, apple_config: AppleConfig
) -> None:
    device_key, public_key = registered
    assertion = apple_assertion(device_key, client_data=CLIENT_DATA, sign_count=6)
    with pytest.raises(CounterReplayError):
        assert_(assertion, public_key, apple_config, previous=7)


def test_apple_assertion_rejects_a_tampered_signature(
    registered: Registered, apple_config: AppleConfig
) -> None:
    device_key, public_key = registered
    fields = cbor2.loads(apple_assertion(device_key, client_data=CLIENT_DATA, sign_count=1))
    signature = bytearray(fields["signature"])
    signature[-1] ^= 0x01
    fields["signature"] = bytes(signature)
    with pytest.raises(InvalidSignatureError):
        assert_(cbor2.dumps(fields), public_key, apple_config)


def test_apple_assertion_rejects_tampered_authenticator_data(
    registered: Registered, apple_config: AppleConfig
) -> None:
    device_key, public_key = registered
    fields = cbor2.loads(apple_assertion(device_key, client_data=CLIENT_DATA, sign_count=1))
    data = fields["authenticatorData"]
    fields["authenticatorData"] = data[:33] + (2**31).to_bytes(4, "big")  # a bumped counter
    with pytest.raises(InvalidSignatureError):
        assert_(cbor2.dumps(fields), public_key, apple_config)


def test_apple_assertion_rejects_other_client_data(
    registered: Registered, apple_config: AppleConfig
) -> None:
    device_key, public_key = registered
    assertion = apple_assertion(device_key, client_data=CLIENT_DATA, sign_count=1)
    with pytest.raises(InvalidSignatureError):
        assert_(assertion, public_key, apple_config, client_data=b'{"challenge":"other"}')


def test_apple_assertion_rejects_another_key(
    registered: Registered, apple_config: AppleConfig
) -> None:
    _, public_key = registered
    assertion = apple_assertion(p256(), client_data=CLIENT_DATA, sign_count=1)
    with pytest.raises(InvalidSignatureError):
        assert_(assertion, public_key, apple_config)


def test_apple_assertion_rejects_another_apps_rp_id_hash(
    registered: Registered, apple_config: AppleConfig
) -> None:
    device_key, public_key = registered
    assertion = apple_assertion(
        device_key, client_data=CLIENT_DATA, sign_count=1, app_id=f"{TEAM_ID}.de.example.other"
    )
    with pytest.raises(AppIdentityMismatchError):
        assert_(assertion, public_key, apple_config)


def test_apple_assertion_rejects_a_stored_p384_key(apple_config: AppleConfig) -> None:
    key = p384()
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assertion = apple_assertion(key, client_data=CLIENT_DATA, sign_count=1)
    with pytest.raises(UnsupportedKeyError):
        assert_(assertion, spki, apple_config)


def test_apple_assertion_rejects_attested_data_or_trailing_bytes(
    registered: Registered, apple_config: AppleConfig
) -> None:
    device_key, public_key = registered
    for assertion in (
        apple_assertion(device_key, client_data=CLIENT_DATA, sign_count=1, flags=0x40),
        apple_assertion(device_key, client_data=CLIENT_DATA, sign_count=1, trailing=b"\x00"),
    ):
        with pytest.raises(MalformedAttestationError):
            assert_(assertion, public_key, apple_config)


def test_apple_assertion_rejects_10_megabytes_before_parsing(
    registered: Registered, apple_config: AppleConfig
) -> None:
    _, public_key = registered
    started = time.perf_counter()
    with pytest.raises(AttestationTooLargeError):
        assert_(b"\xa2" + b"\x00" * 10_000_000, public_key, apple_config)
    assert time.perf_counter() - started < 0.1


def test_apple_assertion_rejects_extra_fields(
    registered: Registered, apple_config: AppleConfig
) -> None:
    device_key, public_key = registered
    fields = cbor2.loads(apple_assertion(device_key, client_data=CLIENT_DATA, sign_count=1))
    fields["extra"] = b""
    with pytest.raises(MalformedAttestationError):
        assert_(cbor2.dumps(fields), public_key, apple_config)


def test_apple_derives_the_key_id_when_the_app_sent_none(
    apple_pki: ApplePki, apple_config: AppleConfig
) -> None:
    case = apple_attestation(apple_pki)
    key = verify_apple_attestation(
        case.attestation, challenge=CHALLENGE, config=apple_config, now=NOW
    )
    assert key.key_id == case.key_id


def test_apple_without_a_key_id_still_rejects_a_foreign_credential_id(
    apple_pki: ApplePki, apple_config: AppleConfig
) -> None:
    case = apple_attestation(apple_pki, credential_id=sha256(b"another key"))
    with pytest.raises(MalformedAttestationError, match="credentialId"):
        verify_apple_attestation(
            case.attestation, challenge=CHALLENGE, config=apple_config, now=NOW
        )


def test_apple_rejects_a_key_id_of_the_wrong_length(
    apple_pki: ApplePki, apple_config: AppleConfig
) -> None:
    case = apple_attestation(apple_pki)
    with pytest.raises(MalformedAttestationError, match="32 bytes"):
        verify(case.attestation, case.key_id[:16], apple_config)
