"""eGK card authentication (spec eid-egk-wallet-device.md §2.4): what a C.CH.AUT must be.

Cards come from the development TEST eGK CA; certificates a CA would never issue are built
here with the CA's key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from healthid.demo.egk_test_ca import TestCard, TestEgkCa, admission
from healthid.protocol.egk import (
    MAX_CERTIFICATE_BYTES,
    MAX_INTERMEDIATES,
    POLICY_OID_EGK_AUT,
    EgkError,
    EgkExpired,
    EgkIdentity,
    EgkMalformed,
    EgkNotInsured,
    EgkSignatureInvalid,
    EgkUntrusted,
    EgkWrongKeyType,
    verify_egk_authentication,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
KVNR = "A123456780"  # valid check digit (spec §2.1 vector)
GEMATIK_TEST_KVNR = "X114428530"  # on gematik's C.CH.AUT_E256 test card; fails the check digit
IK = "109500969"
GIVEN = "Erika"
FAMILY = "Mustermann"
CHALLENGE = bytes(range(32))
OID_ARZT = "1.2.276.0.76.4.30"  # professionOID of a physician (HBA), not of an insured person
# The Admission extension value of gematik's C.CH.AUT_E256 test cards (GEM.EGK-CA51 TEST-ONLY):
# one Admissions entry, professionItem "Versicherte/-r", professionOID 1.2.276.0.76.4.49.
GEMATIK_ADMISSION_DER = bytes.fromhex(
    "302530233021301f301d30100c0e56657273696368657274652f2d72300906072a8214004c0431"
)


# -- fixtures and helpers ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def ca() -> TestEgkCa:
    return TestEgkCa.create(not_before=NOW - timedelta(days=365))


@pytest.fixture(scope="module")
def other_ca() -> TestEgkCa:
    return TestEgkCa.create(not_before=NOW - timedelta(days=365))


@pytest.fixture(scope="module")
def card(ca: TestEgkCa) -> TestCard:
    return issue(ca)


def issue(ca: TestEgkCa, kvnr: str = KVNR, **options: object) -> TestCard:
    options.setdefault("not_before", NOW - timedelta(days=30))
    return ca.issue_card(kvnr, IK, GIVEN, FAMILY, **options)  # type: ignore[arg-type]


def verify(
    certificate: bytes | x509.Certificate,
    signature: bytes,
    *,
    cas: Sequence[x509.Certificate],
    challenge: bytes = CHALLENGE,
    now: datetime = NOW,
    intermediates: Sequence[bytes | x509.Certificate] = (),
    accept_test_kvnr: bool = False,
) -> EgkIdentity:
    return verify_egk_authentication(
        certificate_der=der(certificate),
        signature=signature,
        challenge=challenge,
        trusted_cas=cas,
        now=now,
        intermediates=[der(c) for c in intermediates],
        accept_test_kvnr=accept_test_kvnr,
    )


def der(cert: bytes | x509.Certificate) -> bytes:
    return cert if isinstance(cert, bytes) else cert.public_bytes(serialization.Encoding.DER)


def raw_sign(key: ec.EllipticCurvePrivateKey, challenge: bytes = CHALLENGE) -> bytes:
    r, s = decode_dss_signature(key.sign(challenge, ec.ECDSA(hashes.SHA256())))
    size = (key.curve.key_size + 7) // 8
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


@dataclass(frozen=True)
class Issuer:
    key: CertificateIssuerPrivateKeyTypes
    name: x509.Name


def issuer_of(ca: TestEgkCa) -> Issuer:
    return Issuer(ca.private_key, ca.certificate.subject)


def card_name(*extra: x509.NameAttribute, kvnr: str = KVNR) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, IK),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, kvnr),
            x509.NameAttribute(NameOID.SURNAME, FAMILY),
            x509.NameAttribute(NameOID.GIVEN_NAME, GIVEN),
            *extra,
        ]
    )


def usage(**flags: bool) -> x509.KeyUsage:
    names = (
        "digital_signature content_commitment key_encipherment data_encipherment "
        "key_agreement key_cert_sign crl_sign encipher_only decipher_only"
    ).split()
    return x509.KeyUsage(**{name: flags.get(name, False) for name in names})


CARD_USAGE = usage(digital_signature=True)
CA_USAGE = usage(key_cert_sign=True, crl_sign=True)


def build(
    issuer: Issuer | None,
    public_key: CertificatePublicKeyTypes,
    *,
    subject: x509.Name | None = None,
    self_key: CertificateIssuerPrivateKeyTypes | None = None,
    ca: bool = False,
    path_length: int | None = None,
    key_usage: x509.KeyUsage | None = CARD_USAGE,
    policy: bool = True,
    profession_oids: Sequence[str] = ("1.2.276.0.76.4.49",),
    extra: Sequence[x509.Extension[x509.ExtensionType]] = (),
    hash_algorithm: hashes.HashAlgorithm = hashes.SHA256(),  # noqa: B008 - immutable
    not_before: datetime = NOW - timedelta(days=30),
    not_after: datetime = NOW + timedelta(days=365),
) -> x509.Certificate:
    """Any certificate, including ones no CA should issue (``issuer=None``: self-signed)."""
    subject = subject or card_name()
    signer = issuer or Issuer(self_key, subject)  # type: ignore[arg-type]
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(signer.name)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
    )
    if key_usage is not None:
        builder = builder.add_extension(key_usage, critical=True)
    if policy:
        policies = x509.CertificatePolicies([x509.PolicyInformation(POLICY_OID_EGK_AUT, None)])
        builder = builder.add_extension(policies, critical=False)
    if profession_oids:
        oids = [x509.ObjectIdentifier(oid) for oid in profession_oids]
        info = x509.ProfessionInfo(None, ["Versicherte/-r"], oids, None, None)
        value = x509.Admissions(None, [x509.Admission(None, None, [info])])
        builder = builder.add_extension(value, critical=False)
    for ext in extra:
        builder = builder.add_extension(ext.value, critical=ext.critical)
    return builder.sign(signer.key, hash_algorithm)


def brainpool() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.BrainpoolP256R1())


def ca_below(issuer: Issuer, *, path_length: int | None = 0) -> tuple[Issuer, x509.Certificate]:
    key = brainpool()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "TEST intermediate eGK CA")])
    cert = build(
        issuer,
        key.public_key(),
        subject=name,
        ca=True,
        path_length=path_length,
        key_usage=CA_USAGE,
        policy=False,
        profession_oids=(),
    )
    return Issuer(key, name), cert


# -- the valid card ----------------------------------------------------------------------------
def test_valid_card_proves_kvnr_ik_and_names(ca: TestEgkCa, card: TestCard) -> None:
    identity = verify(card.certificate_der, card.sign(CHALLENGE), cas=[ca.certificate])
    assert (identity.kvnr, identity.ik) == (KVNR, IK)
    assert (identity.given_name, identity.family_name) == (GIVEN, FAMILY)
    assert identity.not_after == card.certificate.not_valid_after_utc
    assert len(identity.card_id) == 64


def test_card_id_is_stable_per_card_and_differs_between_cards(
    ca: TestEgkCa, card: TestCard
) -> None:
    first = verify(card.certificate_der, card.sign(CHALLENGE), cas=[ca.certificate])
    again = verify(card.certificate_der, card.sign(CHALLENGE), cas=[ca.certificate])
    other = issue(ca)
    third = verify(other.certificate_der, other.sign(CHALLENGE), cas=[ca.certificate])
    assert first.card_id == again.card_id != third.card_id


def test_identity_repr_leaves_out_kvnr_and_names(ca: TestEgkCa, card: TestCard) -> None:
    identity = verify(card.certificate_der, card.sign(CHALLENGE), cas=[ca.certificate])
    assert not {KVNR, GIVEN, FAMILY} & set(repr(identity).replace("'", " ").split())
    assert KVNR not in repr(identity) and FAMILY not in repr(identity)


def test_card_without_ik_is_accepted_with_ik_none(ca: TestEgkCa) -> None:
    card = ca.issue_card(KVNR, None, GIVEN, FAMILY, not_before=NOW - timedelta(days=1))
    assert verify(card.certificate_der, card.sign(CHALLENGE), cas=[ca.certificate]).ik is None


def test_chain_through_an_intermediate_ca_is_accepted() -> None:
    root_key = brainpool()
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "TEST root eGK CA")])
    root = build(
        None,
        root_key.public_key(),
        subject=root_name,
        self_key=root_key,
        ca=True,
        path_length=1,
        key_usage=CA_USAGE,
        policy=False,
        profession_oids=(),
    )
    intermediate, intermediate_cert = ca_below(Issuer(root_key, root_name))
    key = brainpool()
    leaf = build(intermediate, key.public_key())
    identity = verify(leaf, raw_sign(key), cas=[root], intermediates=[intermediate_cert])
    assert identity.kvnr == KVNR


def test_renewed_ca_on_the_same_key_is_found_even_next_to_its_expired_copy(
    ca: TestEgkCa, card: TestCard
) -> None:
    expired_copy = build(
        issuer_of(ca),
        ca.private_key.public_key(),
        subject=ca.certificate.subject,
        ca=True,
        path_length=0,
        key_usage=CA_USAGE,
        policy=False,
        profession_oids=(),
        not_before=NOW - timedelta(days=800),
        not_after=NOW - timedelta(days=400),
    )
    identity = verify(
        card.certificate_der, card.sign(CHALLENGE), cas=[expired_copy, ca.certificate]
    )
    assert identity.kvnr == KVNR


# -- the challenge signature -------------------------------------------------------------------
def test_raw_and_der_signature_forms_are_both_accepted(ca: TestEgkCa, card: TestCard) -> None:
    raw = card.sign(CHALLENGE)
    der_signature = card.private_key.sign(CHALLENGE, ec.ECDSA(hashes.SHA256()))
    assert len(raw) == 64 and raw != der_signature
    for signature in (raw, der_signature):
        assert verify(card.certificate_der, signature, cas=[ca.certificate]).kvnr == KVNR


def test_rejects_signature_over_another_challenge(ca: TestEgkCa, card: TestCard) -> None:
    with pytest.raises(EgkSignatureInvalid):
        verify(card.certificate_der, card.sign(b"another challenge!" * 2), cas=[ca.certificate])


def test_rejects_signature_by_another_cards_key(ca: TestEgkCa, card: TestCard) -> None:
    thief = issue(ca)
    with pytest.raises(EgkSignatureInvalid):
        verify(card.certificate_der, thief.sign(CHALLENGE), cas=[ca.certificate])


@pytest.mark.parametrize("signature", [b"\x00" * 64, b"\x30" + b"\x01" * 40, bytes(range(71))])
def test_rejects_garbage_signature(ca: TestEgkCa, card: TestCard, signature: bytes) -> None:
    with pytest.raises(EgkSignatureInvalid):
        verify(card.certificate_der, signature, cas=[ca.certificate])


@pytest.mark.parametrize("signature", [b"", b"\x01" * 73, b"\x01" * 10_000])
def test_rejects_empty_or_oversized_signature(
    ca: TestEgkCa, card: TestCard, signature: bytes
) -> None:
    with pytest.raises(EgkMalformed):
        verify(card.certificate_der, signature, cas=[ca.certificate])


def test_rejects_a_replayed_signature_for_a_fresh_challenge(ca: TestEgkCa, card: TestCard) -> None:
    old = card.sign(CHALLENGE)
    with pytest.raises(EgkSignatureInvalid):
        verify(card.certificate_der, old, cas=[ca.certificate], challenge=bytes(32))


# -- trust -------------------------------------------------------------------------------------
def test_rejects_card_from_unconfigured_ca(ca: TestEgkCa, other_ca: TestEgkCa) -> None:
    stranger = issue(other_ca)
    with pytest.raises(EgkUntrusted):
        verify(stranger.certificate_der, stranger.sign(CHALLENGE), cas=[ca.certificate])


def test_rejects_unconfigured_ca_sent_along_as_intermediate(
    ca: TestEgkCa, other_ca: TestEgkCa
) -> None:
    stranger = issue(other_ca)
    with pytest.raises(EgkUntrusted):
        verify(
            stranger.certificate_der,
            stranger.sign(CHALLENGE),
            cas=[ca.certificate],
            intermediates=[other_ca.certificate_der],
        )


def test_rejects_self_signed_card(ca: TestEgkCa) -> None:
    key = brainpool()
    forged = build(None, key.public_key(), self_key=key)
    with pytest.raises(EgkUntrusted):
        verify(forged, raw_sign(key), cas=[ca.certificate])
    with pytest.raises(EgkUntrusted):
        verify(forged, raw_sign(key), cas=[ca.certificate], intermediates=[forged])


def test_rejects_card_whose_issuer_name_matches_but_key_does_not(ca: TestEgkCa) -> None:
    key = brainpool()
    forged = build(Issuer(brainpool(), ca.certificate.subject), key.public_key())
    with pytest.raises(EgkUntrusted):
        verify(forged, raw_sign(key), cas=[ca.certificate])


def test_rejects_when_no_ca_is_configured(card: TestCard) -> None:
    with pytest.raises(EgkUntrusted):
        verify(card.certificate_der, card.sign(CHALLENGE), cas=[])


def test_rejects_leaf_that_claims_ca(ca: TestEgkCa) -> None:
    key = brainpool()
    both = usage(digital_signature=True, key_cert_sign=True)
    leaf = build(issuer_of(ca), key.public_key(), ca=True, key_usage=both)
    with pytest.raises(EgkUntrusted, match="CA"):
        verify(leaf, raw_sign(key), cas=[ca.certificate])


def test_rejects_card_issued_by_another_card(ca: TestEgkCa, card: TestCard) -> None:
    key = brainpool()
    leaf = build(Issuer(card.private_key, card.certificate.subject), key.public_key())
    with pytest.raises(EgkUntrusted, match="not a CA"):
        verify(leaf, raw_sign(key), cas=[ca.certificate], intermediates=[card.certificate])


def test_rejects_intermediate_beyond_the_anchors_path_length(ca: TestEgkCa) -> None:
    intermediate, intermediate_cert = ca_below(issuer_of(ca))  # the test CA has pathLen 0
    key = brainpool()
    leaf = build(intermediate, key.public_key())
    with pytest.raises(EgkUntrusted, match="path length"):
        verify(leaf, raw_sign(key), cas=[ca.certificate], intermediates=[intermediate_cert])


def test_rejects_too_many_intermediates(ca: TestEgkCa, card: TestCard) -> None:
    too_many = [ca.certificate_der] * (MAX_INTERMEDIATES + 1)
    with pytest.raises(EgkMalformed):
        verify(card.certificate_der, b"\x01" * 64, cas=[ca.certificate], intermediates=too_many)


@pytest.mark.parametrize(
    "key_usage",
    [None, usage(key_encipherment=True), usage(digital_signature=True, crl_sign=True)],
    ids=["none", "encipherment", "crl-sign"],
)
def test_rejects_card_key_not_limited_to_digital_signature(
    ca: TestEgkCa, key_usage: x509.KeyUsage | None
) -> None:
    key = brainpool()
    leaf = build(issuer_of(ca), key.public_key(), key_usage=key_usage)
    with pytest.raises(EgkUntrusted):
        verify(leaf, raw_sign(key), cas=[ca.certificate])


def test_rejects_unknown_critical_extension(ca: TestEgkCa) -> None:
    key = brainpool()
    odd = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00")
    leaf = build(issuer_of(ca), key.public_key(), extra=[x509.Extension(odd.oid, True, odd)])
    with pytest.raises(EgkUntrusted, match="critical"):
        verify(leaf, raw_sign(key), cas=[ca.certificate])


def test_rejects_certificate_signature_algorithm_outside_the_list(ca: TestEgkCa) -> None:
    key = brainpool()
    leaf = build(issuer_of(ca), key.public_key(), hash_algorithm=hashes.SHA384())
    with pytest.raises(EgkUntrusted, match="algorithm"):
        verify(leaf, raw_sign(key), cas=[ca.certificate])


# -- validity ----------------------------------------------------------------------------------
def test_rejects_expired_card(ca: TestEgkCa) -> None:
    card = issue(ca, not_before=NOW - timedelta(days=400), not_after=NOW - timedelta(seconds=1))
    with pytest.raises(EgkExpired, match="expired"):
        verify(card.certificate_der, card.sign(CHALLENGE), cas=[ca.certificate])


def test_card_is_valid_up_to_and_including_not_after(ca: TestEgkCa) -> None:
    card = issue(ca, not_after=NOW)
    assert verify(card.certificate_der, card.sign(CHALLENGE), cas=[ca.certificate])


def test_rejects_not_yet_valid_card(ca: TestEgkCa) -> None:
    card = issue(ca, not_before=NOW + timedelta(minutes=5))
    with pytest.raises(EgkExpired, match="not yet valid"):
        verify(card.certificate_der, card.sign(CHALLENGE), cas=[ca.certificate])


def test_rejects_card_from_expired_ca() -> None:
    old_ca = TestEgkCa.create(
        not_before=NOW - timedelta(days=4000), not_after=NOW - timedelta(days=1)
    )
    card = issue(old_ca, not_after=NOW + timedelta(days=365))
    with pytest.raises(EgkExpired, match="CA"):
        verify(card.certificate_der, card.sign(CHALLENGE), cas=[old_ca.certificate])


def test_rejects_naive_now(ca: TestEgkCa, card: TestCard) -> None:
    with pytest.raises(ValueError, match="timezone"):
        verify(
            card.certificate_der, b"\x01" * 64, cas=[ca.certificate], now=NOW.replace(tzinfo=None)
        )


@pytest.mark.parametrize("challenge", [b"", b"short", bytes(1025)])
def test_rejects_challenge_of_unsupported_length(
    ca: TestEgkCa, card: TestCard, challenge: bytes
) -> None:
    with pytest.raises(ValueError, match="challenge") as info:
        verify(card.certificate_der, b"\x01" * 64, cas=[ca.certificate], challenge=challenge)
    assert not isinstance(info.value, EgkError)  # a server bug, not a bad card


# -- insured person ----------------------------------------------------------------------------
def test_rejects_card_without_admission(ca: TestEgkCa) -> None:
    card = issue(ca, profession_oid=None)
    with pytest.raises(EgkNotInsured, match="Admission"):
        verify(card.certificate_der, card.sign(CHALLENGE), cas=[ca.certificate])


def test_rejects_profession_oid_of_a_physician(ca: TestEgkCa) -> None:
    card = issue(ca, profession_oid=OID_ARZT)
    with pytest.raises(EgkNotInsured, match="professionOID"):
        verify(card.certificate_der, card.sign(CHALLENGE), cas=[ca.certificate])


def test_rejects_insured_profession_oid_mixed_with_another(ca: TestEgkCa) -> None:
    key = brainpool()
    leaf = build(issuer_of(ca), key.public_key(), profession_oids=("1.2.276.0.76.4.49", OID_ARZT))
    with pytest.raises(EgkNotInsured):
        verify(leaf, raw_sign(key), cas=[ca.certificate])


def test_rejects_certificate_not_of_type_egk_authentication(ca: TestEgkCa) -> None:
    key = brainpool()
    leaf = build(issuer_of(ca), key.public_key(), policy=False)
    with pytest.raises(EgkNotInsured):
        verify(leaf, raw_sign(key), cas=[ca.certificate])


# -- subject -----------------------------------------------------------------------------------
def test_rejects_kvnr_with_wrong_check_digit(ca: TestEgkCa) -> None:
    card = issue(ca, kvnr="A123456781")
    with pytest.raises(EgkMalformed, match="KVNR") as info:
        verify(card.certificate_der, card.sign(CHALLENGE), cas=[ca.certificate])
    assert "A123456781" not in str(info.value)


def test_gematik_test_kvnr_only_with_the_test_card_switch(ca: TestEgkCa) -> None:
    card = issue(ca, kvnr=GEMATIK_TEST_KVNR)
    signature = card.sign(CHALLENGE)
    with pytest.raises(EgkMalformed):
        verify(card.certificate_der, signature, cas=[ca.certificate])
    identity = verify(card.certificate_der, signature, cas=[ca.certificate], accept_test_kvnr=True)
    assert identity.kvnr == GEMATIK_TEST_KVNR


def subject_of(*attributes: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in attributes])


OU, SN, GN = NameOID.ORGANIZATIONAL_UNIT_NAME, NameOID.SURNAME, NameOID.GIVEN_NAME
NAMES = ((SN, FAMILY), (GN, GIVEN))
BAD_SUBJECTS = {
    "lower-case-kvnr": subject_of((OU, IK), (OU, "a123456780"), *NAMES),
    "no-kvnr": subject_of((OU, IK), *NAMES),
    "two-kvnrs": subject_of((OU, KVNR), (OU, "B123456781"), *NAMES),
    "two-iks": subject_of((OU, IK), (OU, "104526376"), (OU, KVNR), *NAMES),
    "ik-check-digit": subject_of((OU, "109500968"), (OU, KVNR), *NAMES),
    "two-given-names": subject_of((OU, KVNR), *NAMES, (GN, "Anna")),
    "no-names": subject_of((OU, KVNR)),
    "no-surname": subject_of((OU, KVNR), (GN, GIVEN)),
    "blank-name": subject_of((OU, KVNR), (SN, " "), (GN, GIVEN)),
    "name-too-long": subject_of((OU, KVNR), (SN, "X" * 65), (GN, GIVEN)),
}


@pytest.mark.parametrize("subject", BAD_SUBJECTS.values(), ids=BAD_SUBJECTS.keys())
def test_rejects_subject_outside_the_card_profile(ca: TestEgkCa, subject: x509.Name) -> None:
    key = brainpool()
    leaf = build(issuer_of(ca), key.public_key(), subject=subject)
    with pytest.raises(EgkMalformed) as info:
        verify(leaf, raw_sign(key), cas=[ca.certificate])
    for personal in (KVNR, "a123456780", "B123456781", IK, GIVEN, FAMILY, "Anna"):
        assert personal not in str(info.value)


# -- key type ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "curve", [ec.SECP384R1(), ec.SECP256R1(), ec.BrainpoolP384R1()], ids=lambda c: c.name
)
def test_rejects_card_key_on_another_curve(ca: TestEgkCa, curve: ec.EllipticCurve) -> None:
    key = ec.generate_private_key(curve)
    leaf = build(issuer_of(ca), key.public_key())
    with pytest.raises(EgkWrongKeyType):
        verify(leaf, raw_sign(key)[:64], cas=[ca.certificate])


def test_rejects_rsa_card_key(ca: TestEgkCa) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    leaf = build(issuer_of(ca), key.public_key())
    with pytest.raises(EgkWrongKeyType, match="RSA"):
        verify(leaf, b"\x01" * 64, cas=[ca.certificate])


# -- malformed input ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "certificate",
    [
        b"",
        b"not a certificate",
        b"\x30\x82\xff\xff" + b"\x00" * 100,
        b"\x30" * MAX_CERTIFICATE_BYTES,
    ],
    ids=["empty", "text", "truncated", "garbage"],
)
def test_rejects_garbage_certificate(ca: TestEgkCa, certificate: bytes) -> None:
    with pytest.raises(EgkMalformed):
        verify(certificate, b"\x01" * 64, cas=[ca.certificate])


def test_rejects_oversized_certificate(ca: TestEgkCa, card: TestCard) -> None:
    padded = card.certificate_der + b"\x00" * (
        MAX_CERTIFICATE_BYTES + 1 - len(card.certificate_der)
    )
    with pytest.raises(EgkMalformed, match="too large"):
        verify(padded, card.sign(CHALLENGE), cas=[ca.certificate])


def test_rejects_certificate_with_trailing_bytes(ca: TestEgkCa, card: TestCard) -> None:
    with pytest.raises(EgkMalformed):
        verify(card.certificate_der + b"\x00", card.sign(CHALLENGE), cas=[ca.certificate])


def test_rejects_garbage_intermediate(ca: TestEgkCa, card: TestCard) -> None:
    with pytest.raises(EgkMalformed):
        verify(card.certificate_der, b"\x01" * 64, cas=[ca.certificate], intermediates=[b"junk"])


# -- layout of the test cards ------------------------------------------------------------------
def test_test_ca_writes_gematiks_admission_layout(card: TestCard) -> None:
    ext = card.certificate.extensions.get_extension_for_class(x509.Admissions)
    assert ext.value.public_bytes() == GEMATIK_ADMISSION_DER
    assert admission("1.2.276.0.76.4.49").public_bytes() == GEMATIK_ADMISSION_DER


def test_test_card_subject_follows_gematiks_order(card: TestCard) -> None:
    oids = [rdn.oid for rdn in card.certificate.subject]
    assert oids == [
        NameOID.COUNTRY_NAME,
        NameOID.ORGANIZATION_NAME,
        NameOID.ORGANIZATIONAL_UNIT_NAME,  # IK
        NameOID.ORGANIZATIONAL_UNIT_NAME,  # KVNR
        NameOID.SURNAME,
        NameOID.GIVEN_NAME,
        NameOID.COMMON_NAME,
    ]
