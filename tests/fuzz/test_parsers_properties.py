"""Issue #7 item 5: every parser of untrusted input, fed arbitrary and mutated bytes.

The property of each test: the parser either accepts the input or raises the error type it
declares (``JoseError``, ``OAuthError``, ``CodecError``, ``EidError``, ``AttestationError``,
``EgkError``, ``TeeAttestationError``, ...). A ``KeyError``, ``IndexError``, ``TypeError``,
``UnicodeDecodeError`` or ``RecursionError`` leaking out is a bug: the HTTP boundary maps the
declared errors, anything else becomes a 500.

Inputs are arbitrary bytes/text and structured mutations of a valid input (bit flips,
truncations, insertions of the valid input into itself, deleted spans). The VAU parsers (CBOR
subset, channel header, M1-M4) already have properties of this kind in
``tests/protocol/vau/test_vau_parsers.py`` and are not repeated here.

Bugs found are pinned at the end as ``xfail(strict=True)`` tests with the exact input; the
properties above them skip exactly those inputs (``assume``), so they keep guarding the rest.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fuzz_testlib import (
    fuzz_settings,
    json_values,
    mutated_bytes,
    mutated_text,
    tried,
    with_keys,
)
from hypothesis import example, given
from hypothesis import strategies as st

from healthid.enclave.rpc import cbor as rpc_cbor
from healthid.enclave.rpc import codec
from healthid.enclave.rpc.errors import CodecError
from healthid.protocol.jose import (
    TYP_ENTITY_STATEMENT,
    TYP_ID_TOKEN,
    JoseError,
    decrypt_id_token,
    encrypt_id_token,
    public_jwk,
    sign_compact,
    verify_compact,
)
from healthid.protocol.jose.jwe import read_jwe_header
from healthid.protocol.jose.keys import p256_public_key, select_key

B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
TOKEN_ALPHABET = B64 + ".=+/ \x00é"


def b64u(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# -- JOSE -------------------------------------------------------------------------------------
SIGNING_KEY = ec.derive_private_key(7, ec.SECP256R1())
SIGNING_JWKS = {"keys": [public_jwk(SIGNING_KEY.public_key(), kid="k1", use="sig")]}
ENC_KEY = ec.derive_private_key(11, ec.SECP256R1())
ENC_JWK = public_jwk(ENC_KEY.public_key(), kid="e1", use="enc")
NOW = 1_750_000_000


def _sign(kid: str, data: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    r, s = decode_dss_signature(SIGNING_KEY.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


VALID_JWS = sign_compact(
    {"iss": "https://idp.example", "sub": "x", "iat": NOW, "exp": NOW + 300},
    kid="k1",
    typ=TYP_ID_TOKEN,
    signer=_sign,
)
VALID_JWE = encrypt_id_token(VALID_JWS, recipient_jwk=ENC_JWK)
_, VALID_PAYLOAD, VALID_SIGNATURE = VALID_JWS.split(".")
JOSE_HEADER_NAMES = ["alg", "enc", "kid", "typ", "cty", "crit", "jwk", "jku", "x5u", "x5c", "zip"]


@st.composite
def jws_tokens(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["mutated", "header", "text"]))
    if kind == "mutated":
        return draw(mutated_text(VALID_JWS, TOKEN_ALPHABET))
    if kind == "text":
        return draw(st.text(max_size=300))
    header = draw(with_keys(JOSE_HEADER_NAMES))
    if draw(st.booleans()):
        header = {"alg": "ES256", "kid": "k1", "typ": "JWT", **header}
    segment = b64u(json.dumps(header).encode())
    return f"{segment}.{VALID_PAYLOAD}.{VALID_SIGNATURE}"


@fuzz_settings(600)
@given(token=jws_tokens())
@example(token="e30.e30.")
@example(token=VALID_JWS + "=")  # B4 row 15: extra base64 padding
@example(token=b64u(b'{"alg":"none","kid":"k1","typ":"JWT"}') + "." + VALID_PAYLOAD + ".")
@example(token=b64u(b'{"alg":"ES256","alg":"none"}') + "." + VALID_PAYLOAD + ".")  # dup keys
@example(token="a" * (300 * 1024))  # B4 row 15: segments over 256 KB
def test_compact_jws_verification_raises_only_jose_errors(token: str) -> None:
    tried("jose.verify_compact (JWS)")
    try:
        verify_compact(token, jwks=SIGNING_JWKS, typ=TYP_ID_TOKEN)
    except JoseError:
        pass


@st.composite
def jwe_tokens(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["mutated", "header", "text"]))
    if kind == "mutated":
        return draw(mutated_text(VALID_JWE, TOKEN_ALPHABET))
    if kind == "text":
        return draw(st.text(max_size=300))
    header = draw(with_keys([*JOSE_HEADER_NAMES, "epk", "version"]))
    if draw(st.booleans()):
        header = {"alg": "ECDH-ES", "enc": "A256GCM", "cty": "JWT", **header}
    return ".".join([b64u(json.dumps(header).encode()), *VALID_JWE.split(".")[1:]])


@fuzz_settings(400)
@given(token=jwe_tokens())
@example(token=b64u(b'{"alg":"ECDH-ES","enc":"A256GCM","cty":"JWT","zip":"DEF"}') + "....")
def test_compact_jwe_header_and_decryption_raise_only_jose_errors(token: str) -> None:
    tried("jose.read_jwe_header + decrypt_id_token (JWE)")
    try:
        read_jwe_header(token)
        decrypt_id_token(token, private_key=ENC_KEY)
    except JoseError:
        pass


JWK_NAMES = ["kty", "crv", "x", "y", "d", "use", "kid", "x5c", "alg"]
jwks_documents = st.one_of(
    json_values,
    st.dictionaries(
        st.sampled_from(["keys"]) | st.text(max_size=5),
        st.lists(with_keys(JWK_NAMES) | json_values, max_size=4) | json_values,
        max_size=2,
    ),
    st.builds(
        lambda jwk: {"keys": [{**SIGNING_JWKS["keys"][0], **jwk}]},
        with_keys(JWK_NAMES),
    ),
)


@fuzz_settings(500)
@given(jwks=jwks_documents, kid=json_values | st.just("k1"), use=st.sampled_from(["sig", "enc"]))
def test_jwk_and_jwks_parsing_raises_only_jose_errors(jwks: Any, kid: Any, use: str) -> None:
    tried("jose.select_key + p256_public_key (JWK/JWKS)")
    try:
        p256_public_key(select_key(jwks, kid, use=use), use=use)
    except JoseError:
        pass


# -- OAuth form bodies -------------------------------------------------------------------------
PAR_FORM = {
    "client_id": ["https://rp.example"],
    "state": ["state-1"],
    "redirect_uri": ["https://rp.example/cb"],
    "code_challenge": ["E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"],
    "code_challenge_method": ["S256"],
    "response_type": ["code"],
    "nonce": ["nonce-1"],
    "scope": ["openid urn:telematik:versicherter"],
    "acr_values": ["gematik-ehealth-loa-high"],
}
AUTH_FORM = {"client_id": ["https://rp.example"], "request_uri": ["urn:x:1"]}
TOKEN_FORM = {
    "grant_type": ["authorization_code"],
    "code": ["c0de"],
    "code_verifier": ["v" * 43],
    "client_id": ["https://rp.example"],
    "redirect_uri": ["https://rp.example/cb"],
}
EXTRA_NAMES = ["claims", "amr", "prompt", "max_age", "request_uri", "unknown"]


@st.composite
def forms(draw: st.DrawFn, valid: dict[str, list[str]]) -> dict[str, list[str]]:
    """``valid`` with parameters dropped, repeated, emptied, replaced by any text, or added."""
    names = list(valid) + EXTRA_NAMES
    form = {k: list(v) for k, v in valid.items()}
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from(names) | st.text(max_size=8))
        action = draw(st.sampled_from(["drop", "repeat", "empty", "text", "mutate", "json"]))
        if action == "drop":
            form.pop(name, None)
        elif action == "repeat":
            form[name] = [*form.get(name, []), draw(st.text(max_size=20))]
        elif action == "empty":
            form[name] = [""]
        elif action == "json":
            form[name] = [json.dumps(draw(json_values))]
        elif action == "mutate" and form.get(name):
            form[name] = [draw(mutated_text(form[name][0]))]
        else:
            form[name] = [draw(st.text(max_size=draw(st.sampled_from([20, 600, 5000]))))]
    return form


@fuzz_settings(800)
@given(form=forms(PAR_FORM))
@example(form={**PAR_FORM, "claims": ["{" * 5000]})
@example(form={**PAR_FORM, "claims": ['{"id_token":' * 400 + "1" + "}" * 400]})
@example(form={f"p{i}": ["x"] for i in range(100)})
def test_par_form_parsing_raises_only_oauth_errors(form: dict[str, list[str]]) -> None:
    from healthid.protocol.oauth.errors import OAuthError
    from healthid.protocol.oauth.par import parse_par

    tried("oauth.parse_par (PAR form)")
    try:
        parse_par(form)
    except OAuthError:
        pass


@fuzz_settings(400)
@given(form=forms(AUTH_FORM))
def test_authorization_query_parsing_raises_only_oauth_errors(form: dict[str, list[str]]) -> None:
    from healthid.protocol.oauth.authorize import parse_authorization_request
    from healthid.protocol.oauth.errors import OAuthError

    tried("oauth.parse_authorization_request (query)")
    try:
        parse_authorization_request(form)
    except OAuthError:
        pass


@fuzz_settings(400)
@given(form=forms(TOKEN_FORM))
def test_token_form_parsing_raises_only_oauth_errors(form: dict[str, list[str]]) -> None:
    from healthid.protocol.oauth.errors import OAuthError
    from healthid.protocol.oauth.token import parse_token_request

    tried("oauth.parse_token_request (token form)")
    try:
        parse_token_request(form)
    except OAuthError:
        pass


# -- OpenID Federation -------------------------------------------------------------------------
STATEMENT_NAMES = ["iss", "sub", "iat", "exp", "nbf", "jwks", "authority_hints", "metadata"]
VALID_STATEMENT_CLAIMS: dict[str, Any] = {
    "iss": "https://rp.example",
    "sub": "https://rp.example",
    "iat": NOW - 10,
    "exp": NOW + 3600,
    "jwks": SIGNING_JWKS,
    "authority_hints": ["https://master.example"],
    "metadata": {"openid_relying_party": {"redirect_uris": ["https://rp.example/cb"]}},
}


@st.composite
def statement_claims(draw: st.DrawFn) -> dict[str, Any]:
    claims = dict(VALID_STATEMENT_CLAIMS)
    claims.update(draw(with_keys(STATEMENT_NAMES)))
    return claims


@fuzz_settings(250)
@given(claims=statement_claims())
def test_entity_statement_claims_raise_only_declared_errors(claims: dict[str, Any]) -> None:
    """Correctly signed, so every claim check runs: only Jose/Federation errors may come out."""
    from healthid.protocol.federation import FederationError
    from healthid.protocol.federation.statements import (
        sign_entity_statement,
        verify_entity_statement,
    )

    tried("federation.verify_entity_statement (signed claims)")
    token = sign_entity_statement(claims, kid="k1", signer=_sign)
    try:
        verify_entity_statement(token, jwks=SIGNING_JWKS, now=NOW)
    except (JoseError, FederationError):
        pass


RP_METADATA_NAMES = [
    "redirect_uris",
    "scope",
    "jwks",
    "signed_jwks_uri",
    "ti_features_supported",
    "client_registration_types",
]


@fuzz_settings(200)
@given(
    leaf_metadata=with_keys(RP_METADATA_NAMES),
    superior_metadata=with_keys(RP_METADATA_NAMES),
    jwks=jwks_documents,
)
def test_trust_chain_metadata_raises_only_declared_errors(
    leaf_metadata: dict[str, Any], superior_metadata: dict[str, Any], jwks: Any
) -> None:
    """A valid two-statement chain whose RP metadata (incl. its jwks) is arbitrary."""
    from federation_testlib import MASTER, RP, rp_configuration
    from healthid.protocol.federation import FederationError, resolve_relying_party
    from healthid.protocol.federation.master import sign_subordinate_statement

    tried("federation.resolve_relying_party (RP metadata)")
    leaf_metadata.setdefault("redirect_uris", ["https://rp.example/cb"])
    if isinstance(jwks, dict):
        leaf_metadata["jwks"] = jwks
    key = _FedKey()
    config = rp_configuration(key, metadata=leaf_metadata)  # type: ignore[arg-type]
    statement = sign_subordinate_statement(
        master_entity_id=MASTER,
        subject=RP,
        subject_jwks=SIGNING_JWKS,
        metadata={"openid_relying_party": superior_metadata},
        now=FED_NOW,
        signer=_sign,
        kid="k1",
        lifetime=3600,
    )
    try:
        resolve_relying_party(
            client_id=RP,
            entity_configuration=config,
            subordinate_statement=statement,
            master_entity_id=MASTER,
            master_jwks=SIGNING_JWKS,
            now=FED_NOW,
        )
    except (JoseError, FederationError):
        pass


FED_NOW = 1_750_000_000


class _FedKey:
    """The federation_testlib ``Key`` shape over the module's one signing key."""

    kid = "k1"
    jwks = SIGNING_JWKS

    def sign(self, kid: str, data: bytes) -> bytes:
        return _sign(kid, data)


# -- enclave RPC (CBOR) ------------------------------------------------------------------------
VALID_REQUEST_FRAME = codec.encode_request(
    7, "vau_request", {"cid": "ab" * 32, "message": b"\x00" * 40, "n": [1, -2, 3.5, None, True]}
)
VALID_RESPONSE_FRAME = codec.encode_ok(7, {"status": 200, "body": b"x", "lookup": None})


@fuzz_settings(1000)
@given(data=mutated_bytes(VALID_REQUEST_FRAME) | mutated_bytes(VALID_RESPONSE_FRAME))
@example(data=codec.frame(b"\x81" * 100 + b"\x00"))  # nested deeper than MAX_DEPTH
@example(data=codec.frame(b"\x9b" + b"\xff" * 8))  # 2**64-1 array entries announced
@example(data=b"\xff\xff\xff\xff")
def test_enclave_rpc_frame_and_message_decoding_raise_only_codec_errors(data: bytes) -> None:
    tried("enclave.rpc codec.decode_frame + parse_request/parse_response")
    try:
        message = codec.decode_frame(data)
    except CodecError:
        return
    for parse in (codec.parse_request, codec.parse_response):
        try:
            parse(message)
        except CodecError:
            pass


@fuzz_settings(600)
@given(data=st.binary(max_size=300) | mutated_bytes(VALID_REQUEST_FRAME[4:]))
@example(data=b"\xbf\xff")  # indefinite map (not in the deterministic subset)
@example(data=b"\xa2\x61a\x00\x61a\x00")  # duplicate key
@example(data=b"\xfb\x7f\xf8\x00\x00\x00\x00\x00\x00")  # NaN
def test_enclave_rpc_cbor_decoder_raises_only_codec_errors(data: bytes) -> None:
    tried("enclave.rpc cbor.decode")
    try:
        rpc_cbor.decode(data)
    except CodecError:
        pass


# -- eID-Interface SOAP/XML --------------------------------------------------------------------
def _eid_examples() -> tuple[bytes, bytes]:
    from healthid.eid.model import (
        Attribute,
        AttributeResponse,
        EidType,
        LevelOfAssurance,
        PersonalData,
        PreSharedKey,
        StructuredPlace,
    )
    from healthid.eid.server_messages import build_get_result_response, build_use_id_response

    use_id = build_use_id_response(
        session_id="1234567890abcdef1234567890abcdef",
        psk=PreSharedKey(id="1234567890abcdef1234567890abcdef", key="ab" * 32),
        ecard_server_address="https://ecard.example/",
    )
    result = build_get_result_response(
        personal_data=PersonalData(
            given_names="ERIKA",
            family_names="MUSTERMANN",
            date_of_birth="19640812",
            place_of_residence=StructuredPlace(
                street="HEIDESTRASSE 17", city="KÖLN", country="D", zip_code="51147"
            ),
            restricted_id="AA" * 32,
        ),
        operations={a: AttributeResponse.ALLOWED for a in Attribute},
        level_of_assurance=LevelOfAssurance.HOCH,
        eid_type=EidType.CARD_CERTIFIED,
    )
    return use_id, result


USE_ID_RESPONSE, GET_RESULT_RESPONSE = _eid_examples()
BILLION_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
    b"<lolz>&lol3;</lolz>"
)
XXE = (
    b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">'
    b"<soapenv:Body>&x;</soapenv:Body></soapenv:Envelope>"
)
XML_EXAMPLES = [
    BILLION_LAUGHS,
    XXE,
    BILLION_LAUGHS.decode().encode("utf-16"),  # the DTD in UTF-16 with a BOM
    b'<?xml version="1.0" encoding="UTF-7"?>+ADw-!DOCTYPE x+AD4-<a/>',
    b'<?xml version="1.0" encoding="nonsense"?><a/>',
    b'<?xml version="1.0" encoding="ISO-8859-1"?><a>\xe9</a>',
    b"<a>" * 300 + b"</a>" * 300,
    b"<" + b"a" * 70_000 + b"/>",
    b"\xef\xbb\xbf<a/>",
    b"<a xmlns:x='urn:x' x:y='1' x:y='2'/>",
    b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">'
    b"<soapenv:Body/></soapenv:Envelope>",
    USE_ID_RESPONSE.replace(b"https://", b"http://"),
]


@fuzz_settings(800)
@given(data=mutated_bytes(USE_ID_RESPONSE) | mutated_bytes(GET_RESULT_RESPONSE))
def test_eid_soap_response_parsers_raise_only_eid_errors(data: bytes) -> None:
    from healthid.eid.errors import EidError
    from healthid.eid.messages import parse_get_result_response, parse_use_id_response

    tried("eid.parse_use_id_response + parse_get_result_response (SOAP/XML)")
    for parse in (parse_use_id_response, parse_get_result_response):
        try:
            parse(data)
        except EidError:
            pass


@pytest.mark.parametrize("data", XML_EXAMPLES, ids=range(len(XML_EXAMPLES)))
def test_eid_soap_parsers_refuse_dtd_entity_and_encoding_payloads(data: bytes) -> None:
    from healthid.eid.errors import EidError
    from healthid.eid.messages import parse_get_result_response, parse_use_id_response

    for parse in (parse_use_id_response, parse_get_result_response):
        tried("eid SOAP/XML explicit DTD/entity/encoding payloads")
        with pytest.raises(EidError):
            parse(data)


# -- device attestation ------------------------------------------------------------------------
def _attestation_fixtures() -> dict[str, Any]:
    from attestation_factory import (
        BUNDLE_ID,
        CHALLENGE,
        NOW,
        PACKAGE_NAME,
        SIGNING_CERT_DIGEST,
        TEAM_ID,
        AndroidPki,
        ApplePki,
        android_attestation,
        apple_assertion,
        apple_attestation,
        key_description,
    )

    from healthid.protocol.attestation import AndroidConfig, AppleConfig

    apple_pki, android_pki = ApplePki.create(), AndroidPki.create()
    apple = apple_attestation(apple_pki)
    return {
        "now": NOW,
        "challenge": CHALLENGE,
        "apple_config": AppleConfig(
            team_id=TEAM_ID,
            bundle_id=BUNDLE_ID,
            roots=(apple_pki.root.certificate,),
            production=True,
        ),
        "apple": apple,
        "assertion": apple_assertion(apple.device_key, client_data=b"client data", sign_count=1),
        "android_config": AndroidConfig(
            roots=(android_pki.root.certificate,),
            package_names=frozenset({PACKAGE_NAME}),
            signing_cert_digests=frozenset({SIGNING_CERT_DIGEST}),
        ),
        "android": cbor2.dumps(android_attestation(android_pki).chain),
        "key_description": key_description(),
    }


ATT = _attestation_fixtures()


@fuzz_settings(600)
@given(data=mutated_bytes(ATT["apple"].attestation, max_random=256))
@example(data=cbor2.dumps({"fmt": "apple-appattest", "attStmt": [], "authData": b""}))
@example(data=cbor2.dumps({"fmt": [], "attStmt": {}, "authData": 1}))
@example(data=b"\x81" * 50 + b"\x00")  # nested deeper than MAX_CBOR_DEPTH
def test_apple_app_attest_attestation_raises_only_attestation_errors(data: bytes) -> None:
    from healthid.protocol.attestation import AttestationError, verify_apple_attestation

    tried("attestation.verify_apple_attestation (App Attest CBOR)")
    try:
        verify_apple_attestation(
            data, challenge=ATT["challenge"], config=ATT["apple_config"], now=ATT["now"]
        )
    except AttestationError:
        pass


@fuzz_settings(400)
@given(data=mutated_bytes(ATT["assertion"], max_random=128))
def test_apple_app_attest_assertion_raises_only_attestation_errors(data: bytes) -> None:
    from healthid.protocol.attestation import AttestationError, verify_apple_assertion
    from healthid.protocol.attestation.common import spki_der

    tried("attestation.verify_apple_assertion (App Attest CBOR)")
    try:
        verify_apple_assertion(
            data,
            client_data=b"client data",
            public_key=spki_der(ATT["apple"].device_key.public_key()),
            previous_sign_count=0,
            config=ATT["apple_config"],
        )
    except AttestationError:
        pass


@fuzz_settings(800)
@given(der=mutated_bytes(ATT["key_description"], max_random=256))
@example(der=b"\x30\x80\x00\x00")  # indefinite length
@example(der=b"\x30" + b"\x84\xff\xff\xff\xff")  # length beyond the data
def test_android_key_description_extension_raises_only_malformed(der: bytes) -> None:
    from healthid.protocol.attestation import MalformedAttestationError
    from healthid.protocol.attestation.key_description import parse_key_description

    tried("attestation.parse_key_description (Android ASN.1 extension)")
    try:
        parse_key_description(der)
    except MalformedAttestationError:
        pass


@fuzz_settings(300)
@given(data=mutated_bytes(ATT["android"], max_random=256))
def test_android_key_attestation_chain_raises_only_attestation_errors(data: bytes) -> None:
    from healthid.protocol.attestation import AttestationError, verify_android_key_attestation

    tried("attestation.verify_android_key_attestation (CBOR chain + certificates)")
    try:
        verify_android_key_attestation(
            data, challenge=ATT["challenge"], config=ATT["android_config"], now=ATT["now"]
        )
    except AttestationError:
        pass


# -- eGK ---------------------------------------------------------------------------------------
def _egk_fixture() -> tuple[Any, bytes, bytes]:
    from healthid.demo.egk_test_ca import TestEgkCa

    ca = TestEgkCa.create(not_before=datetime(2025, 1, 1, tzinfo=UTC))
    card = ca.issue_card(
        "A123456780",
        "109500969",
        "ERIKA",
        "MUSTERMANN",
        not_before=datetime(2025, 6, 1, tzinfo=UTC),
    )
    return ca, card.certificate_der, card.sign(EGK_CHALLENGE)


EGK_CHALLENGE = bytes(range(32))
EGK_CA, EGK_CERT, EGK_SIGNATURE = _egk_fixture()


@fuzz_settings(500)
@given(
    certificate=mutated_bytes(EGK_CERT, max_random=256),
    signature=st.just(EGK_SIGNATURE) | mutated_bytes(EGK_SIGNATURE, max_random=80),
    intermediates=st.lists(mutated_bytes(EGK_CA.certificate_der, max_random=64), max_size=2),
)
def test_egk_certificate_parsing_raises_only_egk_errors(
    certificate: bytes, signature: bytes, intermediates: list[bytes]
) -> None:
    from healthid.protocol.egk import EgkError, verify_egk_authentication

    tried("egk.verify_egk_authentication (card certificate)")
    try:
        verify_egk_authentication(
            certificate_der=certificate,
            signature=signature,
            challenge=EGK_CHALLENGE,
            trusted_cas=[EGK_CA.certificate],
            now=datetime(2026, 1, 1, tzinfo=UTC),
            intermediates=intermediates,
            accept_test_kvnr=True,
        )
    except EgkError:
        pass


# -- TEE evidence ------------------------------------------------------------------------------
TEE_VECTORS = Path(__file__).resolve().parent.parent / "protocol" / "tee" / "vectors"
SGX_QUOTE = (TEE_VECTORS / "sgx_quote").read_bytes()
TDX_QUOTE = (TEE_VECTORS / "tdx_quote").read_bytes()


@fuzz_settings(800)
@given(raw=mutated_bytes(SGX_QUOTE) | mutated_bytes(TDX_QUOTE))
def test_sgx_and_tdx_quote_parsing_raises_only_tee_errors(raw: bytes) -> None:
    from healthid.protocol.tee import TeeAttestationError, parse_quote

    tried("tee.parse_quote (SGX/TDX DCAP quote)")
    try:
        parse_quote(raw)
    except TeeAttestationError:
        pass


def _document() -> dict[str, Any]:
    from tee_vectors import NONCE, SAMPLE_NOW, identity_jwk

    from healthid.protocol.tee import (
        TeeKind,
        build_claims,
        canonical_json,
        make_simulated_evidence,
        report_data_for,
    )

    claims = json.loads(
        build_claims(
            tee=TeeKind.SIMULATED,
            nonce=NONCE,
            issued_at=SAMPLE_NOW - timedelta(seconds=60),
            keys={"identity": identity_jwk()},
        ).canonical
    )
    evidence = make_simulated_evidence(report_data_for(canonical_json(claims)))
    return {"claims": claims, "evidence_type": "simulated", "evidence": b64u(evidence)}


VALID_DOCUMENT = _document()
DOCUMENT_NAMES = ["claims", "evidence_type", "evidence", "collateral"]
CLAIM_NAMES = ["v", "tee", "nonce", "iat", "keys"]


@st.composite
def documents(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["bytes", "members", "claims", "evidence"]))
    if kind == "bytes":
        return draw(mutated_bytes(json.dumps(VALID_DOCUMENT).encode()))
    doc = json.loads(json.dumps(VALID_DOCUMENT))
    if kind == "members":
        doc.update(draw(with_keys(DOCUMENT_NAMES)))
    elif kind == "claims":
        doc["claims"].update(draw(with_keys(CLAIM_NAMES)))
    else:
        evidence = base64.urlsafe_b64decode(doc["evidence"] + "==")
        doc["evidence"] = b64u(draw(mutated_bytes(evidence)))
    return json.dumps(doc).encode()


@fuzz_settings(500)
@given(data=documents())
@example(data=b'{"claims":{},"claims":{}}')
@example(data=b"[" * 5000)
@example(data=b'{"evidence_type":[]}')
def test_attestation_document_parsing_raises_only_tee_errors(data: bytes) -> None:
    from tee_vectors import NONCE, SAMPLE_NOW

    from healthid.protocol.tee import TeeAttestationError, TeePolicy, verify_attestation_document

    tried("tee.parse_attestation_document + verify (simulated allowed)")
    try:
        verify_attestation_document(
            data,
            nonce=NONCE,
            policy=TeePolicy(mrenclaves=frozenset({bytes(32)})),
            collateral=None,
            now=SAMPLE_NOW,
            allow_simulated=True,
        )
    except TeeAttestationError:
        pass


# -- audit log rows ----------------------------------------------------------------------------
def _valid_row() -> dict[str, Any]:
    from healthid.protocol.audit import AuditEntry, AuditEvent, entry_to_row

    event = AuditEvent(
        time=NOW,
        kind="login",
        outcome="success",
        actor="ab" * 16,
        subject="device-1",
        client_id="https://rp.example",
        details={"method": "device"},
    )
    return entry_to_row(AuditEntry(seq=1, event=event, prev_hash=bytes(32), entry_hash=bytes(32)))


VALID_ROW = _valid_row()
db_values = (
    st.none()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.text(max_size=300)
    | st.binary(max_size=40)
    | st.builds(lambda v: json.dumps(v), json_values)
)


@st.composite
def audit_rows(draw: st.DrawFn) -> dict[str, Any]:
    row = dict(VALID_ROW)
    for name in draw(st.lists(st.sampled_from([*VALID_ROW, "other"]), max_size=4)):
        if draw(st.booleans()):
            row.pop(name, None)
        else:
            row[name] = draw(db_values)
    if draw(st.booleans()) and isinstance(row.get("details"), str):
        row["details"] = draw(mutated_text(row["details"]))
    return row


@fuzz_settings(1000)
@given(row=audit_rows())
def test_audit_entry_from_row_never_raises(row: dict[str, Any]) -> None:
    """A tampered or corrupt row is reported as UnreadableEntry; it must never raise."""
    from healthid.protocol.audit import AuditEntry, UnreadableEntry, entry_from_row

    tried("audit.entry_from_row")
    assert isinstance(entry_from_row(row), AuditEntry | UnreadableEntry)


# -- bugs found (do not fix src here: pinned with the exact input) ----------------------------
UNHASHABLE_ALG_HEADER = b64u(b'{"alg":[],"kid":"k1","typ":"JWT"}')
NESTED_JWS_HEADER = b64u(b"[" * 5000)
NESTED_JWE_HEADER = b64u(b"[" * 1500)


def test_fixed_jws_header_with_array_alg_raises_jose_error() -> None:
    with pytest.raises(JoseError):
        verify_compact(
            f"{UNHASHABLE_ALG_HEADER}.{VALID_PAYLOAD}.{VALID_SIGNATURE}",
            jwks=SIGNING_JWKS,
            typ=TYP_ENTITY_STATEMENT,
        )


def test_fixed_jwe_header_with_object_enc_raises_jose_error() -> None:
    header = b64u(b'{"alg":"ECDH-ES","enc":{},"cty":"JWT"}')
    with pytest.raises(JoseError):
        read_jwe_header(header + "....")


def test_fixed_deeply_nested_jws_header_raises_jose_error() -> None:
    with pytest.raises(JoseError):
        verify_compact(f"{NESTED_JWS_HEADER}.e30.", jwks=SIGNING_JWKS, typ=TYP_ID_TOKEN)


def test_fixed_deeply_nested_jwe_header_raises_jose_error() -> None:
    with pytest.raises(JoseError):
        read_jwe_header(NESTED_JWE_HEADER + "....")


def test_fixed_audit_row_with_deeply_nested_details_is_unreadable() -> None:
    from healthid.protocol.audit import UnreadableEntry, entry_from_row

    assert isinstance(entry_from_row({**VALID_ROW, "details": "[" * 4000}), UnreadableEntry)


def test_fixed_deeply_nested_simulated_evidence_raises_tee_error() -> None:
    from tee_vectors import NONCE, SAMPLE_NOW

    from healthid.protocol.tee import TeeAttestationError, TeePolicy, verify_attestation_document

    doc = {**VALID_DOCUMENT, "evidence": b64u(b"[" * 1020)}
    with pytest.raises(TeeAttestationError):
        verify_attestation_document(
            json.dumps(doc),
            nonce=NONCE,
            policy=TeePolicy(mrenclaves=frozenset({bytes(32)})),
            collateral=None,
            now=SAMPLE_NOW,
            allow_simulated=True,
        )


def _jwe_with_header(**change: Any) -> str:
    segments = VALID_JWE.split(".")
    header = json.loads(base64.urlsafe_b64decode(segments[0] + "=" * (-len(segments[0]) % 4)))
    header["epk"] = {**header["epk"], **change}
    return ".".join([b64u(json.dumps(header).encode()), *segments[1:]])


@pytest.mark.parametrize("change", [{"crv": "P-257"}, {"x": b64u(bytes(32))}])
def test_fixed_jwe_with_a_bad_ephemeral_key_raises_jose_error(change: dict[str, str]) -> None:
    with pytest.raises(JoseError):
        decrypt_id_token(_jwe_with_header(**change), private_key=ENC_KEY)


def _android_chain_with(index: int, old: bytes, new: bytes) -> bytes:
    chain = cbor2.loads(ATT["android"])
    assert old in chain[index]
    chain[index] = chain[index].replace(old, new, 1)
    return cbor2.dumps(chain)


@pytest.mark.parametrize(
    ("index", "old", "new"),
    [
        (1, b"\x03B\x00\x04", b"\x03B\x00\x05"),
        (3, b"\x06\x07*\x86H\xce=\x02\x01", b"\x06\x06*\x86H\xce=\x02\x01"),
    ],
)
def test_fixed_android_chain_with_an_unparsable_key_raises_attestation_error(
    index: int, old: bytes, new: bytes
) -> None:
    from healthid.protocol.attestation import AttestationError, verify_android_key_attestation

    data = _android_chain_with(index, old, new)
    with pytest.raises(AttestationError):
        verify_android_key_attestation(
            data, challenge=ATT["challenge"], config=ATT["android_config"], now=ATT["now"]
        )


def test_fixed_egk_card_with_an_unparsable_issuer_raises_egk_error() -> None:
    from healthid.protocol.egk import EgkError, verify_egk_authentication

    old = b"\x06\x03U\x04\x06\x13\x02DE"
    assert old in EGK_CERT
    with pytest.raises(EgkError):
        verify_egk_authentication(
            certificate_der=EGK_CERT.replace(old, b"\x06\x03U\x04\x06\x11\x02DE", 1),
            signature=EGK_SIGNATURE,
            challenge=EGK_CHALLENGE,
            trusted_cas=[EGK_CA.certificate],
            now=datetime(2026, 1, 1, tzinfo=UTC),
            accept_test_kvnr=True,
        )


V4 = (b"\xa0\x03\x02\x01\x02", b"\xa0\x03\x02\x01\x03")  # X.509 version v3 -> "v4"


@pytest.mark.parametrize("parser", ["android", "apple", "egk"])
def test_fixed_certificate_with_version_4_raises_the_declared_error(parser: str) -> None:
    from healthid.protocol.attestation import (
        AttestationError,
        verify_android_key_attestation,
        verify_apple_attestation,
    )
    from healthid.protocol.egk import EgkError, verify_egk_authentication

    if parser == "egk":
        with pytest.raises(EgkError):
            verify_egk_authentication(
                certificate_der=EGK_CERT.replace(*V4, 1),
                signature=EGK_SIGNATURE,
                challenge=EGK_CHALLENGE,
                trusted_cas=[EGK_CA.certificate],
                now=datetime(2026, 1, 1, tzinfo=UTC),
                accept_test_kvnr=True,
            )
        return
    with pytest.raises(AttestationError):
        if parser == "android":
            verify_android_key_attestation(
                _android_chain_with(0, *V4),
                challenge=ATT["challenge"],
                config=ATT["android_config"],
                now=ATT["now"],
            )
        else:
            top = cbor2.loads(ATT["apple"].attestation)
            top["attStmt"]["x5c"][0] = top["attStmt"]["x5c"][0].replace(*V4, 1)
            verify_apple_attestation(
                cbor2.dumps(top),
                challenge=ATT["challenge"],
                config=ATT["apple_config"],
                now=ATT["now"],
            )
