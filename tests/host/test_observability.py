"""Observability (issue #7 item 7): Prometheus metrics by route template, request ids, JSON
access logs, gematik's BDE performance log (gematik-sectoral-idp.md §10), and nothing
personal in any of them (CONVENTIONS.md rule 15)."""

from __future__ import annotations

import json
import logging
import os
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient
from test_oidc_flow import (  # the same fixtures: the real app and a fake relying party
    IDP,
    ROWS,
    RP,
    FakeRp,
    client,
    enrolled_wallet,
    par_form,
    pkce,
    rp,
    settings,
)

from healthid.cli import main
from healthid.host.observability import (
    BDE_CLIENT_ERROR,
    BDE_SERVER_ERROR,
    BdeFileHandler,
    BdeRecord,
    BdeStamp,
    JsonFormatter,
    TextFormatter,
    bde_client_id,
    bde_status,
    logging_config,
)
from healthid.runtime import build_app
from healthid.settings import Settings, load_settings
from rp_testlib import token_form

__all__ = ["client", "rp", "settings"]

CLOSED_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("HEALTHID_") or name == "PROMETHEUS_MULTIPROC_DIR":
            monkeypatch.delenv(name)


@pytest.fixture
def embedded(tmp_path: Path, clean_env: None) -> Iterator[TestClient]:
    app = build_app(load_settings(data_dir=tmp_path / "data", enclave_workers=1))
    with TestClient(app, base_url=IDP, raise_server_exceptions=False) as c:
        yield c


def sample(metrics: str, name: str, **labels: str) -> float | None:
    """The value of one sample of the Prometheus text format (None: absent)."""
    for line in metrics.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line[len(name) : line.rindex("}")]))
        if found == labels:
            return float(line.rsplit(" ", 1)[1])
    return None


def test_metrics_label_route_templates_never_raw_ids(embedded: TestClient) -> None:
    started = embedded.post("/wallet/v1/enrolments")
    assert started.status_code == 201
    enrolment_id = started.json()["enrolment_id"]
    refused = embedded.post(f"/wallet/v1/enrolments/{enrolment_id}/device", json={})
    assert refused.status_code >= 400

    text = embedded.get("/metrics").text
    template = "/wallet/v1/enrolments/{enrolment_id}/device"
    assert (
        sample(
            text,
            "healthid_http_requests_total",
            route=template,
            method="POST",
            status=str(refused.status_code),
        )
        == 1
    )
    assert (
        sample(
            text,
            "healthid_http_request_duration_seconds_count",
            route=template,
            method="POST",
        )
        == 1
    )
    assert enrolment_id not in text


def test_metrics_count_status_codes_and_unmatched_paths_as_one_label(
    embedded: TestClient,
) -> None:
    for _ in range(2):
        assert embedded.get("/healthz").status_code == 200
    assert embedded.get("/PAR_Auth").status_code == 405
    assert embedded.get("/no/such/path/A123456780").status_code == 404

    text = embedded.get("/metrics").text
    assert sample(
        text, "healthid_http_requests_total", route="/healthz", method="GET", status="200"
    ) == (2)
    assert (
        sample(text, "healthid_http_requests_total", route="/PAR_Auth", method="GET", status="405")
        == 1
    )
    assert (
        sample(
            text, "healthid_http_requests_total", route="<unmatched>", method="GET", status="404"
        )
        == 1
    )
    assert "A123456780" not in text and "/no/such" not in text
    for dependency in ("database", "ephemeral_store", "enclave"):
        assert sample(text, "healthid_dependency_up", dependency=dependency) == 1


def test_dependency_gauge_drops_to_zero_without_redis(tmp_path: Path, clean_env: None) -> None:
    settings = load_settings(data_dir=tmp_path, redis_url=CLOSED_REDIS)
    with TestClient(build_app(settings), base_url=IDP, raise_server_exceptions=False) as c:
        assert c.post("/wallet/v1/enrolments").status_code == 503
        text = c.get("/metrics").text
        assert c.get("/readyz").status_code == 503
    assert sample(text, "healthid_dependency_up", dependency="ephemeral_store") == 0
    assert sample(text, "healthid_dependency_up", dependency="database") == 1
    assert sample(text, "healthid_dependency_up", dependency="enclave") == 1
    assert (
        sample(text, "healthid_temporarily_unavailable_total", route="/wallet/v1/enrolments") == 1
    )


def test_request_id_round_trip(embedded: TestClient) -> None:
    assert embedded.get("/healthz", headers={"X-Request-ID": "lb-7f3a.01"}).headers[
        "x-request-id"
    ] == ("lb-7f3a.01")
    ours = embedded.get("/healthz").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{24}", ours)
    assert embedded.get("/healthz").headers["x-request-id"] != ours
    for unsafe in ("a b", "x" * 65, "<script>", "id\\n"):
        replaced = embedded.get("/healthz", headers={"X-Request-ID": unsafe}).headers
        assert re.fullmatch(r"[0-9a-f]{24}", replaced["x-request-id"])


def test_access_log_is_one_json_line_without_query_or_client(
    embedded: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="healthid.access")
    answer = embedded.get(
        "/auth",
        params={"client_id": RP, "request_uri": "urn:secret-request-uri"},
        headers={"X-Request-ID": "req-1"},
    )
    (record,) = [r for r in caplog.records if r.name == "healthid.access"]
    line = JsonFormatter().format(record)
    assert "\n" not in line
    logged = json.loads(line)
    assert logged["time"].endswith("Z") and logged["level"] == "INFO"
    assert logged["logger"] == "healthid.access" and logged["request_id"] == "req-1"
    assert logged["method"] == "GET" and logged["route"] == "/auth"
    assert logged["status"] == answer.status_code and logged["duration_ms"] >= 0
    assert set(logged) == {
        "time",
        "level",
        "logger",
        "message",
        "request_id",
        "method",
        "route",
        "status",
        "duration_ms",
    }
    assert "secret" not in line and "rp.example" not in line and "testclient" not in line
    assert "[req-1]" in TextFormatter().format(record)


def test_bde_status_and_client_id() -> None:
    assert [bde_status(s) for s in (200, 201, 302, 400, 401, 429, 500, 503)] == [
        200,
        201,
        302,
        BDE_CLIENT_ERROR,
        BDE_CLIENT_ERROR,
        BDE_CLIENT_ERROR,
        BDE_SERVER_ERROR,
        BDE_SERVER_ERROR,
    ]
    assert bde_client_id("IDP.UC_30", b"client_id=https%3A%2F%2Frp.example&x=1") == RP
    assert bde_client_id("IDP.UC_39", b"client_id=a&client_id=b") is None
    assert bde_client_id("IDP.UC_31", json.dumps({"client_id": RP}).encode()) == RP
    assert bde_client_id("IDP.UC_31", b"[not json") is None
    assert bde_client_id("IDP.UC_30", b"\xff\xfe") is None


def test_bde_record_line_and_five_minute_files(tmp_path: Path) -> None:
    record = BdeRecord(
        start_ms=1_700_000_123_456,
        duration_ms=12,
        operation_id="IDP.UC_39",
        status=200,
        cidi=zlib.crc32(RP.encode()),
    )
    log = logging.getLogger("healthid.bde.test")
    stamp, handler = BdeStamp(ik="109500969"), BdeFileHandler(tmp_path, ci_id="CI-0000001")
    log_record = log.makeRecord(log.name, logging.INFO, __file__, 0, record.line(), (), None)
    log_record.bde = record
    assert stamp.filter(log_record)
    handler.handle(log_record)
    handler.close()
    expected = (
        f'1700000123456;12;IDP.UC_39;200;{{"cidi":{zlib.crc32(RP.encode())},"ik":"109500969"}}'
    )
    assert log_record.getMessage() == expected
    (written,) = tmp_path.iterdir()
    assert written.name == "CI-0000001_1700000100000_1700000400000_perf.log"
    assert written.read_text() == expected + "\n"
    assert json.loads(JsonFormatter().format(log_record))["bde"]["ik"] == "109500969"


def test_logging_config_renders_json_and_silences_uvicorn_access() -> None:
    config = logging_config(True, bde_ik="109500969", bde_dir=Path("/tmp/bde"))
    assert config["formatters"]["default"]["()"].endswith("JsonFormatter")
    assert config["loggers"]["uvicorn.access"]["propagate"] is False
    assert config["loggers"]["healthid.bde"]["handlers"] == ["bde_file"]
    assert config["loggers"]["healthid.bde"]["level"] == "INFO"
    assert logging_config(True)["loggers"]["healthid.bde"]["level"] == "WARNING"  # opt-in
    assert config["filters"]["bde"]["ik"] == "109500969"
    assert logging_config(False)["formatters"]["default"]["()"].endswith("TextFormatter")


def test_serve_has_a_log_format_option() -> None:
    shown = CliRunner().invoke(main, ["serve", "--help"])
    assert shown.exit_code == 0 and "--log-format [json|text]" in shown.output


def _personal_values(row: dict[str, str]) -> list[str]:
    return [
        row[k]
        for k in ("kvnr", "given_name", "family_name", "birth_date", "street", "postal_code")
        if row.get(k)
    ]


def test_full_flow_leaves_nothing_personal_in_metrics_or_logs_and_writes_bde_records(
    client: TestClient,
    settings: Settings,
    rp: FakeRp,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)  # production's level, every logger
    person = ROWS[3]
    wallet = enrolled_wallet(client, settings, tmp_path, person)
    verifier, challenge = pkce()
    pushed = client.post(f"{IDP}/PAR_Auth", data=par_form(challenge), headers=rp.cert_header())
    assert pushed.status_code == 201, pushed.text
    request_uri = pushed.json()["request_uri"]
    assert client.get(
        f"{IDP}/auth", params={"client_id": RP, "request_uri": request_uri, "app_version": "1"}
    ).is_success
    session = wallet.login().session
    consent = client.post(
        f"{IDP}/wallet/v1/authorizations",
        json={"client_id": RP, "request_uri": request_uri, "selected_claims": []},
        headers={"Authorization": f"Bearer {session}"},
    )
    assert consent.status_code == 200, consent.text
    code = parse_qs(urlsplit(consent.json()["redirect"]).query)["code"][0]
    issued = client.post(
        f"{IDP}/token",
        data=token_form(code, verifier),
        headers=rp.cert_header(),
    )
    assert issued.status_code == 200, issued.text
    metrics = client.get(f"{IDP}/metrics").text

    # the test's own HTTP client (httpx) logs its URLs; the server's logs are the rest
    server = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    formatter = JsonFormatter()
    logs = "\n".join(formatter.format(r) for r in server)
    assert sum(r.name == "healthid.access" for r in server) >= 8
    secrets_of_the_flow = [session, code, request_uri, verifier, issued.json()["id_token"][:40]]
    for value in _personal_values(person) + secrets_of_the_flow:
        pattern = re.compile(rf"(?<![0-9A-Za-z]){re.escape(value)}(?![0-9A-Za-z])")
        assert not pattern.search(metrics), value
        assert not pattern.search(logs), value

    bde = [r.bde for r in server if r.name == "healthid.bde"]  # type: ignore[attr-defined]
    assert [(b.operation_id, b.status) for b in bde] == [
        ("IDP.UC_30", 201),
        ("IDP.UC_31", 200),
        ("IDP.UC_39", 200),
    ]
    assert {b.cidi for b in bde} == {zlib.crc32(RP.encode())}
    assert all(b.duration_ms >= 0 and b.start_ms > 1_600_000_000_000 for b in bde)


def test_signing_failures_are_counted_and_answered_as_json(
    embedded: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The alert of an HSM outage: healthid_signing_failures_total (both series exist from
    the start). An unavailable key store is 503 temporarily_unavailable, any other key store
    error the OAuth server_error, never a bare 500. (With SoftHSM2 and the token endpoint:
    tests/host/test_dependencies_down.py.)"""
    from healthid.keys.base import KeyNotFound, KeyStoreUnavailable
    from healthid.keys.file import FileKeyStore

    text = embedded.get("/metrics").text
    for reason in ("unavailable", "error"):
        assert sample(text, "healthid_signing_failures_total", reason=reason) == 0
    assert sample(text, "healthid_dependency_up", dependency="hsm") is None  # key files

    def unavailable(self: object, kid: str, data: bytes) -> bytes:
        raise KeyStoreUnavailable("PKCS#11 token 'x' became unavailable (TokenNotPresent)")

    monkeypatch.setattr(FileKeyStore, "sign", unavailable)
    answer = embedded.get("/.well-known/openid-federation")
    assert answer.status_code == 503 and answer.json()["error"] == "temporarily_unavailable"
    assert int(answer.headers["retry-after"]) > 0

    def missing(self: object, kid: str, data: bytes) -> bytes:
        raise KeyNotFound(f"no key {kid}")

    monkeypatch.setattr(FileKeyStore, "sign", missing)
    answer = embedded.get("/jws.json")
    assert answer.status_code == 500 and answer.json()["error"] == "server_error"

    text = embedded.get("/metrics").text
    assert sample(text, "healthid_signing_failures_total", reason="unavailable") == 1
    assert sample(text, "healthid_signing_failures_total", reason="error") == 1
    assert (
        sample(
            text,
            "healthid_temporarily_unavailable_total",
            route="/.well-known/openid-federation",
        )
        == 1
    )


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"path": Path("/x"), "n": 1}, {"path": "/x", "n": 1}),  # what JSON lacks: as str()
        ({"big": 2**70}, {"big": 2**70}),  # beyond orjson's 64 bits: written as json writes it
        ({"name": "Jürgen"}, {"name": "Jürgen"}),  # UTF-8, not \u escapes
    ],
)
def test_a_json_line_takes_any_field_value(
    fields: dict[str, object], expected: dict[str, object]
) -> None:
    record = logging.LogRecord("healthid.x", logging.INFO, __file__, 1, "m", (), None)
    record.fields = fields
    line = JsonFormatter().format(record)
    assert "\n" not in line
    logged = json.loads(line)
    assert {k: logged[k] for k in expected} == expected
    if "name" in fields:
        assert "Jürgen" in line
