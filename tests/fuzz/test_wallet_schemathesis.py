"""Issue #7: schemathesis against the wallet API's OpenAPI document (``/wallet/openapi.json``).

The live ASGI app is the embedded default (SQLite, in-memory ephemeral store, in-process
enclave, development mode) with a small synthetic registry; schemathesis loads the document
from the app itself. Two phases, both derandomized (the same inputs on every run):

- every operation, with schema-valid (positive) and schema-violating (negative) inputs;
- stateful sequences along the document's links: an enrolment's id into its eGK, eID and
  device steps, a login challenge's id into the assertion.

Every response passes schemathesis' checks: no 5xx, a documented status, content type and
headers, a body that conforms to the schema, negative data refused, positive data accepted
(except where a protocol refuses a well-formed request, see ``CONFIG``). And nothing was
stored by what the fuzzer could do:

- the SQL row counts are unchanged (nobody can prove an identity or sign with a device key
  here), except ``audit_log``, which may only grow by events whose outcome is not success;
- after a refusal (4xx) the ephemeral store is unchanged except for rate-limit counters
  (``rl:``) and the single-use artefacts the refused attempt consumed (``enrol:``,
  ``authchal:``, ``par:``); after a success, only an enrolment or a login challenge (and
  its counter) appeared.

Each input is counted (``fuzz_testlib.tried``, printed at the end of the session) and each
phase asserts a minimum, so that it cannot pass without trying anything.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fuzz_testlib import fuzz_settings, tried
from hypothesis import given, settings
from hypothesis.stateful import run_state_machine_as_test
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from schemathesis.python import asgi as schemathesis_asgi

from healthid.host.wallet_api import OPENAPI_PATH, openapi_document
from healthid.settings import Settings, load_settings
from healthid.store.ephemeral.memory import MemoryEphemeralStore

PEER = "testclient"  # the client address schemathesis' ASGI client presents
MAX_EXAMPLES = 60  # per operation and generation mode
MIN_INPUTS = 1000  # the operations phase tries at least this many requests
STATEFUL_SCENARIOS = 80
STATEFUL_STEPS = 10
MIN_STATEFUL_CALLS = 400
# Well-formed requests a protocol refuses with 400 (positive_data_acceptance would flag them):
# the consent for an unknown request_uri (RFC 9126 §2.2: invalid_request_uri, rendered), and
# the eID result of an enrolment whose eID session was never started.
ACCEPTED = ["2xx", "401", "403", "404", "409", "429"]
CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {
            "positive_data_acceptance": {"expected-statuses": ACCEPTED},
            # "created, then not found": an enrolment is a single-use artefact that the first
            # device binding consumes, whatever its answer (CONVENTIONS.md rule 14)
            "ensure_resource_availability": {"enabled": False},
        },
        "operations": [
            {
                "include-operation-id": operation_id,
                "checks": {"positive_data_acceptance": {"expected-statuses": [*ACCEPTED, "400"]}},
            }
            for operation_id in ("authorizeWithDevice", "eidResult")
        ],
    }
)
# single-use artefacts a refused attempt may consume (wallet_service, oidc_service)
CONSUMED_BY_REFUSALS = ("enrol:", "authchal:", "par:")
RATE_COUNTERS = "rl:"
CREATED_BY_SUCCESSES = ("enrol:", "authchal:", RATE_COUNTERS)


@dataclass
class Stack:
    schema: Any
    database: Path
    ephemeral: MemoryEphemeralStore
    inputs: int = 0
    statuses: dict[tuple[str, int], int] = field(default_factory=dict)

    def next_address(self) -> str:
        """A new client address for every request: the per-address rate limits (tested in
        tests/host/test_wallet_api.py) would otherwise answer 429 to most of the run."""
        self.inputs += 1
        n = self.inputs
        return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    import healthid.runtime
    from healthid.runtime import build_app
    from stack_testlib import import_synthetic_registry

    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("HEALTHID_")}
    opened: list[MemoryEphemeralStore] = []
    open_ephemeral_store = healthid.runtime.open_ephemeral_store

    def capture(*args: Any, **kwargs: Any) -> Any:
        store = open_ephemeral_store(*args, **kwargs)
        if isinstance(store, MemoryEphemeralStore):
            opened.append(store)
        return store

    try:
        data = tmp_path_factory.mktemp("fuzz-schemathesis") / "data"
        settings_: Settings = load_settings(
            data_dir=data, enclave_workers=1, trusted_proxies=[PEER]
        )
        import_synthetic_registry(settings_, 5, seed=11)
        app = build_app(settings_)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(healthid.runtime, "open_ephemeral_store", capture)
            schema = schemathesis.openapi.from_asgi(OPENAPI_PATH, app, config=CONFIG)
        assert len(opened) == 1, "the app's ephemeral store was not captured"
        try:
            yield Stack(schema, data / "healthid.sqlite3", opened[0])
        finally:
            schemathesis_asgi.shutdown_lifespans()  # the app's lifespan: close its stores
    finally:
        os.environ.update(saved)


# -- what was stored ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Snapshot:
    rows: dict[str, int]
    successes: int  # audit events with outcome success
    ephemeral: dict[str, bytes]


def snapshot(stack: Stack) -> Snapshot:
    with contextlib.closing(sqlite3.connect(stack.database)) as db:
        tables = [
            name
            for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if not name.startswith("sqlite_")
        ]
        rows = {t: db.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}  # noqa: S608
        successes = db.execute(
            "SELECT count(*) FROM audit_log WHERE outcome = 'success'"
        ).fetchone()[0]
    store = stack.ephemeral
    with store._lock:  # the live entries (the store has no listing of its own)
        now = time.monotonic()
        live = {k: e.value for k, e in store._entries.items() if e.expires_at > now}
    return Snapshot(rows, successes, live)


def check_nothing_stored(before: Snapshot, after: Snapshot, status: int, label: str) -> None:
    where = f"{label} -> {status}"
    durable = {t: n for t, n in after.rows.items() if t != "audit_log"}
    assert durable == {t: n for t, n in before.rows.items() if t != "audit_log"}, where
    assert after.rows["audit_log"] >= before.rows["audit_log"], where
    assert after.successes == before.successes, f"{where}: an audited success"
    added = after.ephemeral.keys() - before.ephemeral.keys()
    removed = before.ephemeral.keys() - after.ephemeral.keys()
    changed = {
        k for k in after.ephemeral.keys() & before.ephemeral.keys()
        if after.ephemeral[k] != before.ephemeral[k]
    }  # fmt: skip
    removed_unexpectedly = {
        k for k in removed if not k.startswith((*CONSUMED_BY_REFUSALS, RATE_COUNTERS))
    }
    assert not removed_unexpectedly, f"{where}: removed {sorted(removed_unexpectedly)}"
    assert all(k.startswith(RATE_COUNTERS) for k in changed), f"{where}: changed {sorted(changed)}"
    allowed = (RATE_COUNTERS,) if status >= 400 else CREATED_BY_SUCCESSES
    assert all(k.startswith(allowed) for k in added), f"{where}: stored {sorted(added)}"


# -- phase 1: every operation, positive and negative inputs --------------------------------
def _nothing_to_negate() -> frozenset[str]:
    """Operations without parameters, body or credentials: no input can violate them."""
    document = json.loads(openapi_document())
    plain = set()
    for item in document["paths"].values():
        for method, operation in item.items():
            if method == "parameters":
                continue
            if not (
                item.get("parameters")
                or operation.get("parameters")
                or operation.get("requestBody")
                or operation.get("security")
            ):
                plain.add(operation["operationId"])
    return frozenset(plain)


def fuzz(stack: Stack, operation: Any, mode: GenerationMode) -> None:
    """MAX_EXAMPLES requests to ``operation``, each checked by schemathesis and by us."""

    @fuzz_settings(MAX_EXAMPLES)
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        tried(f"schemathesis {case.operation.label} ({mode.value})")
        before = snapshot(stack)
        response = case.call_and_validate(headers={"X-Forwarded-For": stack.next_address()})
        key = (case.operation.label, response.status_code)
        stack.statuses[key] = stack.statuses.get(key, 0) + 1
        check_nothing_stored(before, snapshot(stack), response.status_code, case.operation.label)

    run()


def test_every_operation_conforms_and_refusals_store_nothing(stack: Stack) -> None:
    started, count = time.monotonic(), stack.inputs
    plain = _nothing_to_negate()
    operations = [result.ok() for result in stack.schema.get_all_operations()]
    # every documented operation but the document itself (which schemathesis leaves out)
    document = json.loads(openapi_document())
    assert {op.label for op in operations} == {
        f"{method.upper()} {path}"
        for path, item in document["paths"].items()
        if path != OPENAPI_PATH
        for method in item
        if method != "parameters"
    }
    for operation in operations:
        fuzz(stack, operation, GenerationMode.POSITIVE)
        if operation.definition.raw.get("operationId") not in plain:
            fuzz(stack, operation, GenerationMode.NEGATIVE)
    inputs = stack.inputs - count
    print(f"\nschemathesis: {inputs} inputs in {time.monotonic() - started:.1f} s")
    for (label, status), n in sorted(stack.statuses.items()):
        print(f"{n:>6}  {status}  {label}")
    assert inputs >= MIN_INPUTS


# -- phase 2: stateful, along the document's links --------------------------------------------
def test_linked_sequences_conform_and_refusals_store_nothing(stack: Stack) -> None:
    started, count = time.monotonic(), stack.inputs
    statuses: dict[tuple[str, int], int] = {}

    class Sequences(stack.schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": {"X-Forwarded-For": stack.next_address()}}

        def before_call(self, case: Any) -> None:
            tried(f"schemathesis stateful {case.operation.label}")
            self._before = snapshot(stack)

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            key = (case.operation.label, response.status_code)
            statuses[key] = statuses.get(key, 0) + 1
            super().validate_response(response, case, **kwargs)
            check_nothing_stored(
                self._before, snapshot(stack), response.status_code, case.operation.label
            )

    run_state_machine_as_test(
        Sequences,
        settings=settings(fuzz_settings(STATEFUL_SCENARIOS), stateful_step_count=STATEFUL_STEPS),
    )
    calls = stack.inputs - count
    print(f"\nschemathesis stateful: {calls} calls in {time.monotonic() - started:.1f} s")
    for (label, status), n in sorted(statuses.items()):
        print(f"{n:>6}  {status}  {label}")
    assert calls >= MIN_STATEFUL_CALLS
    # the links were followed: an issued enrolment reached a later enrolment step
    linked = {label for label, status in statuses if status != 404 and "{enrolment_id}" in label}
    assert linked, statuses
