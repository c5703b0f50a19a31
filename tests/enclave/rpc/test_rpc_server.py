"""The RPC server and client: bad input, limits, timeouts, errors, concurrency, uploads."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import random
import stat
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from rpc_testlib import (
    egk_card,
    id_token_request,
    import_people,
    in_process,
    log_in,
    people,
    registry_csv,
)

from conftest import RawConnection, Served, serve_stub
from healthid.enclave import api
from healthid.enclave.rpc import (
    EnclaveServer,
    EnclaveServerError,
    RemoteEnclave,
    RpcError,
    cbor,
    schema,
)
from healthid.enclave.rpc.codec import MAX_FRAME, MIB, frame
from healthid.enclave.rpc.errors import ERROR_CLASSES, FrameTooLarge, UnknownMethod
from healthid.enclave.rpc.methods import MAX_UPLOADS, METHODS, UPLOAD_METHOD
from healthid.keys.file import FileKeyStore
from healthid.protocol.jose import decrypt_id_token
from healthid.settings import Settings

STATUS = api.EnclaveStatus(tee="simulated", root_key_id="stub", version="0")


class Stub:
    """A stand-in enclave: status() does what the test sets; seal_history echoes."""

    def __init__(self) -> None:
        self.raise_: Exception | None = None
        self.delay = 0.0

    async def status(self) -> api.EnclaveStatus:
        await asyncio.sleep(self.delay)
        if self.raise_ is not None:
            raise self.raise_
        return STATUS

    async def seal_history(
        self, sealed: api.SealedPolicyholder, event: api.HistoryEvent
    ) -> api.SealedHistoryEvent:
        await asyncio.sleep(random.random() / 50)  # noqa: S311 - shuffles the answer order
        return api.SealedHistoryEvent(
            event_id=sealed.pseudonym, created_at=event.at, ciphertext=event.detail.encode()
        )


def holder(pseudonym: str) -> api.SealedPolicyholder:
    return api.SealedPolicyholder(
        pseudonym=pseudonym, kvnr_index=b"k", root_key_id="r", wrapped_key=b"w", records=()
    )


# -- the socket -------------------------------------------------------------------------------
async def test_socket_file_is_private_to_the_enclave_user(served: Served) -> None:
    mode = os.lstat(served.socket_path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600


async def test_a_second_server_on_a_live_socket_is_refused(served: Served) -> None:
    with pytest.raises(EnclaveServerError, match="another enclave is serving"):
        await EnclaveServer(served.enclave, served.socket_path).start()
    assert (await RemoteEnclave(served.socket_path).status()).tee == "simulated"


async def test_a_file_in_the_way_of_the_socket_is_not_replaced(socket_dir: Path) -> None:
    path = socket_dir / "enclave.sock"
    path.write_text("not a socket")
    with pytest.raises(EnclaveServerError, match="is not a socket"):
        await serve_stub(Stub(), path)
    assert path.read_text() == "not a socket"


async def test_closing_the_server_removes_its_socket(socket_dir: Path) -> None:
    server = await serve_stub(Stub(), socket_dir / "enclave.sock")
    await server.aclose()
    assert not (socket_dir / "enclave.sock").exists()


# -- bad input: an error answer, and the server serves on -------------------------------------
async def test_malformed_cbor_is_answered_and_the_connection_serves_on(served: Served) -> None:
    raw = await RawConnection.open(served.socket_path)
    for junk in (b"\xff\x00", b"", b"\x9f\xff", b"\xc1\x00", b"\x83\x01"):
        await raw.send_bytes(struct.pack(">I", len(junk)) + junk)
        answer = await raw.receive()
        assert (answer.id, answer.ok, answer.code) == (None, False, "bad_request")
    assert (await raw.call(1, "status", {})).ok
    await raw.close()


async def test_a_malformed_request_with_an_id_is_answered_under_that_id(served: Served) -> None:
    raw = await RawConnection.open(served.socket_path)
    await raw.send({"id": 9, "method": "status"})
    answer = await raw.receive()
    assert (answer.id, answer.code) == (9, "bad_request")
    assert (await raw.call(10, "status", {})).ok
    await raw.close()


@pytest.mark.parametrize("method", ["open_policyholder", "validate_and_seal", "__init__", "x"])
async def test_a_method_off_the_allow_list_is_refused(served: Served, method: str) -> None:
    raw = await RawConnection.open(served.socket_path)
    answer = await raw.call(3, method, {})
    assert (answer.id, answer.ok, answer.code) == (3, False, "unknown_method")
    assert (await raw.call(4, "status", {})).ok
    await raw.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"import_id": 5, "index": 0}, "seal_import_chunk.import_id: expected text"),
        ({"import_id": "i", "index": "0"}, "seal_import_chunk.index: expected an integer"),
        ({"import_id": "i", "index": -1}, "seal_import_chunk.index: expected a non-negative"),
        ({"import_id": "i", "index": True}, "seal_import_chunk.index: expected an integer"),
        ({"import_id": "i"}, "seal_import_chunk: missing field(s) index"),
        ({"import_id": "i", "index": 0, "more": 1}, "seal_import_chunk: 1 unknown field(s)"),
    ],
)
async def test_wrong_argument_types_are_refused_by_field(
    served: Served, args: dict[str, object], message: str
) -> None:
    raw = await RawConnection.open(served.socket_path)
    answer = await raw.call(5, "seal_import_chunk", args)
    assert (answer.id, answer.code) == (5, "bad_request")
    assert answer.message.startswith(message)
    assert (await raw.call(6, "status", {})).ok
    await raw.close()


async def test_wrong_types_raise_rpc_error_at_the_client(served: Served) -> None:
    remote = RemoteEnclave(served.socket_path)
    with pytest.raises(RpcError, match=r"egk_prove\.certificate: expected bytes"):
        await remote._call(
            "egk_prove",
            {"certificate": "text", "signature": b"", "challenge": b"", "intermediates": []},
        )
    with pytest.raises(RpcError, match=r"match_identity\.candidates\[0\]: expected a map"):
        await remote._call("match_identity", {"proof_id": "p", "candidates": [1]})
    assert (await remote.status()).tee == "simulated"
    await remote.aclose()


async def test_an_oversized_frame_closes_only_its_connection(served: Served) -> None:
    raw = await RawConnection.open(served.socket_path)
    await raw.send_bytes(struct.pack(">I", MAX_FRAME + 1) + b"\x00" * 1024)
    answer = await raw.receive()
    assert (answer.id, answer.code) == (None, "too_large")
    assert await raw.reader.read() == b""  # the server closed this connection
    await raw.close()
    assert (await RemoteEnclave(served.socket_path).status()).tee == "simulated"


async def test_a_request_over_its_methods_limit_is_refused(served: Served) -> None:
    raw = await RawConnection.open(served.socket_path)
    answer = await raw.call(7, "status", {"padding": b"\x00" * (2 * MIB)})
    assert (answer.id, answer.code) == (7, "too_large")
    assert (await raw.call(8, "status", {})).ok
    await raw.close()


async def test_the_client_does_not_send_a_request_over_the_limit(served: Served) -> None:
    remote = RemoteEnclave(served.socket_path)
    big = dataclasses.replace(
        holder("p"), records=(api.SealedRecord(record_type="t", version=1, ciphertext=b"x" * MIB),)
    )
    with pytest.raises(FrameTooLarge, match="seal_history"):
        await remote.seal_history(big, api.HistoryEvent(kind="login", at=1))
    assert remote._conn is None  # refused before connecting
    await remote.aclose()


# -- errors cross as the same classes ---------------------------------------------------------
@pytest.mark.parametrize("cls", sorted(set(ERROR_CLASSES.values()), key=lambda c: c.__name__))
async def test_errors_arrive_as_the_same_class_and_message(
    socket_dir: Path, cls: type[Exception]
) -> None:
    stub = Stub()
    stub.raise_ = cls(f"refused by {cls.__name__} (pseudonym p-1)")
    server = await serve_stub(stub, socket_dir / "e.sock")
    remote = RemoteEnclave(server.socket_path)
    with pytest.raises(cls) as info:
        await remote.status()
    assert type(info.value) is cls
    assert str(info.value) == f"refused by {cls.__name__} (pseudonym p-1)"
    await remote.aclose()
    await server.aclose()


async def test_an_unexpected_exception_is_internal_and_its_message_stays_inside(
    socket_dir: Path,
) -> None:
    stub = Stub()
    stub.raise_ = ValueError("bad KVNR A123456780 for Erika")
    server = await serve_stub(stub, socket_dir / "e.sock")
    remote = RemoteEnclave(server.socket_path)
    with pytest.raises(api.EnclaveError) as info:
        await remote.status()
    assert type(info.value) is api.EnclaveError
    assert str(info.value) == "status: internal enclave error (ValueError)"
    await remote.aclose()
    await server.aclose()


# -- timeouts and reachability ----------------------------------------------------------------
async def test_a_request_over_its_time_in_the_enclave_is_unavailable(socket_dir: Path) -> None:
    stub = Stub()
    stub.delay = 5
    methods = METHODS | {"status": dataclasses.replace(METHODS["status"], timeout=0.1)}
    server = await serve_stub(stub, socket_dir / "e.sock", methods)
    remote = RemoteEnclave(server.socket_path)
    with pytest.raises(api.EnclaveUnavailable, match="status did not finish in time"):
        await remote.status()
    stub.delay = 0
    assert await remote.status() == STATUS
    await remote.aclose()
    await server.aclose()


async def test_a_call_the_enclave_does_not_answer_in_time_is_unavailable(
    socket_dir: Path,
) -> None:
    stub = Stub()
    stub.delay = 0.5
    server = await serve_stub(stub, socket_dir / "e.sock")
    remote = RemoteEnclave(server.socket_path, timeout=0.1)
    with pytest.raises(api.EnclaveUnavailable, match=r"did not answer status within 0\.1 s"):
        await remote.status()
    stub.delay = 0
    assert await remote.status() == STATUS  # the late answer to the first call is dropped
    await asyncio.sleep(0.5)
    assert await remote.status() == STATUS
    await remote.aclose()
    await server.aclose()


async def test_an_unreachable_enclave_is_unavailable(socket_dir: Path) -> None:
    remote = RemoteEnclave(socket_dir / "nobody.sock")
    with pytest.raises(api.EnclaveUnavailable, match="not reachable"):
        await remote.status()
    await remote.aclose()


async def test_closing_the_server_fails_open_calls_and_the_client_reconnects(
    socket_dir: Path,
) -> None:
    stub = Stub()
    stub.delay = 5
    server = await serve_stub(stub, socket_dir / "e.sock")
    remote = RemoteEnclave(server.socket_path)
    call = asyncio.create_task(remote.status())
    await asyncio.sleep(0.1)
    await server.aclose()
    with pytest.raises(api.EnclaveUnavailable, match="lost"):
        await call
    with pytest.raises(api.EnclaveUnavailable, match="not reachable"):
        await remote.status()
    stub.delay = 0
    server = await serve_stub(stub, socket_dir / "e.sock")
    assert await remote.status() == STATUS
    await remote.aclose()
    await server.aclose()


async def test_a_closed_client_refuses_calls(served: Served) -> None:
    remote = RemoteEnclave(served.socket_path)
    await remote.status()
    remote.close()
    with pytest.raises(api.EnclaveUnavailable, match="closed"):
        await remote.status()


async def test_a_client_leaving_mid_request_does_not_disturb_the_server(
    socket_dir: Path,
) -> None:
    stub = Stub()
    stub.delay = 0.2
    server = await serve_stub(stub, socket_dir / "e.sock")
    for _ in range(3):
        raw = await RawConnection.open(server.socket_path)
        await raw.send({"id": 1, "method": "status", "args": {}})
        await raw.close()
    stub.delay = 0
    assert await RemoteEnclave(server.socket_path).status() == STATUS
    await server.aclose()


# -- concurrency ------------------------------------------------------------------------------
async def test_answers_in_any_order_reach_their_own_callers(socket_dir: Path) -> None:
    server = await serve_stub(Stub(), socket_dir / "e.sock")
    remote = RemoteEnclave(server.socket_path)
    calls = [
        remote.seal_history(holder(f"p-{i}"), api.HistoryEvent(kind="login", at=i, detail=f"d{i}"))
        for i in range(200)
    ]
    results = await asyncio.gather(*calls)
    assert [(r.event_id, r.created_at, r.ciphertext) for r in results] == [
        (f"p-{i}", i, f"d{i}".encode()) for i in range(200)
    ]
    await remote.aclose()
    await server.aclose()


async def test_fifty_concurrent_mixed_requests_over_one_client_never_cross(
    served: Served, settings: Settings
) -> None:
    remote = RemoteEnclave(served.socket_path)
    local = in_process(settings)
    sealed = await import_people(local, 10)
    who = people(10)
    keys = FileKeyStore(settings.data_dir / "keys")
    kid = keys.generate("token").kid
    rp_key = ec.generate_private_key(ec.SECP256R1())
    cards = [egk_card(settings, p) for p in who]
    # sessions made by the in-process enclave: the same root key, so the process accepts them
    tickets = [(await log_in(local, settings, sealed[j], who[j])).grant.ticket for j in range(10)]

    async def one(i: int) -> None:
        j = i % 10
        kind = i % 5
        if kind == 0:
            event = api.HistoryEvent(kind="login", at=i, device_id=f"dev-{i}", detail=f"req-{i}")
            out = await remote.seal_history(sealed[j], event)
            assert local.open_history(sealed[j], out.event_id, out.ciphertext) == event
        elif kind == 1:
            challenge = i.to_bytes(32, "big")
            lookup = await remote.egk_prove(
                certificate=cards[j].certificate_der,
                signature=cards[j].sign(challenge),
                challenge=challenge,
            )
            assert ("kvnr", sealed[j].kvnr_index) in lookup.lookups
            match = await remote.match_identity(lookup.proof_id, [sealed[j]])
            assert match.pseudonym == sealed[j].pseudonym
        elif kind == 2:
            request = id_token_request(
                sealed[j], ticket=tickets[j], kid=kid, rp_key=rp_key, nonce=f"n-{i}"
            )
            jwe = await remote.mint_id_token(request)
            inner = decrypt_id_token(jwe, private_key=rp_key)
            payload = inner.split(".")[1]
            claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
            assert claims["nonce"] == f"n-{i}"
            assert claims["urn:telematik:claims:id"] == who[j].kvnr
        elif kind == 3:
            other = sealed[(j + 1) % 10]
            moved = dataclasses.replace(sealed[j], records=other.records)
            assert await remote.verify_policyholders([sealed[j], moved]) == [sealed[j].pseudonym]
        else:
            assert (await remote.status()).root_key_id == (await local.status()).root_key_id

    await asyncio.gather(*(one(i) for i in range(50)))
    conn = remote._conn
    assert conn is not None and not conn.closed and not conn.pending
    await remote.aclose()
    local.close()


async def test_many_host_workers_share_one_enclave(served: Served, settings: Settings) -> None:
    local = in_process(settings)
    sealed = await import_people(local, 5)
    clients = [RemoteEnclave(served.socket_path) for _ in range(5)]

    async def worker(w: int) -> None:
        for i in range(10):
            event = api.HistoryEvent(kind="login", at=w * 100 + i, detail=f"w{w}-{i}")
            out = await clients[w].seal_history(sealed[w], event)
            assert local.open_history(sealed[w], out.event_id, out.ciphertext) == event

    await asyncio.gather(*(worker(w) for w in range(5)))
    for client in clients:
        await client.aclose()
    local.close()


# -- registry files larger than one part ------------------------------------------------------
async def test_a_registry_file_larger_than_a_part_is_uploaded_in_parts(
    served: Served,
) -> None:
    data = registry_csv(120)
    remote = RemoteEnclave(served.socket_path, upload_part=1000)
    assert len(data) > 10 * 1000
    prepared = await remote.prepare_import(data, filename="r.csv", fmt=None, accept_test_kvnr=False)
    inline = await served.enclave.prepare_import(
        data, filename="r.csv", fmt=None, accept_test_kvnr=False
    )
    assert (prepared.row_count, prepared.chunk_count, prepared.errors) == (
        inline.row_count,
        inline.chunk_count,
        inline.errors,
    )
    chunk = await remote.seal_import_chunk(prepared.import_id, 0)
    assert len(chunk.sealed) == 120
    for done in (prepared, inline):
        await remote.discard_import(done.import_id)
    await remote.aclose()


async def test_uploads_are_checked_and_bounded(served: Served) -> None:
    remote = RemoteEnclave(served.socket_path)
    first = await remote._call(UPLOAD_METHOD, {"upload": None, "offset": 0, "part": b"abc"})
    assert isinstance(first, dict) and first["size"] == 3
    with pytest.raises(RpcError, match="offset 0; expected 3"):
        await remote._call(UPLOAD_METHOD, {"upload": first["upload"], "offset": 0, "part": b"x"})
    with pytest.raises(RpcError, match="unknown upload id"):
        await remote._call(UPLOAD_METHOD, {"upload": "nope", "offset": 0, "part": b"x"})
    for _ in range(MAX_UPLOADS - 1):
        await remote._call(UPLOAD_METHOD, {"upload": None, "offset": 0, "part": b"x"})
    with pytest.raises(RpcError, match="uploads in progress"):
        await remote._call(UPLOAD_METHOD, {"upload": None, "offset": 0, "part": b"x"})
    args = {"filename": "r.csv", "fmt": None, "accept_test_kvnr": False}
    with pytest.raises(RpcError, match="either data or upload"):
        await remote._call("prepare_import", args | {"data": b"x", "upload": first["upload"]})
    with pytest.raises(RpcError, match="unknown upload id"):
        await remote._call("prepare_import", args | {"data": None, "upload": "nope"})
    await remote.aclose()
    # a new connection starts without the old connection's uploads
    again = RemoteEnclave(served.socket_path)
    with pytest.raises(RpcError, match="unknown upload id"):
        await again._call("prepare_import", args | {"data": None, "upload": first["upload"]})
    await again.aclose()


def test_unknown_method_is_an_rpc_error_subclass() -> None:
    assert issubclass(UnknownMethod, RpcError) and issubclass(RpcError, api.EnclaveError)


async def test_verify_is_split_into_batches_that_fit_a_frame(served: Served) -> None:
    from healthid.enclave.rpc.client import VERIFY_BATCH, _batches

    sealed = await import_people(served.enclave, VERIFY_BATCH + 50)
    tampered = dataclasses.replace(sealed[-1], records=sealed[0].records)
    remote = RemoteEnclave(served.socket_path)
    assert await remote.verify_policyholders([*sealed, tampered]) == [tampered.pseudonym]
    await remote.aclose()
    big = api.SealedRecord(record_type="t", version=1, ciphertext=b"x" * (3 * MIB))
    heavy = [dataclasses.replace(sealed[0], records=(big,)) for _ in range(5)]
    assert [len(b) for b in _batches(heavy)] == [2, 2, 1]
    assert [len(b) for b in _batches(sealed)] == [VERIFY_BATCH, 50]


# -- the connection: frames as they arrive, slots, slow readers, time limits ------------------
def status_frame(request_id: int) -> bytes:
    return frame(cbor.encode({"id": request_id, "method": "status", "args": {}}))


async def test_frames_packed_together_or_split_anywhere_are_all_served(served: Served) -> None:
    raw = await RawConnection.open(served.socket_path)
    await raw.send_bytes(b"".join(status_frame(i) for i in (1, 2, 3)))  # one write, three frames
    assert sorted([(await raw.receive()).id or 0 for _ in range(3)]) == [1, 2, 3]
    for byte in status_frame(4):  # one byte at a time
        await raw.send_bytes(bytes([byte]))
        await asyncio.sleep(0.001)
    answer = await raw.receive()
    assert (answer.id, answer.ok) == (4, True)
    await raw.close()


class CountingStub(Stub):
    """status() takes a while and counts how many run at once."""

    def __init__(self) -> None:
        super().__init__()
        self.running = 0
        self.most = 0

    async def status(self) -> api.EnclaveStatus:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await asyncio.sleep(0.05)
        finally:
            self.running -= 1
        return STATUS


async def test_a_connection_has_at_most_max_inflight_requests_served_at_once(
    socket_dir: Path,
) -> None:
    stub = CountingStub()
    server = EnclaveServer(stub, socket_dir / "e.sock", max_inflight=2)  # type: ignore[arg-type]
    await server.start()
    raw = await RawConnection.open(socket_dir / "e.sock")
    await raw.send_bytes(b"".join(status_frame(i) for i in range(6)))
    answers = [await raw.receive() for _ in range(6)]
    assert sorted(a.id or 0 for a in answers) == list(range(6))
    assert all(a.ok for a in answers)
    assert stub.most == 2  # the other frames waited, unread, for a free slot
    await raw.close()
    await server.aclose()


async def test_a_client_that_reads_slowly_gets_every_answer_whole(socket_dir: Path) -> None:
    """Answers bigger than the socket's buffers, to a client that reads only later: the
    requests that wrote wait for the client (their slots too), and nothing is lost."""
    server = EnclaveServer(Stub(), socket_dir / "e.sock", max_inflight=4)  # type: ignore[arg-type]
    await server.start()
    raw = await RawConnection.open(socket_dir / "e.sock")
    details = {i: chr(ord("a") + i) * (256 * 1024) for i in range(12)}

    async def send_all() -> None:  # on its own: the server stops reading while slots are full
        for i, detail in details.items():
            event = api.HistoryEvent(kind="login", at=i, detail=detail)
            await raw.send(
                {
                    "id": i,
                    "method": "seal_history",
                    "args": {
                        "sealed": schema.encode_sealed_policyholder(holder(f"p-{i}")),
                        "event": schema.encode_history_event(event),
                    },
                }
            )

    sender = asyncio.create_task(send_all())
    await asyncio.sleep(0.3)  # not reading: the server's writes back up
    for _ in details:
        answer = await raw.receive()
        assert answer.ok and isinstance(answer.result, dict)
        assert answer.result["ciphertext"] == details[answer.id or 0].encode()
    await sender
    await raw.close()
    await server.aclose()


class DelayedStub(Stub):
    """status() sleeps for the next of the delays it was given."""

    def __init__(self, delays: list[float]) -> None:
        super().__init__()
        self.delays = delays

    async def status(self) -> api.EnclaveStatus:
        await asyncio.sleep(self.delays.pop(0))
        return STATUS


async def test_a_request_over_its_time_does_not_disturb_the_others_on_its_connection(
    socket_dir: Path,
) -> None:
    methods = METHODS | {"status": dataclasses.replace(METHODS["status"], timeout=0.2)}
    server = await serve_stub(DelayedStub([5.0, 0.0, 0.0]), socket_dir / "e.sock", methods)
    raw = await RawConnection.open(socket_dir / "e.sock")
    await raw.send_bytes(status_frame(1) + status_frame(2))
    first, second = await raw.receive(), await raw.receive()
    assert (first.id, first.ok) == (2, True)  # the quick one is not held up by the slow one
    assert (second.id, second.code) == (1, "timeout")
    assert "did not finish in time" in second.message
    assert (await raw.call(3, "status", {})).ok  # and the connection serves on
    await raw.close()
    await server.aclose()
