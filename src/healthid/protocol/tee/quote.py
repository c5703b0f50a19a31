"""Intel DCAP quotes: SGX quote v3 (parsed in full) and TDX quote v4 (recognised).

Layout: ../shared/spec/vau-and-tee.md §3.2 (read in Gramine ``sgx_arch.h``/``sgx_attest.h``
and checked on the dcap-qvl sample quotes); the signature data follows Intel's "ECDSA Quote
Library API" (Quote Signature Data Structure, cert data type 5 = PCK chain PEM, type 6 = QE
report certification data). This module only parses; nothing here is trusted before
:func:`healthid.protocol.tee.dcap.verify_quote_signature` has checked the signatures, which
cover exactly the bytes parsed into :class:`QuoteHeader` and the report body.

Parsing is strict: every length is checked, an SGX quote must end exactly where its signature
data ends, and a value outside the closed lists (version, attestation key type, TEE type) is
refused before anything else is read.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from healthid.protocol.tee.errors import (
    DocumentTooLargeError,
    MalformedQuoteError,
    UnsupportedQuoteError,
)

# A quote carrying its PCK chain as PEM is about 5 KB (dcap-qvl samples: 4600 and 5006 B).
MAX_QUOTE_BYTES: Final = 16 * 1024

HEADER_BYTES: Final = 48
SGX_REPORT_BODY_BYTES: Final = 384
TDX_REPORT_BODY_BYTES: Final = 584  # TDREPORT 1.0 (quote v4)
REPORT_DATA_BYTES: Final = 64
MEASUREMENT_BYTES: Final = 32  # MRENCLAVE, MRSIGNER (SHA-256)
TDX_MEASUREMENT_BYTES: Final = 48  # MRTD, RTMRs (SHA-384)

SGX_QUOTE_VERSION: Final = 3
TDX_QUOTE_VERSION: Final = 4
ATT_KEY_TYPE_ECDSA_P256: Final = 2
TEE_TYPE_SGX: Final = 0x00000000
TEE_TYPE_TDX: Final = 0x00000081
# Intel's quoting enclave vendor id 939a7233-f79c-4ca9-940a-0db3957f0607 (spec §3.2).
INTEL_QE_VENDOR_ID: Final = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")

# SGX ATTRIBUTES.FLAGS (Intel SDM Vol. 3D, SECS.ATTRIBUTES): bit 1 is DEBUG.
SGX_FLAG_INIT: Final = 0x01
SGX_FLAG_DEBUG: Final = 0x02
SGX_FLAG_MODE64BIT: Final = 0x04
# TDX TD_ATTRIBUTES (Intel TDX module ABI): bit 0 is DEBUG (TUD.DEBUG).
TDX_ATTRIBUTE_DEBUG: Final = 0x01

# SGX ECDSA signature data (v3): report signature, attestation key, QE report, QE report
# signature, then the u16-prefixed QE auth data and the u16 type / u32 size cert data.
ECDSA_SIGNATURE_BYTES: Final = 64
ECDSA_KEY_BYTES: Final = 64
CERT_DATA_PCK_CHAIN: Final = 5
CERT_DATA_QE_REPORT: Final = 6
_SGX_FIXED_SIG_BYTES: Final = (
    ECDSA_SIGNATURE_BYTES + ECDSA_KEY_BYTES + SGX_REPORT_BODY_BYTES + ECDSA_SIGNATURE_BYTES
)
_U16: Final = struct.Struct("<H")
_U32: Final = struct.Struct("<I")
_CERT_HEADER: Final = struct.Struct("<HI")
_HEADER: Final = struct.Struct("<HHIHH16s20s")


@dataclass(frozen=True, kw_only=True, slots=True)
class QuoteHeader:
    """The 48-byte quote header (spec §3.2)."""

    version: int
    att_key_type: int
    tee_type: int
    qe_svn: int
    pce_svn: int
    qe_vendor_id: bytes
    user_data: bytes


@dataclass(frozen=True, kw_only=True, slots=True)
class SgxReportBody:
    """SGX ``REPORTBODY`` (384 B; Intel SDM Vol. 3D "REPORT"); offsets relative to the body."""

    cpu_svn: bytes  # 0..16
    misc_select: int  # 16..20
    isv_ext_prod_id: bytes  # 32..48
    attributes_flags: int  # 48..56: ATTRIBUTES.FLAGS, DEBUG is bit 1
    attributes_xfrm: int  # 56..64
    mr_enclave: bytes  # 64..96
    mr_signer: bytes  # 128..160
    config_id: bytes  # 192..256
    isv_prod_id: int  # 256..258
    isv_svn: int  # 258..260
    config_svn: int  # 260..262
    isv_family_id: bytes  # 304..320
    report_data: bytes  # 320..384

    @property
    def debug(self) -> bool:
        """The DEBUG attribute: the host can read and single-step the enclave."""
        return bool(self.attributes_flags & SGX_FLAG_DEBUG)


@dataclass(frozen=True, kw_only=True, slots=True)
class SgxQuote:
    """A parsed SGX DCAP quote v3. ``signed_bytes`` are header and body (what the QE signed)."""

    header: QuoteHeader
    body: SgxReportBody
    signed_bytes: bytes
    cert_data_type: int
    cert_data: bytes

    @property
    def report_data(self) -> bytes:
        return self.body.report_data


@dataclass(frozen=True, kw_only=True, slots=True)
class TdxQuote:
    """A recognised TDX DCAP quote v4 (TDREPORT 1.0 body); verified by nobody here yet."""

    header: QuoteHeader
    tee_tcb_svn: bytes
    mr_seam: bytes
    td_attributes: int
    xfam: int
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rtmrs: tuple[bytes, bytes, bytes, bytes]
    report_data: bytes
    cert_data_type: int

    @property
    def debug(self) -> bool:
        """TD_ATTRIBUTES.DEBUG: the host VMM can read the TD's memory."""
        return bool(self.td_attributes & TDX_ATTRIBUTE_DEBUG)


class _Reader:
    """Bounds-checked little-endian reads; any overrun is a malformed quote."""

    def __init__(self, data: bytes, offset: int = 0) -> None:
        self.data = data
        self.offset = offset

    def take(self, n: int, what: str) -> bytes:
        end = self.offset + n
        if n < 0 or end > len(self.data):
            raise MalformedQuoteError(f"the quote ends inside its {what}")
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    def u16(self, what: str) -> int:
        value: int = _U16.unpack(self.take(2, what))[0]
        return value

    def u32(self, what: str) -> int:
        value: int = _U32.unpack(self.take(4, what))[0]
        return value


def parse_header(raw: bytes) -> QuoteHeader:
    """The quote header; refuses anything but ECDSA-P256 quotes from Intel's QE (spec §3.2)."""
    if len(raw) < HEADER_BYTES:
        raise MalformedQuoteError("the quote is shorter than its 48-byte header")
    version, key_type, tee_type, qe_svn, pce_svn, vendor, user_data = _HEADER.unpack_from(raw)
    header = QuoteHeader(
        version=version,
        att_key_type=key_type,
        tee_type=tee_type,
        qe_svn=qe_svn,
        pce_svn=pce_svn,
        qe_vendor_id=vendor,
        user_data=user_data,
    )
    if (version, tee_type) not in {
        (SGX_QUOTE_VERSION, TEE_TYPE_SGX),
        (TDX_QUOTE_VERSION, TEE_TYPE_TDX),
    }:
        raise MalformedQuoteError(
            f"quote version {version} with TEE type {tee_type:#x} is neither SGX v3 nor TDX v4"
        )
    if key_type != ATT_KEY_TYPE_ECDSA_P256:
        raise UnsupportedQuoteError(f"attestation key type {key_type} is not ECDSA-P256 (2)")
    if vendor != INTEL_QE_VENDOR_ID:
        raise UnsupportedQuoteError("the quoting enclave vendor is not Intel")
    return header


def _parse_sgx_body(body: bytes) -> SgxReportBody:
    """SGX REPORTBODY field by field (spec §3.2 table; offsets relative to the body)."""
    return SgxReportBody(
        cpu_svn=body[0:16],
        misc_select=int.from_bytes(body[16:20], "little"),
        isv_ext_prod_id=body[32:48],
        attributes_flags=int.from_bytes(body[48:56], "little"),
        attributes_xfrm=int.from_bytes(body[56:64], "little"),
        mr_enclave=body[64:96],
        mr_signer=body[128:160],
        config_id=body[192:256],
        isv_prod_id=int.from_bytes(body[256:258], "little"),
        isv_svn=int.from_bytes(body[258:260], "little"),
        config_svn=int.from_bytes(body[260:262], "little"),
        isv_family_id=body[304:320],
        report_data=body[320:384],
    )


def _parse_sgx_signature_data(sig: bytes) -> tuple[int, bytes]:
    """ECDSA signature data of an SGX v3 quote; it must be consumed exactly."""
    reader = _Reader(sig)
    reader.take(_SGX_FIXED_SIG_BYTES, "signatures and QE report")
    reader.take(reader.u16("QE auth data size"), "QE auth data")
    cert_type = reader.u16("cert data type")
    cert_data = reader.take(reader.u32("cert data size"), "cert data")
    if reader.offset != len(sig):
        raise MalformedQuoteError("bytes follow the quote's certification data")
    return cert_type, cert_data


def parse_sgx_quote(raw: bytes) -> SgxQuote:
    """An SGX DCAP quote v3: header, report body, signature data, with no byte left over."""
    _check_size(raw)
    header = parse_header(raw)
    if header.version != SGX_QUOTE_VERSION:
        raise UnsupportedQuoteError("a TDX quote where an SGX quote was expected")
    reader = _Reader(raw, HEADER_BYTES)
    body = reader.take(SGX_REPORT_BODY_BYTES, "report body")
    sig_len = reader.u32("signature data size")
    if reader.offset + sig_len != len(raw):
        raise MalformedQuoteError(
            f"the signature data size ({sig_len}) does not match the quote's length"
        )
    cert_type, cert_data = _parse_sgx_signature_data(reader.take(sig_len, "signature data"))
    return SgxQuote(
        header=header,
        body=_parse_sgx_body(body),
        signed_bytes=raw[: HEADER_BYTES + SGX_REPORT_BODY_BYTES],
        cert_data_type=cert_type,
        cert_data=cert_data,
    )


def parse_tdx_quote(raw: bytes) -> TdxQuote:
    """A TDX DCAP quote v4 with a TDREPORT 1.0 body.

    Trailing zero bytes after the signature data are tolerated (the dcap-qvl TDX sample carries
    70 of them: the guest's fixed-size quote buffer); anything else after it is refused.
    """
    _check_size(raw)
    header = parse_header(raw)
    if header.version != TDX_QUOTE_VERSION:
        raise UnsupportedQuoteError("an SGX quote where a TDX quote was expected")
    reader = _Reader(raw, HEADER_BYTES)
    body = reader.take(TDX_REPORT_BODY_BYTES, "TD report body")
    sig = _Reader(reader.take(reader.u32("signature data size"), "signature data"))
    sig.take(ECDSA_SIGNATURE_BYTES + ECDSA_KEY_BYTES, "signature and attestation key")
    cert_type = sig.u16("cert data type")
    sig.take(sig.u32("cert data size"), "cert data")
    if sig.offset != len(sig.data):
        raise MalformedQuoteError("bytes follow the quote's certification data")
    if any(raw[reader.offset :]):
        raise MalformedQuoteError("non-zero bytes follow the quote's signature data")
    m = TDX_MEASUREMENT_BYTES
    rtmr = 376 - HEADER_BYTES  # RTMR0 at absolute offset 376, then RTMR1..3
    return TdxQuote(
        header=header,
        tee_tcb_svn=body[0:16],
        mr_seam=body[16:64],
        td_attributes=int.from_bytes(body[120:128], "little"),
        xfam=int.from_bytes(body[128:136], "little"),
        mr_td=body[136:184],
        mr_config_id=body[184:232],
        mr_owner=body[232:280],
        mr_owner_config=body[280:328],
        rtmrs=(
            body[rtmr : rtmr + m],
            body[rtmr + m : rtmr + 2 * m],
            body[rtmr + 2 * m : rtmr + 3 * m],
            body[rtmr + 3 * m : rtmr + 4 * m],
        ),
        report_data=body[520:584],
        cert_data_type=cert_type,
    )


def parse_quote(raw: bytes) -> SgxQuote | TdxQuote:
    """Parse a DCAP quote of either kind, dispatching on the header's version and TEE type."""
    _check_size(raw)
    header = parse_header(raw)
    if header.version == TDX_QUOTE_VERSION:
        return parse_tdx_quote(raw)
    return parse_sgx_quote(raw)


def trim_zero_padding(raw: bytes) -> bytes:
    """``raw`` cut after its declared signature data, if only zero bytes follow it.

    For producers (the enclave's evidence provider): a quote read from a fixed-size buffer may
    carry zero padding, which the strict parsers refuse. Anything else is returned unchanged
    (and then refused by the parser if malformed).
    """
    version = int.from_bytes(raw[0:2], "little") if len(raw) >= 2 else 0
    body = TDX_REPORT_BODY_BYTES if version == TDX_QUOTE_VERSION else SGX_REPORT_BODY_BYTES
    size_at = HEADER_BYTES + body
    if len(raw) < size_at + 4:
        return raw
    end = size_at + 4 + int.from_bytes(raw[size_at : size_at + 4], "little")
    if end < len(raw) and not any(raw[end:]):
        return raw[:end]
    return raw


def _check_size(raw: bytes) -> None:
    if len(raw) > MAX_QUOTE_BYTES:
        raise DocumentTooLargeError(f"the quote exceeds {MAX_QUOTE_BYTES} bytes")
