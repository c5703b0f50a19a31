"""The C.CH.AUT(_E256) profile: what makes a certificate an insured person's eGK.

gemSpec_PKI (profile of C.CH.AUT_E256) and spec eid-egk-wallet-device.md §2.4, checked against
gematik's test cards (ref-idp-server, GEM.EGK-CA51 TEST-ONLY):

- end entity: basicConstraints cA FALSE, keyUsage digitalSignature only (no certificate signing);
- key: ECDSA on brainpoolP256r1 (C.CH.AUT_E256). NIST P-256 is not used for the eGK and the RSA
  variant C.CH.AUT (PS256) is not supported: both are refused;
- certificatePolicies holds the certificate type oid_egk_aut (gemSpec_OID, A_4445);
- the Admission extension (Common PKI, 1.3.36.8.3.3) carries professionOID 1.2.276.0.76.4.49,
  oid_versicherter, and nothing else;
- subject: C, O (the Kasse), OU = IK (9 digits), OU = KVNR (letter + 9 digits), SN, GN, CN.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ObjectIdentifier

from healthid.protocol.egk.errors import (
    EgkMalformed,
    EgkNotInsured,
    EgkUntrusted,
    EgkWrongKeyType,
)
from healthid.protocol.identifiers import IdentifierError, validate_ik, validate_kvnr

# closed list: C.CH.AUT_E256 only
CARD_CURVES: tuple[type[ec.EllipticCurve], ...] = (ec.BrainpoolP256R1,)
POLICY_OID_EGK_AUT = ObjectIdentifier("1.2.276.0.76.4.70")  # gemSpec_OID oid_egk_aut
PROFESSION_OID_VERSICHERTER = ObjectIdentifier("1.2.276.0.76.4.49")  # oid_versicherter
MAX_NAME_CHARS = 64  # gemSpec_PKI: ub-name for GN/SN (ref-idp refuses longer values too)
_KVNR_SHAPE = re.compile(r"[A-Z][0-9]{9}")  # which OU is the KVNR (its check digit comes later)
_IK_SHAPE = re.compile(r"[0-9]{9}")


@dataclass(frozen=True, kw_only=True)
class CardSubject:
    """What the subject of a C.CH.AUT says about the insured person."""

    kvnr: str
    ik: str | None
    given_name: str
    family_name: str


def card_public_key(cert: x509.Certificate) -> ec.EllipticCurvePublicKey:
    """The card's key if it is brainpoolP256r1 ECDSA; anything else is refused."""
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise EgkWrongKeyType("the card key is of an unsupported type") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise EgkWrongKeyType("the card key is not an EC key (RSA C.CH.AUT is not supported)")
    if not isinstance(key.curve, CARD_CURVES):
        raise EgkWrongKeyType("the card key is not on brainpoolP256r1")
    return key


def check_end_entity(exts: x509.Extensions) -> None:
    """An authentication certificate of a card, not a CA (gemSpec_PKI C.CH.AUT profile)."""
    try:
        constraints = exts.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None  # RFC 5280: absent basicConstraints means not a CA
    if constraints is not None and constraints.ca:
        raise EgkUntrusted("the card certificate claims to be a CA")
    try:
        usage = exts.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise EgkUntrusted("the card certificate has no keyUsage") from None
    if not usage.digital_signature:
        raise EgkUntrusted("the card key is not for digital signatures")
    if usage.key_cert_sign or usage.crl_sign:
        raise EgkUntrusted("the card key claims to sign certificates")


def check_insured(exts: x509.Extensions) -> None:
    """Certificate type oid_egk_aut and professionOID oid_versicherter (spec §2.4)."""
    try:
        policies = exts.get_extension_for_class(x509.CertificatePolicies).value
    except x509.ExtensionNotFound:
        raise EgkNotInsured("the certificate has no certificate policies") from None
    if POLICY_OID_EGK_AUT not in {p.policy_identifier for p in policies}:
        raise EgkNotInsured("the certificate is not of type eGK authentication")
    try:
        admissions = exts.get_extension_for_class(x509.Admissions).value
    except x509.ExtensionNotFound:
        raise EgkNotInsured("the certificate has no Admission extension") from None
    oids = profession_oids(admissions)
    if oids != {PROFESSION_OID_VERSICHERTER}:
        raise EgkNotInsured("the professionOID is not that of an insured person")


def profession_oids(admissions: x509.Admissions) -> frozenset[ObjectIdentifier]:
    """Every professionOID of every ProfessionInfo of every Admissions entry."""
    return frozenset(
        oid
        for admission in admissions
        for info in admission.profession_infos
        for oid in info.profession_oids or ()
    )


def read_subject(cert: x509.Certificate, *, accept_test_kvnr: bool) -> CardSubject:
    """KVNR, IK and names from the subject; the KVNR check digit per spec §2.1.

    ``accept_test_kvnr`` skips the KVNR check digit, which several gematik test cards fail
    (e.g. X114428530 on ref-idp-server's C.CH.AUT_E256). Never in production.
    """
    units = _strings(cert.subject, NameOID.ORGANIZATIONAL_UNIT_NAME)
    kvnrs = [unit for unit in units if _KVNR_SHAPE.fullmatch(unit)]
    if len(kvnrs) != 1:
        raise EgkMalformed("the subject must hold exactly one KVNR")
    try:
        kvnr = validate_kvnr(kvnrs[0], check_digit=not accept_test_kvnr)
    except IdentifierError:
        raise EgkMalformed("the KVNR in the certificate is invalid") from None
    return CardSubject(
        kvnr=kvnr,
        ik=_ik(units),
        given_name=_one_name(cert.subject, NameOID.GIVEN_NAME),
        family_name=_one_name(cert.subject, NameOID.SURNAME),
    )


def _ik(units: list[str]) -> str | None:
    iks = [unit for unit in units if _IK_SHAPE.fullmatch(unit)]
    if not iks:
        return None
    if len(iks) > 1:
        raise EgkMalformed("the subject holds more than one IK")
    try:
        return validate_ik(iks[0])
    except IdentifierError:
        raise EgkMalformed("the IK in the certificate is invalid") from None


def _one_name(name: x509.Name, oid: ObjectIdentifier) -> str:
    values = _strings(name, oid)
    if len(values) != 1:
        raise EgkMalformed("the subject must hold exactly one given name and one surname")
    value = values[0]
    if not value.strip() or len(value) > MAX_NAME_CHARS:
        raise EgkMalformed("a name in the subject is empty or too long")
    return value


def _strings(name: x509.Name, oid: ObjectIdentifier) -> list[str]:
    values = [attribute.value for attribute in name.get_attributes_for_oid(oid)]
    if not all(isinstance(value, str) for value in values):
        raise EgkMalformed("a subject attribute is not a string")
    return [str(value) for value in values]
