"""verify_chain: pinned roots only, signatures, validity, CA constraints (§4.1 step 1, §4.2)."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

import pytest
from attestation_factory import (
    CA_USAGE,
    LEAF_USAGE,
    NOW,
    Ca,
    _name,
    certificate,
    der,
    make_ca,
    make_leaf,
    make_root,
    p256,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from healthid.protocol.attestation import (
    AttestationTooLargeError,
    MalformedAttestationError,
    UntrustedChainError,
    apple_app_attestation_roots,
    google_hardware_attestation_roots,
    verify_chain,
)
from healthid.protocol.attestation.chain import MAX_CHAIN_LENGTH


@pytest.fixture(scope="module")
def pki() -> tuple[Ca, Ca]:
    root = make_root()
    return root, make_ca(root, "Intermediate", path_length=0)


def leaf_chain(pki: tuple[Ca, Ca], **leaf_kwargs: object) -> list[bytes]:
    _, intermediate = pki
    leaf = make_leaf(intermediate, p256().public_key(), **leaf_kwargs)
    return [der(leaf), der(intermediate.certificate)]


def test_chain_accepts_leaf_and_intermediates_below_a_pinned_root(pki: tuple[Ca, Ca]) -> None:
    chain = leaf_chain(pki)
    verified = verify_chain(chain, [pki[0].certificate], NOW)
    assert [der(c) for c in verified] == chain


def test_chain_accepts_a_trailing_copy_of_the_pinned_root(pki: tuple[Ca, Ca]) -> None:
    chain = [*leaf_chain(pki), der(pki[0].certificate)]
    assert len(verify_chain(chain, [pki[0].certificate], NOW)) == 2


def test_chain_accepts_a_reissued_root_with_the_pinned_key_and_subject(
    pki: tuple[Ca, Ca],
) -> None:
    # Google re-issued its RSA root with the same key; devices send older issues
    root, _ = pki
    reissue = certificate(
        subject=root.certificate.subject,
        public_key=root.key.public_key(),
        issuer=None,
        signing_key=root.key,
        ca=True,
        key_usage=CA_USAGE,
        not_before=NOW - timedelta(days=9000),
        not_after=NOW - timedelta(days=1),  # even an expired issue: the pinned one is used
    )
    chain = [*leaf_chain(pki), der(reissue)]
    assert len(verify_chain(chain, [root.certificate], NOW)) == 2


def test_chain_refuses_a_chain_to_an_untrusted_root(pki: tuple[Ca, Ca]) -> None:
    other = make_root("Other Root")
    with pytest.raises(UntrustedChainError):
        verify_chain(leaf_chain(pki), [other.certificate], NOW)


def test_chain_refuses_an_embedded_self_signed_root_that_is_not_pinned(
    pki: tuple[Ca, Ca],
) -> None:
    rogue = make_root("Rogue Root")
    intermediate = make_ca(rogue, "Rogue Intermediate")
    leaf = make_leaf(intermediate, p256().public_key())
    chain = [der(leaf), der(intermediate.certificate), der(rogue.certificate)]
    with pytest.raises(UntrustedChainError):
        verify_chain(chain, [pki[0].certificate], NOW)


def test_chain_refuses_a_self_signed_root_impersonating_the_pinned_name(
    pki: tuple[Ca, Ca],
) -> None:
    rogue_key = p256()
    rogue = Ca(
        certificate(
            subject=pki[0].certificate.subject,
            public_key=rogue_key.public_key(),
            issuer=None,
            signing_key=rogue_key,
            ca=True,
            key_usage=CA_USAGE,
        ),
        rogue_key,
    )
    leaf = make_leaf(rogue, p256().public_key())
    for chain in ([der(leaf)], [der(leaf), der(rogue.certificate)]):
        with pytest.raises(UntrustedChainError):
            verify_chain(chain, [pki[0].certificate], NOW)


def test_chain_refuses_an_expired_leaf(pki: tuple[Ca, Ca]) -> None:
    chain = leaf_chain(pki, not_after=NOW - timedelta(seconds=1))
    with pytest.raises(UntrustedChainError, match="expired"):
        verify_chain(chain, [pki[0].certificate], NOW)


def test_chain_refuses_an_expired_intermediate() -> None:
    root = make_root()
    intermediate = make_ca(root, "Old", not_after=NOW - timedelta(days=1))
    leaf = make_leaf(intermediate, p256().public_key())
    with pytest.raises(UntrustedChainError, match="expired"):
        verify_chain([der(leaf), der(intermediate.certificate)], [root.certificate], NOW)


def test_chain_refuses_a_certificate_not_yet_valid(pki: tuple[Ca, Ca]) -> None:
    chain = leaf_chain(pki, not_before=NOW + timedelta(hours=1))
    with pytest.raises(UntrustedChainError, match="not yet valid"):
        verify_chain(chain, [pki[0].certificate], NOW)


def test_chain_tolerates_small_issuer_clock_skew(pki: tuple[Ca, Ca]) -> None:
    chain = leaf_chain(pki, not_before=NOW + timedelta(minutes=1))
    assert verify_chain(chain, [pki[0].certificate], NOW)


def test_chain_refuses_an_issuer_that_is_not_a_ca(pki: tuple[Ca, Ca]) -> None:
    root, intermediate = pki
    not_a_ca_key = p256()
    not_a_ca = Ca(make_leaf(intermediate, not_a_ca_key.public_key(), "EE"), not_a_ca_key)
    leaf = make_leaf(not_a_ca, p256().public_key(), basic_constraints=False)
    chain = [der(leaf), der(not_a_ca.certificate), der(intermediate.certificate)]
    with pytest.raises(UntrustedChainError, match="not a CA"):
        verify_chain(chain, [root.certificate], NOW)


def test_chain_refuses_an_issuer_without_basic_constraints(pki: tuple[Ca, Ca]) -> None:
    root, _ = pki
    key = p256()
    bare = Ca(
        certificate(
            subject=_name("No BC"),
            public_key=key.public_key(),
            issuer=root,
            ca=True,
            basic_constraints=False,
            key_usage=CA_USAGE,
        ),
        key,
    )
    leaf = make_leaf(bare, p256().public_key())
    with pytest.raises(UntrustedChainError, match="not a CA"):
        verify_chain([der(leaf), der(bare.certificate)], [root.certificate], NOW)


def test_chain_refuses_an_issuer_without_key_cert_sign(pki: tuple[Ca, Ca]) -> None:
    root, _ = pki
    intermediate = make_ca(root, "Signing only", key_usage=LEAF_USAGE)
    leaf = make_leaf(intermediate, p256().public_key())
    with pytest.raises(UntrustedChainError, match="may not sign"):
        verify_chain([der(leaf), der(intermediate.certificate)], [root.certificate], NOW)


def test_chain_refuses_a_leaf_that_is_a_ca(pki: tuple[Ca, Ca]) -> None:
    chain = leaf_chain(pki, ca=True, key_usage=CA_USAGE)
    with pytest.raises(UntrustedChainError, match="leaf"):
        verify_chain(chain, [pki[0].certificate], NOW)


def test_chain_refuses_an_exceeded_path_length(pki: tuple[Ca, Ca]) -> None:
    root, intermediate = pki  # pathLen 0
    below = make_ca(intermediate, "Too deep")
    leaf = make_leaf(below, p256().public_key())
    chain = [der(leaf), der(below.certificate), der(intermediate.certificate)]
    with pytest.raises(UntrustedChainError, match="pathLen"):
        verify_chain(chain, [root.certificate], NOW)


def test_chain_refuses_a_tampered_signature(pki: tuple[Ca, Ca]) -> None:
    leaf, intermediate = leaf_chain(pki)
    tampered = leaf[:-3] + bytes([leaf[-3] ^ 0x01]) + leaf[-2:]
    with pytest.raises((UntrustedChainError, MalformedAttestationError)):
        verify_chain([tampered, intermediate], [pki[0].certificate], NOW)


def test_chain_refuses_certificates_out_of_order(pki: tuple[Ca, Ca]) -> None:
    leaf, intermediate = leaf_chain(pki)
    with pytest.raises(UntrustedChainError):
        verify_chain([intermediate, leaf], [pki[0].certificate], NOW)


def test_chain_refuses_an_unprocessed_critical_extension(pki: tuple[Ca, Ca]) -> None:
    unknown = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00")
    chain = leaf_chain(pki, extensions=[(unknown, True)])
    with pytest.raises(UntrustedChainError, match="critical"):
        verify_chain(chain, [pki[0].certificate], NOW)


def test_chain_refuses_a_revoked_serial(pki: tuple[Ca, Ca]) -> None:
    chain = leaf_chain(pki)
    revoked = frozenset({pki[1].certificate.serial_number})
    with pytest.raises(UntrustedChainError, match="revoked"):
        verify_chain(chain, [pki[0].certificate], NOW, revoked_serials=revoked)


def test_chain_refuses_more_certificates_than_the_bound(pki: tuple[Ca, Ca]) -> None:
    chain = leaf_chain(pki) * MAX_CHAIN_LENGTH
    with pytest.raises(AttestationTooLargeError):
        verify_chain(chain, [pki[0].certificate], NOW)


def test_chain_refuses_an_oversized_certificate_before_parsing(pki: tuple[Ca, Ca]) -> None:
    with pytest.raises(AttestationTooLargeError):
        verify_chain([b"\x30" * 10_000_000], [pki[0].certificate], NOW)


@pytest.mark.parametrize("chain", [[], [b"not a certificate"], [b"\x30\x03\x02\x01\x01"]])
def test_chain_refuses_malformed_input(pki: tuple[Ca, Ca], chain: list[bytes]) -> None:
    with pytest.raises(MalformedAttestationError):
        verify_chain(chain, [pki[0].certificate], NOW)


def test_chain_refuses_a_chain_of_only_the_root(pki: tuple[Ca, Ca]) -> None:
    with pytest.raises(MalformedAttestationError):
        verify_chain([der(pki[0].certificate)], [pki[0].certificate], NOW)


def test_chain_refuses_a_signature_algorithm_outside_the_closed_list() -> None:
    root_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = _name("PSS Root")
    root = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(root_key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(root_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name("Leaf"))
        .issuer_name(subject)
        .public_key(p256().public_key())
        .serial_number(2)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
        .sign(
            root_key,
            hashes.SHA256(),
            rsa_padding=padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
        )
    )
    with pytest.raises(UntrustedChainError, match="algorithm"):
        verify_chain([der(leaf), der(root)], [root], NOW)


def test_chain_refuses_a_naive_clock(pki: tuple[Ca, Ca]) -> None:
    with pytest.raises(ValueError, match="timezone"):
        verify_chain(leaf_chain(pki), [pki[0].certificate], datetime(2026, 6, 1))


def test_chain_refuses_to_run_without_pinned_roots(pki: tuple[Ca, Ca]) -> None:
    with pytest.raises(ValueError, match="root"):
        verify_chain(leaf_chain(pki), [], NOW)


def test_published_roots_match_their_fingerprints() -> None:
    def fingerprint(certificate: x509.Certificate) -> str:
        return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()

    (apple,) = apple_app_attestation_roots()
    assert fingerprint(apple) == (
        "1cb9823ba28ba6ad2d33a006941de2ae4f513ef1d4e831b9f7e0fa7b6242c932"
    )
    assert "Apple App Attestation Root CA" in apple.subject.rfc4514_string()
    rsa_root, ec_root = google_hardware_attestation_roots()
    assert fingerprint(rsa_root) == (
        "cedb1cb6dc896ae5ec797348bce9286753c2b38ee71ce0fbe34a9a1248800dfc"
    )
    assert fingerprint(ec_root) == (
        "6d9db4ce6c5c0b293166d08986e05774a8776ceb525d9e4329520de12ba4bcc0"
    )
