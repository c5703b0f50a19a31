"""The enclave's attestation: simulated evidence (development) and Gramine's /dev/attestation
(production) against a fake directory (spec vau-and-tee.md §3.1, §4.4)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from healthid.enclave.attestation import (
    DEV_ATTESTATION,
    EvidenceProvider,
    GramineAttestationError,
    GramineEvidence,
    SimulatedEvidence,
    enclave_jwk,
    make_attestation_document,
)
from healthid.protocol.tee import (
    Collateral,
    EvidenceType,
    QuoteVerificationError,
    SimulatedEvidenceRejectedError,
    TeeKind,
    TeePolicy,
    build_claims,
    parse_attestation_document,
    parse_simulated_evidence,
    verify_attestation_document,
)

VECTORS = Path(__file__).parents[1] / "protocol" / "tee" / "vectors"
SAMPLE_NOW = datetime(2025, 6, 19, 11, 56, tzinfo=UTC)
NONCE = bytes(range(100, 132))
IDENTITY = ec.derive_private_key(7, ec.SECP256R1()).public_key()  # TEST key
SAMPLE_POLICY = TeePolicy(
    mrenclaves=frozenset(
        {bytes.fromhex("33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb")}
    )
)
REPORT_DATA = slice(368, 432)


@pytest.fixture(scope="module")
def sample_quote() -> bytes:
    return (VECTORS / "sgx_quote").read_bytes()


def expected_report_data(tee: TeeKind, now: datetime = SAMPLE_NOW) -> bytes:
    """What the enclave will bind for IDENTITY and NONCE at ``now`` (claims are deterministic)."""
    claims = build_claims(
        tee=tee, nonce=NONCE, issued_at=now, keys={"identity": enclave_jwk("identity", IDENTITY)}
    )
    return claims.report_data


def fake_gramine(tmp_path: Path, quote: bytes, kind: str = "dcap") -> Path:
    """A stand-in for Gramine's /dev/attestation: static files (no SGX here)."""
    directory = tmp_path / "attestation"
    directory.mkdir()
    (directory / "attestation_type").write_text(kind)
    (directory / "user_report_data").write_bytes(bytes(64))
    (directory / "quote").write_bytes(quote)
    return directory


def quote_over(sample: bytes, report_data: bytes) -> bytes:
    """The sample quote with its REPORTDATA replaced (its signature no longer verifies)."""
    return sample[: REPORT_DATA.start] + report_data + sample[REPORT_DATA.stop :]


# -- simulated ---------------------------------------------------------------------------------
def test_simulated_document_verifies_in_development() -> None:
    provider: EvidenceProvider = SimulatedEvidence()
    doc = make_attestation_document(
        keys={"identity": IDENTITY}, nonce=NONCE, provider=provider, now=SAMPLE_NOW
    )
    assert doc.evidence_type is EvidenceType.SIMULATED
    assert doc.claims.tee is TeeKind.SIMULATED
    assert json.loads(doc.evidence)["tee"] == "simulated"
    assert parse_simulated_evidence(doc.evidence) == doc.claims.report_data
    result = verify_attestation_document(
        doc.to_json(),
        nonce=NONCE,
        policy=SAMPLE_POLICY,
        collateral=None,
        now=SAMPLE_NOW + timedelta(seconds=1),
        allow_simulated=True,
    )
    assert result.simulated
    assert result.identity_key.public_numbers() == IDENTITY.public_numbers()
    assert result.key("identity").jwk == enclave_jwk("identity", IDENTITY)


def test_simulated_document_is_rejected_outside_development() -> None:
    doc = make_attestation_document(
        keys={"identity": IDENTITY}, nonce=NONCE, provider=SimulatedEvidence(), now=SAMPLE_NOW
    )
    with pytest.raises(SimulatedEvidenceRejectedError):
        verify_attestation_document(
            doc.to_json(), nonce=NONCE, policy=SAMPLE_POLICY, collateral=None, now=SAMPLE_NOW
        )


def test_keys_may_be_given_as_jwks() -> None:
    enc = ec.derive_private_key(8, ec.SECP256R1()).public_key()
    doc = make_attestation_document(
        keys={"identity": IDENTITY, "vau-enc": enclave_jwk("vau-enc", enc, use="enc")},
        nonce=NONCE,
        provider=SimulatedEvidence(),
        now=SAMPLE_NOW,
    )
    assert doc.claims.key("vau-enc").jwk["use"] == "enc"
    assert doc.claims.key("identity").jwk["kid"] == "identity"


def test_a_document_staples_collateral() -> None:
    collateral = Collateral.from_json((VECTORS / "sgx_quote_collateral.json").read_text())
    doc = make_attestation_document(
        keys={"identity": IDENTITY},
        nonce=NONCE,
        provider=SimulatedEvidence(),
        now=SAMPLE_NOW,
        collateral=collateral,
    )
    again = parse_attestation_document(doc.to_json())
    assert again.collateral == collateral


def test_the_identity_key_is_required() -> None:
    with pytest.raises(ValueError, match="identity"):
        make_attestation_document(
            keys={"vau": IDENTITY}, nonce=NONCE, provider=SimulatedEvidence(), now=SAMPLE_NOW
        )


def test_providers_refuse_report_data_of_the_wrong_length(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="64"):
        SimulatedEvidence().evidence(bytes(32))
    with pytest.raises(ValueError, match="64"):
        GramineEvidence(attestation_dir=tmp_path).evidence(bytes(65))


# -- Gramine ------------------------------------------------------------------------------------
def test_gramine_writes_the_report_data_and_returns_the_quote(
    tmp_path: Path, sample_quote: bytes
) -> None:
    report_data = expected_report_data(TeeKind.SGX)
    quote = quote_over(sample_quote, report_data)
    directory = fake_gramine(tmp_path, quote)
    provider = GramineEvidence(attestation_dir=directory)
    provider.check_available()
    doc = make_attestation_document(
        keys={"identity": IDENTITY}, nonce=NONCE, provider=provider, now=SAMPLE_NOW
    )
    # Spec §3.1: SHA-256(claims) ‖ 0^32 written to user_report_data, the quote read back.
    assert (directory / "user_report_data").read_bytes() == report_data == doc.claims.report_data
    assert report_data[32:] == bytes(32)
    assert doc.evidence == quote
    assert doc.evidence_type is EvidenceType.SGX_DCAP
    assert doc.claims.tee is TeeKind.SGX


def test_a_fake_gramine_cannot_forge_attestation(tmp_path: Path, sample_quote: bytes) -> None:
    """The spliced quote binds our claims, but Intel's signature no longer covers it."""
    quote = quote_over(sample_quote, expected_report_data(TeeKind.SGX))
    provider = GramineEvidence(attestation_dir=fake_gramine(tmp_path, quote))
    doc = make_attestation_document(
        keys={"identity": IDENTITY}, nonce=NONCE, provider=provider, now=SAMPLE_NOW
    )
    collateral = Collateral.from_json((VECTORS / "sgx_quote_collateral.json").read_text())
    with pytest.raises(QuoteVerificationError):
        verify_attestation_document(
            doc.to_json(), nonce=NONCE, policy=SAMPLE_POLICY, collateral=collateral, now=SAMPLE_NOW
        )


def test_gramine_quote_padding_is_trimmed(tmp_path: Path, sample_quote: bytes) -> None:
    quote = quote_over(sample_quote, expected_report_data(TeeKind.SGX))
    provider = GramineEvidence(attestation_dir=fake_gramine(tmp_path, quote + bytes(70)))
    doc = make_attestation_document(
        keys={"identity": IDENTITY}, nonce=NONCE, provider=provider, now=SAMPLE_NOW
    )
    assert doc.evidence == quote


def test_gramine_refuses_a_quote_over_other_data(tmp_path: Path, sample_quote: bytes) -> None:
    provider = GramineEvidence(attestation_dir=fake_gramine(tmp_path, sample_quote))
    with pytest.raises(GramineAttestationError, match="not over the given report data"):
        make_attestation_document(
            keys={"identity": IDENTITY}, nonce=NONCE, provider=provider, now=SAMPLE_NOW
        )


def test_gramine_refuses_a_tdx_or_garbage_quote(tmp_path: Path) -> None:
    tdx = (VECTORS / "tdx_quote").read_bytes()
    provider = GramineEvidence(attestation_dir=fake_gramine(tmp_path, tdx))
    with pytest.raises(GramineAttestationError, match="no SGX quote"):
        provider.evidence(bytes(64))
    (provider.attestation_dir / "quote").write_bytes(b"garbage")
    with pytest.raises(GramineAttestationError, match="no SGX quote"):
        provider.evidence(bytes(64))


def test_gramine_refuses_an_oversized_quote(tmp_path: Path) -> None:
    provider = GramineEvidence(attestation_dir=fake_gramine(tmp_path, b"\x01" * 40_000))
    with pytest.raises(GramineAttestationError, match="oversized"):
        provider.evidence(bytes(64))


def test_gramine_is_unavailable_outside_gramine(tmp_path: Path) -> None:
    provider = GramineEvidence(attestation_dir=tmp_path / "missing")
    with pytest.raises(GramineAttestationError, match="not running under Gramine"):
        provider.check_available()
    with pytest.raises(GramineAttestationError):
        provider.evidence(bytes(64))


@pytest.mark.parametrize("kind", ["none", "epid", ""])
def test_gramine_needs_dcap_attestation(tmp_path: Path, kind: str) -> None:
    provider = GramineEvidence(attestation_dir=fake_gramine(tmp_path, b"", kind=kind))
    with pytest.raises(GramineAttestationError, match="dcap"):
        provider.check_available()


def test_gramine_defaults_to_dev_attestation() -> None:
    assert GramineEvidence().attestation_dir == DEV_ATTESTATION == Path("/dev/attestation")
    assert GramineEvidence().tee is TeeKind.SGX
    assert SimulatedEvidence().tee is TeeKind.SIMULATED
