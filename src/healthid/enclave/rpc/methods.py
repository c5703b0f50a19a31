"""The allow-list: every method the host may call, how its arguments are read, its limits.

The methods are those of :class:`healthid.enclave.api.EnclaveClient` plus one transport
method, ``upload_import_part``, which carries a registry file larger than one frame to the
enclave in parts (``prepare_import`` then names the upload instead of carrying the data).
Uploads belong to their connection and vanish with it.

A separate group, :data:`KEY_RELEASE_METHODS`, is enclave to enclave, not host to enclave: a
joining enclave instance asks a running one for its root key through the attested key release
(:class:`healthid.enclave.key_release.KeyReleaseSource`). They are not part of the
``EnclaveClient`` the host uses; an enclave that does not release keys refuses them.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from healthid.enclave import api
from healthid.enclave.key_release import KeyReleaseSource
from healthid.enclave.registry.formats import MAX_IMPORT_BYTES
from healthid.enclave.rpc import schema
from healthid.enclave.rpc.codec import DEFAULT_MAX_REQUEST, MAX_FRAME, MIB
from healthid.enclave.rpc.errors import CodecError, FrameTooLarge, RpcError
from healthid.enclave.rpc.schema import Fields

DEFAULT_TIMEOUT: Final = 30.0  # seconds the enclave may take for one request
IMPORT_TIMEOUT: Final = 600.0  # reading a registry file of up to 1 GiB, or sealing one chunk
UPLOAD_PART: Final = 8 * MIB  # bytes of a registry file per upload_import_part request
MAX_UPLOADS: Final = 2  # unfinished uploads per connection
UPLOAD_METHOD: Final = "upload_import_part"
KEY_RELEASE_CHALLENGE: Final = "key_release_challenge"
RELEASE_ROOT_KEY: Final = "release_root_key"
KEY_RELEASE_METHODS: Final = frozenset({KEY_RELEASE_CHALLENGE, RELEASE_ROOT_KEY})


class Session:
    """What one connection holds inside the enclave: the enclave and its unfinished uploads."""

    def __init__(self, enclave: api.EnclaveClient) -> None:
        self.enclave = enclave
        self._uploads: dict[str, bytearray] = {}

    def append(self, upload: str | None, offset: int, part: bytes) -> tuple[str, int]:
        if upload is None:
            if len(self._uploads) >= MAX_UPLOADS:
                raise RpcError(f"more than {MAX_UPLOADS} uploads in progress on this connection")
            upload = secrets.token_urlsafe(12)
            self._uploads[upload] = bytearray()
        buffer = self._uploads.get(upload)
        if buffer is None:
            raise RpcError("unknown upload id")
        if offset != len(buffer):
            raise RpcError(f"upload part at offset {offset}; expected {len(buffer)}")
        if len(buffer) + len(part) > MAX_IMPORT_BYTES:
            del self._uploads[upload]
            raise FrameTooLarge(f"a registry file is at most {MAX_IMPORT_BYTES} bytes")
        buffer += part
        return upload, len(buffer)

    def take(self, upload: str) -> bytes:
        buffer = self._uploads.pop(upload, None)
        if buffer is None:
            raise RpcError("unknown upload id")
        data = bytes(buffer)
        buffer.clear()
        return data

    def close(self) -> None:
        self._uploads.clear()


Handler = Callable[[Session, Fields], Awaitable[object]]


@dataclass(frozen=True, kw_only=True)
class Method:
    name: str
    args: frozenset[str]
    handler: Handler
    timeout: float = DEFAULT_TIMEOUT
    max_request: int = DEFAULT_MAX_REQUEST  # bytes of the request's CBOR payload


async def _status(s: Session, a: Fields) -> object:
    return schema.encode_status(await s.enclave.status())


async def _upload_import_part(s: Session, a: Fields) -> object:
    upload, size = s.append(a.opt_text("upload"), a.count("offset"), a.blob("part"))
    return {"upload": upload, "size": size}


async def _prepare_import(s: Session, a: Fields) -> object:
    data, upload = a.opt_blob("data"), a.opt_text("upload")
    filename, fmt, accept = a.text("filename"), a.opt_text("fmt"), a.boolean("accept_test_kvnr")
    if upload is not None and data is None:
        data = s.take(upload)
    elif upload is not None or data is None:
        raise CodecError("prepare_import: give either data or upload")
    prepared = await s.enclave.prepare_import(
        data, filename=filename, fmt=fmt, accept_test_kvnr=accept
    )
    return schema.encode_prepared_import(prepared)


async def _seal_import_chunk(s: Session, a: Fields) -> object:
    chunk = await s.enclave.seal_import_chunk(a.text("import_id"), a.count("index"))
    return schema.encode_sealed_chunk(chunk)


async def _discard_import(s: Session, a: Fields) -> object:
    await s.enclave.discard_import(a.text("import_id"))
    return None


async def _verify_policyholders(s: Session, a: Fields) -> object:
    sealed = list(a.array("sealed", schema.decode_sealed_policyholder))
    return list(await s.enclave.verify_policyholders(sealed))


async def _egk_prove(s: Session, a: Fields) -> object:
    lookup = await s.enclave.egk_prove(
        certificate=a.blob("certificate"),
        signature=a.blob("signature"),
        challenge=a.blob("challenge"),
        intermediates=a.array("intermediates", schema.blob),
    )
    return schema.encode_identity_lookup(lookup)


async def _eid_start(s: Session, a: Fields) -> object:
    return schema.encode_eid_started(await s.enclave.eid_start())


async def _eid_collect(s: Session, a: Fields) -> object:
    lookup = await s.enclave.eid_collect(a.text("handle"))
    return None if lookup is None else schema.encode_identity_lookup(lookup)


async def _match_identity(s: Session, a: Fields) -> object:
    proof_id = a.text("proof_id")
    candidates = list(a.array("candidates", schema.decode_sealed_policyholder))
    return schema.encode_identity_match(await s.enclave.match_identity(proof_id, candidates))


async def _login_challenges(s: Session, a: Fields) -> object:
    return list(await s.enclave.login_challenges(a.count("count")))


async def _bind_device(s: Session, a: Fields) -> object:
    request = a.get("request", schema.decode_binding_request)
    return schema.encode_bound_device_key(await s.enclave.bind_device(request))


async def _login(s: Session, a: Fields) -> object:
    request = a.get("request", schema.decode_login_request)
    return schema.encode_login_grant(await s.enclave.login(request))


async def _seal_history(s: Session, a: Fields) -> object:
    sealed = a.get("sealed", schema.decode_sealed_policyholder)
    event = a.get("event", schema.decode_history_event)
    return schema.encode_sealed_history_event(await s.enclave.seal_history(sealed, event))


async def _mint_id_token(s: Session, a: Fields) -> object:
    return await s.enclave.mint_id_token(a.get("request", schema.decode_id_token_request))


async def _attest(s: Session, a: Fields) -> object:
    return await s.enclave.attest(a.blob("nonce"))


async def _audit_head(s: Session, a: Fields) -> object:
    head = await s.enclave.audit_head()
    return None if head is None else schema.encode_signed_checkpoint(head)


async def _sign_audit_checkpoint(s: Session, a: Fields) -> object:
    request = a.get("request", schema.decode_audit_request)
    return schema.encode_signed_checkpoint(await s.enclave.sign_audit_checkpoint(request))


def _releaser(s: Session) -> KeyReleaseSource:
    if not isinstance(s.enclave, KeyReleaseSource):
        raise RpcError("this enclave does not release its root key")
    return s.enclave


async def _key_release_challenge(s: Session, a: Fields) -> object:
    return {"challenge": await _releaser(s).key_release_challenge()}


async def _release_root_key(s: Session, a: Fields) -> object:
    released = await _releaser(s).release_root_key(
        challenge=a.blob("challenge"), nonce=a.blob("nonce"), attestation=a.blob("attestation")
    )
    return schema.encode_released_root_key(released)


async def _vau_public_keys(s: Session, a: Fields) -> object:
    return await s.enclave.vau_public_keys()


async def _vau_handshake(s: Session, a: Fields) -> object:
    return schema.encode_vau_reply(await s.enclave.vau_handshake(a.blob("m1")))


async def _vau_finish(s: Session, a: Fields) -> object:
    return schema.encode_vau_reply(await s.enclave.vau_finish(a.text("cid"), a.blob("m3")))


async def _vau_request(s: Session, a: Fields) -> object:
    context = a.get("context", schema.decode_vau_context)
    reply = await s.enclave.vau_request(a.text("cid"), a.blob("message"), context)
    return schema.encode_vau_reply(reply)


def _method(
    name: str,
    args: tuple[str, ...],
    handler: Handler,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    max_request: int = DEFAULT_MAX_REQUEST,
) -> Method:
    return Method(
        name=name, args=frozenset(args), handler=handler, timeout=timeout, max_request=max_request
    )


METHODS: Final[dict[str, Method]] = {
    m.name: m
    for m in (
        _method("status", (), _status),
        _method(
            UPLOAD_METHOD, ("upload", "offset", "part"), _upload_import_part, max_request=MAX_FRAME
        ),
        _method(
            "prepare_import",
            ("data", "upload", "filename", "fmt", "accept_test_kvnr"),
            _prepare_import,
            timeout=IMPORT_TIMEOUT,
            max_request=MAX_FRAME,
        ),
        _method(
            "seal_import_chunk", ("import_id", "index"), _seal_import_chunk, timeout=IMPORT_TIMEOUT
        ),
        _method("discard_import", ("import_id",), _discard_import),
        _method(
            "verify_policyholders",
            ("sealed",),
            _verify_policyholders,
            timeout=IMPORT_TIMEOUT,
            max_request=MAX_FRAME,
        ),
        _method(
            "egk_prove", ("certificate", "signature", "challenge", "intermediates"), _egk_prove
        ),
        _method("eid_start", (), _eid_start),
        _method("eid_collect", ("handle",), _eid_collect),
        _method("match_identity", ("proof_id", "candidates"), _match_identity),
        _method("login_challenges", ("count",), _login_challenges),
        _method("bind_device", ("request",), _bind_device),
        _method("login", ("request",), _login),
        _method("seal_history", ("sealed", "event"), _seal_history),
        _method("mint_id_token", ("request",), _mint_id_token),
        _method("attest", ("nonce",), _attest),
        _method("audit_head", (), _audit_head),
        _method(
            "sign_audit_checkpoint",
            ("request",),
            _sign_audit_checkpoint,
            max_request=MAX_FRAME,  # up to MAX_AUDIT_CHECKPOINT_ENTRIES entries
        ),
        # enclave to enclave: the attested key release (KEY_RELEASE_METHODS)
        _method(KEY_RELEASE_CHALLENGE, (), _key_release_challenge),
        _method(RELEASE_ROOT_KEY, ("challenge", "nonce", "attestation"), _release_root_key),
        # the VAU channel into the enclave (issue #6)
        _method("vau_public_keys", (), _vau_public_keys),
        _method("vau_handshake", ("m1",), _vau_handshake),
        _method("vau_finish", ("cid", "m3"), _vau_finish),
        _method("vau_request", ("cid", "message", "context"), _vau_request),
    )
}
