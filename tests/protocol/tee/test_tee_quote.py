"""SGX quote v3 / TDX quote v4 parsing (spec vau-and-tee.md §3.2) on the real Intel samples."""

from __future__ import annotations

import struct

import dcap_qvl
import pytest
from tee_vectors import SAMPLE_MRENCLAVE, SAMPLE_MRSIGNER, SAMPLE_REPORT_DATA

from healthid.protocol.tee import (
    DocumentTooLargeError,
    MalformedQuoteError,
    SgxQuote,
    TdxQuote,
    UnsupportedQuoteError,
    parse_quote,
    parse_sgx_quote,
    parse_tdx_quote,
)
from healthid.protocol.tee.quote import (
    INTEL_QE_VENDOR_ID,
    MAX_QUOTE_BYTES,
    trim_zero_padding,
)


def with_byte(raw: bytes, offset: int, value: int) -> bytes:
    out = bytearray(raw)
    out[offset] = value
    return bytes(out)


def test_sgx_sample_fields_at_the_spec_offsets(sgx_quote: bytes) -> None:
    quote = parse_sgx_quote(sgx_quote)
    assert quote.header.version == 3
    assert quote.header.att_key_type == 2
    assert quote.header.tee_type == 0
    assert quote.header.qe_vendor_id == INTEL_QE_VENDOR_ID
    assert quote.body.mr_enclave == SAMPLE_MRENCLAVE == sgx_quote[112:144]
    assert quote.body.mr_signer == SAMPLE_MRSIGNER == sgx_quote[176:208]
    assert quote.body.isv_prod_id == 0
    assert quote.body.isv_svn == 0
    assert quote.body.attributes_flags == 0x05  # INIT | MODE64BIT
    assert quote.body.debug is False
    assert quote.report_data == SAMPLE_REPORT_DATA == sgx_quote[368:432]
    assert quote.signed_bytes == sgx_quote[:432]
    assert quote.cert_data_type == 5  # PCK certificate chain, PEM
    assert quote.cert_data.startswith(b"-----BEGIN CERTIFICATE-----")


def test_sgx_parse_agrees_with_dcap_qvl(sgx_quote: bytes) -> None:
    ours = parse_sgx_quote(sgx_quote)
    theirs = dcap_qvl.parse_quote(sgx_quote)
    assert theirs.quote_type() == "SGX"
    assert ours.header.qe_svn == theirs.header.qe_svn
    assert ours.header.pce_svn == theirs.header.pce_svn
    assert ours.header.user_data == theirs.header.user_data
    assert ours.body.cpu_svn == theirs.report.cpu_svn
    assert ours.body.mr_enclave == theirs.report.mr_enclave
    assert ours.body.mr_signer == theirs.report.mr_signer
    assert ours.body.report_data == theirs.report.report_data
    flags_and_xfrm = theirs.report.attributes
    assert ours.body.attributes_flags == int.from_bytes(flags_and_xfrm[:8], "little")
    assert ours.body.attributes_xfrm == int.from_bytes(flags_and_xfrm[8:], "little")


def test_debug_flag_is_bit_1_of_attributes(sgx_quote: bytes) -> None:
    debug = with_byte(sgx_quote, 96, sgx_quote[96] | 0x02)
    assert parse_sgx_quote(debug).body.debug is True


def test_tdx_sample_is_recognised(tdx_quote: bytes) -> None:
    quote = parse_quote(tdx_quote)
    assert isinstance(quote, TdxQuote)
    theirs = dcap_qvl.parse_quote(tdx_quote)
    assert theirs.quote_type() == "TDX"
    assert quote.header.version == 4 and quote.header.tee_type == 0x81
    assert quote.mr_td == theirs.report.mr_td
    assert quote.mr_seam == theirs.report.mr_seam
    assert quote.rtmrs == (
        theirs.report.rt_mr0,
        theirs.report.rt_mr1,
        theirs.report.rt_mr2,
        theirs.report.rt_mr3,
    )
    assert quote.report_data == theirs.report.report_data
    assert quote.td_attributes == int.from_bytes(theirs.report.td_attributes, "little")
    assert quote.debug is False
    assert quote.cert_data_type == 6  # QE report certification data


def test_parse_quote_dispatches_sgx(sgx_quote: bytes) -> None:
    assert isinstance(parse_quote(sgx_quote), SgxQuote)


def test_sgx_parser_rejects_a_tdx_quote(tdx_quote: bytes) -> None:
    with pytest.raises(UnsupportedQuoteError, match="TDX"):
        parse_sgx_quote(tdx_quote)


def test_tdx_parser_rejects_an_sgx_quote(sgx_quote: bytes) -> None:
    with pytest.raises(UnsupportedQuoteError):
        parse_tdx_quote(sgx_quote)


def test_sgx_quote_rejects_trailing_bytes(sgx_quote: bytes) -> None:
    # dcap-qvl itself accepts a trailing byte; the strict parser does not.
    with pytest.raises(MalformedQuoteError, match="length"):
        parse_sgx_quote(sgx_quote + b"\x00")


@pytest.mark.parametrize("cut", [1, 100, 4600 - 436, 4600 - 432, 4600 - 48, 4600 - 10])
def test_sgx_quote_rejects_truncation(sgx_quote: bytes, cut: int) -> None:
    with pytest.raises(MalformedQuoteError):
        parse_sgx_quote(sgx_quote[:-cut])


def test_sgx_quote_rejects_inconsistent_signature_data_length(sgx_quote: bytes) -> None:
    raw = bytearray(sgx_quote)
    struct.pack_into("<I", raw, 432, len(sgx_quote) - 436 - 1)
    with pytest.raises(MalformedQuoteError):
        parse_sgx_quote(bytes(raw))


def test_sgx_quote_rejects_cert_data_longer_than_the_quote(sgx_quote: bytes) -> None:
    raw = bytearray(sgx_quote)
    auth_len = struct.unpack_from("<H", raw, 1012)[0]
    struct.pack_into("<I", raw, 1012 + 2 + auth_len + 2, 10**6)
    with pytest.raises(MalformedQuoteError, match="cert data"):
        parse_sgx_quote(bytes(raw))


def test_quote_rejects_an_unknown_version(sgx_quote: bytes) -> None:
    with pytest.raises(MalformedQuoteError, match="version"):
        parse_sgx_quote(with_byte(sgx_quote, 0, 5))


def test_quote_rejects_sgx_version_with_tdx_tee_type(sgx_quote: bytes) -> None:
    with pytest.raises(MalformedQuoteError):
        parse_sgx_quote(with_byte(sgx_quote, 4, 0x81))


def test_quote_rejects_a_non_ecdsa_p256_key_type(sgx_quote: bytes) -> None:
    with pytest.raises(UnsupportedQuoteError, match="ECDSA-P256"):
        parse_sgx_quote(with_byte(sgx_quote, 2, 3))


def test_quote_rejects_a_foreign_qe_vendor(sgx_quote: bytes) -> None:
    with pytest.raises(UnsupportedQuoteError, match="vendor"):
        parse_sgx_quote(with_byte(sgx_quote, 12, sgx_quote[12] ^ 1))


def test_quote_rejects_a_header_fragment() -> None:
    with pytest.raises(MalformedQuoteError):
        parse_quote(b"\x03\x00\x02\x00")


def test_quote_size_is_bounded_before_parsing(sgx_quote: bytes) -> None:
    with pytest.raises(DocumentTooLargeError):
        parse_sgx_quote(sgx_quote + bytes(MAX_QUOTE_BYTES))


def test_tdx_tolerates_only_zero_padding(tdx_quote: bytes) -> None:
    assert not any(tdx_quote[4936:])  # the sample's 70 bytes of padding
    with pytest.raises(MalformedQuoteError, match="non-zero"):
        parse_tdx_quote(tdx_quote[:-1] + b"\x01")


def test_trim_zero_padding(sgx_quote: bytes, tdx_quote: bytes) -> None:
    assert trim_zero_padding(sgx_quote + bytes(100)) == sgx_quote
    assert trim_zero_padding(sgx_quote) == sgx_quote
    assert trim_zero_padding(tdx_quote) == tdx_quote[:4936]
    parse_tdx_quote(trim_zero_padding(tdx_quote))
    garbage = sgx_quote + b"\x00\x01"
    assert trim_zero_padding(garbage) == garbage
    assert trim_zero_padding(b"\x03") == b"\x03"
