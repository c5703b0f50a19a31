"""Failover of the PostgreSQL pair with zero data loss (issue #7 item 1).

healthid runs on a multi-host URL (``target_session_attrs=read-write``) against a primary and
a synchronous standby (tests/failover/pg_pair.py, deploy/postgres/). Phones enrol
continuously through the real wallet API; the primary is stopped hard
(``pg_ctl stop -m immediate``), the standby promoted, and enrolment goes on on the same app,
engine and pool (no restart). Then:

* RPO 0: every enrolment the API acknowledged (201 with a device id) is in the new primary's
  devices table;
* RTO: the time from the stop to the first acknowledged enrolment whose device binding was
  sent after the stop, printed with the counts.

The negative control runs the same failover with asynchronous replication
(``synchronous_commit = local``) while the WAN link stalls (the primary's walsender is
SIGSTOPped): acknowledged enrolments must then be missing, so the RPO check can see loss.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from pg_pair import DATABASE, PgPair, pg_bin_dir, pg_pair
from starlette.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send

from healthid.demo.egk_test_ca import TestCard, TestEgkCa
from healthid.demo.synthetic import synthetic_rows
from healthid.runtime import EGK_TEST_CA_DIR, build_app
from healthid.settings import Settings, load_settings
from healthid.wallet.client import WalletClient, WalletClientError
from stack_testlib import import_synthetic_registry

pytestmark = pytest.mark.slow

IDP = "http://testserver"
PROXY = ("127.0.0.1", 40000)  # the TLS terminator (a trusted proxy) the phones come through
REGISTRY_SIZE = 60  # policyholders; each may bind MAX_DEVICES_PER_PERSON (5) devices
REGISTRY_SEED = 7
PHONES = 4  # concurrent enrolment loops
ACKED_BEFORE_STOP = 40  # acknowledged enrolments before the primary is stopped
ACKED_AFTER_STOP = 12  # acknowledged enrolments (bound after the stop) before we finish
ACKED_WHILE_STALLED = 8  # negative control: acknowledged while the walsender is stopped
PHASE_TIMEOUT = 60.0  # s: bound of every phase (enrolments must resume within it)
RETRY_PAUSE = 0.02  # s between a failed enrolment and the next attempt
JOIN_TIMEOUT = 30.0  # s for the phones to finish their current enrolment


@dataclass(frozen=True, kw_only=True)
class Ack:
    device_id: str
    bind_sent: float  # monotonic: the device-binding request (the SQL write) was sent
    acked: float  # monotonic: the 201 arrived


@dataclass(frozen=True, kw_only=True)
class Failure:
    started: float
    failed: float
    what: str


@dataclass(frozen=True, kw_only=True)
class ServerError:
    at: float
    what: str  # exception class, and the driver's under SQLAlchemy's wrapper


def recording(app: ASGIApp, errors: list[ServerError]) -> ASGIApp:
    """``app``, noting every exception that escapes it (a 500) with its time and class."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await app(scope, receive, send)
        except Exception as exc:
            orig = getattr(exc, "orig", None)
            what = type(exc).__name__ + (f"({type(orig).__name__})" if orig is not None else "")
            errors.append(ServerError(at=time.monotonic(), what=what))
            raise

    return wrapped


class _Phones(threading.local):
    """Per enrolment thread: the client address the trusted proxy reports for this phone (the
    rate limits count enrolments per address), and when the device binding — the request
    that writes the device row — left."""

    address = ""
    bind_sent = 0.0

    def on_request(self, request: httpx.Request) -> None:
        if self.address:
            request.headers["X-Forwarded-For"] = self.address
        if request.url.path.endswith("/device"):
            self.bind_sent = time.monotonic()


@dataclass(kw_only=True)
class Enrolments:
    """PHONES threads enrolling policyholders through the wallet API until stopped."""

    http: TestClient
    cards: list[TestCard]
    wallets: Path
    acks: list[Ack] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _serial: Iterator[int] = field(default_factory=itertools.count)
    _threads: list[threading.Thread] = field(default_factory=list)
    _phone: _Phones = field(default_factory=_Phones)

    def __post_init__(self) -> None:
        self.http.event_hooks = {"request": [self._phone.on_request], "response": []}

    def _one(self) -> None:
        with self._lock:
            n = next(self._serial)
        self._phone.address = f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}"
        wallet = WalletClient(IDP, self.wallets / f"w{n}", http=self.http, development=True)
        started = time.monotonic()
        try:
            bound = wallet.enroll_with_egk(self.cards[n % len(self.cards)])
        except WalletClientError as exc:
            with self._lock:
                self.failures.append(
                    Failure(started=started, failed=time.monotonic(), what=str(exc.status))
                )
            time.sleep(RETRY_PAUSE)
            return
        ack = Ack(
            device_id=bound["device_id"], bind_sent=self._phone.bind_sent, acked=time.monotonic()
        )
        with self._lock:
            self.acks.append(ack)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._one()

    def start(self) -> None:
        for i in range(PHONES):
            thread = threading.Thread(target=self._loop, name=f"phone-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        deadline = time.monotonic() + JOIN_TIMEOUT
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        assert not alive, f"enrolment threads still running: {alive}"

    def snapshot(self) -> tuple[list[Ack], list[Failure]]:
        with self._lock:
            return list(self.acks), list(self.failures)

    def wait_for(self, what: str, done: Callable[[list[Ack]], bool]) -> None:
        deadline = time.monotonic() + PHASE_TIMEOUT
        while time.monotonic() < deadline:
            acks, _ = self.snapshot()
            if done(acks):
                return
            time.sleep(0.01)
        acks, failures = self.snapshot()
        kinds = sorted({f.what for f in failures})
        pytest.fail(
            f"no {what} within {PHASE_TIMEOUT} s: {len(acks)} acknowledged, "
            f"{len(failures)} failed ({kinds})"
        )


@dataclass(frozen=True, kw_only=True)
class Outcome:
    acks: list[Ack]
    failures: list[Failure]
    errors: list[ServerError]
    missing: set[str]
    stopped: float
    promoted: float
    stalled: float | None

    @property
    def rto(self) -> float:
        return min(a.acked for a in self.acks if a.bind_sent > self.stopped) - self.stopped

    def report(self, title: str) -> str:
        during = [f for f in self.failures if f.failed > self.stopped]
        after_promotion = [f for f in during if f.started > self.promoted]
        lines = [
            f"[{title}]",
            f"  acknowledged enrolments: {len(self.acks)} "
            f"({sum(a.acked <= self.stopped for a in self.acks)} before the stop, "
            f"{sum(a.bind_sent > self.stopped for a in self.acks)} bound after it)",
            f"  missing on the new primary: {len(self.missing)} "
            f"(RPO {'0' if not self.missing else '> 0'})",
            f"  pg_ctl stop -m immediate + pg_ctl promote took: "
            f"{self.promoted - self.stopped:.3f} s",
            f"  RTO (stop -> first acknowledged enrolment bound after it): {self.rto:.3f} s",
            f"  failed enrolments around the failover: {len(during)} "
            f"(started after the promotion: {len(after_promotion)}; "
            f"statuses {sorted({f.what for f in during})})",
            f"  server errors before the promotion: {_count(self.errors, None, self.promoted)}",
            f"  server errors after the promotion: {_count(self.errors, self.promoted, None)}",
        ]
        if self.stalled is not None:
            stalled = [a for a in self.acks if self.stalled < a.acked <= self.stopped]
            lost = sum(a.device_id in self.missing for a in stalled)
            lines.append(
                f"  acknowledged while the WAN link stalled: {len(stalled)}, of them lost: {lost}"
            )
        return "\n".join(lines)


def _count(errors: list[ServerError], after: float | None, before: float | None) -> str:
    counts = Counter(
        e.what
        for e in errors
        if (after is None or e.at > after) and (before is None or e.at <= before)
    )
    return ", ".join(f"{n} x {what}" for what, n in counts.most_common()) or "none"


def _cards(settings: Settings) -> list[TestCard]:
    ca = TestEgkCa.create(settings.data_dir / EGK_TEST_CA_DIR)
    return [
        ca.issue_card(r["kvnr"], r["ik"], r["given_name"], r["family_name"])
        for r in synthetic_rows(REGISTRY_SIZE, seed=REGISTRY_SEED)
    ]


def _present(pair: PgPair, device_ids: list[str]) -> set[str]:
    rows = pair.query(
        pair.standby,
        "SELECT device_id FROM devices WHERE device_id = ANY($1::text[])",
        device_ids,
        database=DATABASE,
    )
    return {r["device_id"] for r in rows}


def run_failover(pair: PgPair, settings: Settings, tmp_path: Path, *, stall: bool) -> Outcome:
    """Enrol continuously; stop the primary hard, promote the standby; enrol until
    enrolments succeed again; then look every acknowledged device up on the new primary.
    ``stall``: first stop the walsender and wait for ACKED_WHILE_STALLED more enrolments."""
    import_synthetic_registry(settings, REGISTRY_SIZE, seed=REGISTRY_SEED)
    cards = _cards(settings)
    stalled: float | None = None
    errors: list[ServerError] = []
    app = recording(build_app(settings), errors)
    with TestClient(app, base_url=IDP, client=PROXY, raise_server_exceptions=False) as http:
        phones = Enrolments(http=http, cards=cards, wallets=tmp_path / "wallets")
        phones.start()
        try:
            phones.wait_for("enrolments", lambda a: len(a) >= ACKED_BEFORE_STOP)
            if stall:
                pair.pause(pair.walsender_pid())
                stalled = time.monotonic()
                phones.wait_for(
                    "enrolments while stalled",
                    lambda a: sum(x.acked > stalled for x in a) >= ACKED_WHILE_STALLED,
                )
            stopped = time.monotonic()
            pair.stop_immediate(pair.primary)
            pair.promote(pair.standby)
            promoted = time.monotonic()
            phones.wait_for(
                "enrolments after the failover",
                lambda a: sum(x.bind_sent > stopped for x in a) >= ACKED_AFTER_STOP,
            )
        finally:
            phones.stop()
        acks, failures = phones.snapshot()
    acked = [a.device_id for a in acks]
    assert len(set(acked)) == len(acked)
    missing = set(acked) - _present(pair, acked)
    return Outcome(
        acks=acks,
        failures=failures,
        errors=errors,
        missing=missing,
        stopped=stopped,
        promoted=promoted,
        stalled=stalled,
    )


@pytest.fixture
def settings_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str, redis_prefix: str
) -> Callable[[PgPair], Settings]:
    """healthid's settings on a pair's multi-host URL, Redis under a fresh prefix, and no
    HEALTHID_* from the outside."""
    for name in list(os.environ):
        if name.startswith("HEALTHID_"):
            monkeypatch.delenv(name)

    def settings(pair: PgPair) -> Settings:
        return load_settings(
            data_dir=tmp_path / "data",
            enclave_workers=1,
            database_url=pair.url(),
            redis_url=redis_url,
            redis_prefix=redis_prefix,
        )

    return settings


@pytest.fixture
def pg_binaries() -> None:
    if pg_bin_dir() is None:
        if os.environ.get("HEALTHID_REQUIRE_SERVICES") == "1":
            pytest.fail("the PostgreSQL server binaries (initdb, pg_ctl) are required")
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) unavailable")


@pytest.mark.usefixtures("pg_binaries")
def test_failover_loses_no_acknowledged_enrolment(
    settings_on: Callable[[PgPair], Settings], tmp_path: Path
) -> None:
    with pg_pair() as pair:
        outcome = run_failover(pair, settings_on(pair), tmp_path, stall=False)
    print("\n" + outcome.report("synchronous replication: failover"))
    assert not outcome.missing, f"acknowledged enrolments lost: {sorted(outcome.missing)}"
    assert outcome.rto < PHASE_TIMEOUT


@pytest.mark.usefixtures("pg_binaries")
def test_rpo_check_detects_loss_with_asynchronous_replication(
    settings_on: Callable[[PgPair], Settings], tmp_path: Path
) -> None:
    """Negative control: without the synchronous wait, what the standby had not received
    when the primary died is gone although it was acknowledged — and the check says so."""
    with pg_pair(primary_settings={"synchronous_commit": "local"}) as pair:
        outcome = run_failover(pair, settings_on(pair), tmp_path, stall=True)
    print("\n" + outcome.report("negative control: asynchronous replication, WAN stalled"))
    assert outcome.missing, "asynchronous replication lost nothing: the RPO check is blind"
    assert outcome.stalled is not None
    assert all(
        a.acked > outcome.stalled - 1.0 for a in outcome.acks if a.device_id in outcome.missing
    )
