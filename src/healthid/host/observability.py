"""Observability of the host (issue #7 item 7): request ids, Prometheus metrics, structured
logs and gematik's BDE performance log.

- :class:`ObservabilityMiddleware`, a pure ASGI middleware (a few microseconds per request):
  a request id (``X-Request-ID``), request counts by route *template* (never the raw path:
  ids in paths are not metric labels), method and status, a latency histogram, the count of
  ``temporarily_unavailable`` answers, one access-log line per request (``healthid.access``)
  and one BDE record per measured operation (``healthid.bde``).
- :func:`render_metrics`: the Prometheus text format, with scrape-time dependency health
  (``healthid_dependency_up``, the HSM among them when keys live in one) and the count of
  signatures the key store could not make (``healthid_signing_failures_total``): the two
  alerts of an HSM outage.
  With several workers, set ``PROMETHEUS_MULTIPROC_DIR`` (an empty directory, the same for
  every worker) and any worker's ``/metrics`` reports the sum of all workers.
- :func:`logging_config` / :func:`configure_logging`: every record as one JSON object (or a
  text line in development), with the request id while in a request.

Nothing personal reaches a label or a log line here (CONVENTIONS.md rule 15): no query
strings, headers, bodies or client addresses; the BDE record carries only CRC32 of the
relying party's ``client_id``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import logging.config
import os
import random
import re
import time
import zlib
from collections.abc import Awaitable, Callable, Collection, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote_plus

import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)

# -- request ids --------------------------------------------------------------------------
REQUEST_ID_HEADER: Final = b"x-request-id"
MAX_REQUEST_ID_CHARS: Final = 64  # a longer incoming id is replaced by our own
REQUEST_ID_BYTES: Final = 12  # random ids: 24 hex characters
_SAFE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._-]{1,%d}" % MAX_REQUEST_ID_CHARS)
request_id: ContextVar[str | None] = ContextVar("healthid_request_id", default=None)


def _request_id(headers: list[tuple[bytes, bytes]]) -> str:
    """The incoming ``X-Request-ID`` when it is a short safe token (the TLS terminator's id
    joins its log to ours), else a random one."""
    for name, value in headers:
        if name == REQUEST_ID_HEADER:
            if _SAFE_REQUEST_ID.fullmatch(value):
                return value.decode("ascii")
            break
    # Request ids correlate log lines and protect nothing: the random module's generator
    # (seeded from the OS, reseeded in a forked child) instead of a getrandom call per request
    # like secrets. Still random, so they do not count the requests served.
    return f"{random.getrandbits(REQUEST_ID_BYTES * 8):0{REQUEST_ID_BYTES * 2}x}"


# -- metrics --------------------------------------------------------------------------------
LATENCY_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
UNMATCHED: Final = "<unmatched>"  # no route: the raw path is never a label
METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
OTHER_METHOD: Final = "OTHER"
# every 503 of this host is the OAuth ``temporarily_unavailable`` error (fail closed, issue
# #7 item 2) except the readiness probe's "not ready"
PROBE_ROUTES: Final = frozenset({"/readyz", "/metrics"})
DEPENDENCY_CHECK_TIMEOUT: Final = 2.0  # seconds per dependency, on /readyz and each scrape
SIGNING_UNAVAILABLE: Final = "unavailable"  # healthid_signing_failures{reason=...}
SIGNING_ERROR: Final = "error"
SIGNING_FAILURE_REASONS: Final = (SIGNING_UNAVAILABLE, SIGNING_ERROR)
MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"


class HostMetrics:
    """The request metrics of one app (its own registry: several apps may share a process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "healthid_http_requests",
            "HTTP requests by route template, method and status code",
            ("route", "method", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "healthid_http_request_duration_seconds",
            "Time from the request to the end of the response, by route template and method",
            ("route", "method"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.unavailable = Counter(
            "healthid_temporarily_unavailable",
            "Answers 503 temporarily_unavailable (a dependency was down or did not answer), by "
            "route template; rate-limit refusals are status 429 of healthid_http_requests",
            ("route",),
            registry=self.registry,
        )
        self.signing_failures = Counter(
            "healthid_signing_failures",
            "Signatures the key store (the HSM in production) could not make for a request, by "
            "reason: unavailable (token, slot or session gone: answered 503, nothing issued) "
            "or error; alert on any increase",
            ("reason",),
            registry=self.registry,
        )
        for reason in SIGNING_FAILURE_REASONS:  # both series exist from the start, at 0
            self.signing_failures.labels(reason)
        # label lookups cost more than the increments: each child is looked up once
        self._counts: dict[tuple[str, str, int], Any] = {}
        self._latencies: dict[tuple[str, str], Any] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        counter = self._counts.get((route, method, status))
        if counter is None:
            counter = self._counts[(route, method, status)] = self.requests.labels(
                route, method, str(status)
            )
        counter.inc()
        histogram = self._latencies.get((route, method))
        if histogram is None:
            histogram = self._latencies[(route, method)] = self.latency.labels(route, method)
        histogram.observe(seconds)
        if status == 503 and route not in PROBE_ROUTES:
            self.unavailable.labels(route).inc()


class _DependencyHealth(Collector):
    def __init__(self, health: Mapping[str, bool]) -> None:
        self._health = health

    def collect(self) -> list[Metric]:
        gauge = GaugeMetricFamily(
            "healthid_dependency_up",
            "1 if the dependency answered its check at this scrape, else 0",
            labels=("dependency",),
        )
        for name, up in sorted(self._health.items()):
            gauge.add_metric((name,), 1.0 if up else 0.0)
        return [gauge]


async def probe(
    checks: Mapping[str, Callable[[], Awaitable[object]]],
    timeout: float = DEPENDENCY_CHECK_TIMEOUT,
) -> dict[str, bool]:
    """Run every check at once; a check is up when it returns within ``timeout``."""

    async def one(check: Callable[[], Awaitable[object]]) -> bool:
        try:
            await asyncio.wait_for(check(), timeout)
        except Exception:  # any error or the timeout means: down
            return False
        return True

    results = await asyncio.gather(*(one(c) for c in checks.values()))
    return dict(zip(checks, results, strict=True))


def render_metrics(metrics: HostMetrics, health: Mapping[str, bool]) -> bytes:
    """The Prometheus text format: the request metrics (of every worker when
    ``PROMETHEUS_MULTIPROC_DIR`` is set, else of this process) and the dependency health."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        requests = generate_latest(registry)
    else:
        requests = generate_latest(metrics.registry)
    scrape = CollectorRegistry(auto_describe=False)
    scrape.register(_DependencyHealth(health))
    return requests + generate_latest(scrape)


def clear_multiprocess_dir() -> None:
    """Remove the previous run's metric files (prometheus-client's multiprocess mode wants an
    empty directory at start); nothing when ``PROMETHEUS_MULTIPROC_DIR`` is unset."""
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        return
    Path(directory).mkdir(parents=True, exist_ok=True)
    for stale in Path(directory).glob("*.db"):
        stale.unlink(missing_ok=True)


# -- BDE (gematik Betriebsdatenerfassung) -----------------------------------------------------
# gematik-sectoral-idp.md §10, after gsi-server's BdeLogger: one record per PAR, authorization
# (the step that authenticates the user and issues the code) and token request.
BDE_OPERATIONS: Final[Mapping[str, str]] = {
    "/PAR_Auth": "IDP.UC_30",
    "/wallet/v1/authorizations": "IDP.UC_31",  # gsi: /auth with user_id; here: the consent
    "/token": "IDP.UC_39",
}
BDE_JSON_BODY: Final = frozenset({"IDP.UC_31"})  # the others are form-encoded
BDE_SERVER_ERROR: Final = 79000  # gsi-server: 5xx
BDE_CLIENT_ERROR: Final = 79111  # gsi-server: 4xx
MAX_BDE_BODY_BYTES: Final = 64 * 1024  # as oidc_api.MAX_FORM_BYTES: beyond, no client_id
BDE_WINDOW_MS: Final = 5 * 60 * 1000  # gsi-server ships its lines every 5 minutes


@dataclass(frozen=True, kw_only=True)
class BdeRecord:
    """One performance record: ``start_ms;duration_ms;operationId;status;{"cidi":..,"ik":..}``."""

    start_ms: int
    duration_ms: int
    operation_id: str
    status: int  # gematik's code: the HTTP status, or 79000 (5xx) / 79111 (4xx)
    cidi: int | None  # CRC32 of the client_id (absent when the request had none)
    ik: str | None = None  # the insurer's IK, stamped by :class:`BdeStamp`

    def line(self) -> str:
        ik = "null" if self.ik is None else _JSON.encode(self.ik)
        cidi = "" if self.cidi is None else f'"cidi":{self.cidi},'
        return (
            f"{self.start_ms};{self.duration_ms};{self.operation_id};{self.status};"
            f'{{{cidi}"ik":{ik}}}'
        )

    def fields(self) -> dict[str, object]:
        return {
            "start_ms": self.start_ms,
            "duration_ms": self.duration_ms,
            "operation_id": self.operation_id,
            "status": self.status,
            "cidi": self.cidi,
            "ik": self.ik,
        }


def bde_status(http_status: int) -> int:
    if http_status >= 500:
        return BDE_SERVER_ERROR
    if http_status >= 400:
        return BDE_CLIENT_ERROR
    return http_status


def bde_client_id(operation_id: str, body: bytes) -> str | None:
    """The ``client_id`` of a BDE-measured request's body, or None (none, or several)."""
    try:
        if operation_id in BDE_JSON_BODY:
            parsed = json.loads(body) if body else None
            value = parsed.get("client_id") if isinstance(parsed, dict) else None
            return value if isinstance(value, str) else None
        # a scan, not parse_qs of the whole form (5 µs)
        values = [p[10:] for p in body.split(b"&") if p.startswith(b"client_id=")]
        return (
            unquote_plus(values[0].decode("utf-8"), errors="strict") if len(values) == 1 else None
        )
    except ValueError:  # not JSON, not UTF-8
        return None


class BdeStamp(logging.Filter):
    """Adds the insurer's IK (``HEALTHID_BDE_IK``) to each BDE record (on ``healthid.bde``)."""

    def __init__(self, ik: str | None = None) -> None:
        super().__init__()
        self.ik = ik

    def filter(self, record: logging.LogRecord) -> bool:
        bde = getattr(record, "bde", None)
        if isinstance(bde, BdeRecord) and self.ik is not None:
            record.bde = stamped = BdeRecord(
                start_ms=bde.start_ms,
                duration_ms=bde.duration_ms,
                operation_id=bde.operation_id,
                status=bde.status,
                cidi=bde.cidi,
                ik=self.ik,
            )
            record.msg, record.args = stamped.line(), ()
        return True


class BdeFileHandler(logging.Handler):
    """gematik's file format (§10): the lines of five minutes in
    ``<ci_id>_<start_ms>_<end_ms>_perf.log``. The windows are aligned to the clock, so every
    worker appends (``O_APPEND``, one write per line) to the same file; a shipper uploads the
    files whose window has ended (the upload itself is not part of healthid)."""

    def __init__(self, directory: str | Path, ci_id: str = "healthid") -> None:
        super().__init__()
        self.directory = Path(directory)
        self.ci_id = ci_id
        self._window = -1
        self._fd = -1

    def emit(self, record: logging.LogRecord) -> None:
        bde = getattr(record, "bde", None)
        if not isinstance(bde, BdeRecord):
            return
        try:
            window = bde.start_ms - bde.start_ms % BDE_WINDOW_MS
            if window != self._window:
                self._open(window)
            os.write(self._fd, (bde.line() + "\n").encode("utf-8"))
        except OSError:
            self.handleError(record)

    def _open(self, window: int) -> None:
        self._close_fd()
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"{self.ci_id}_{window}_{window + BDE_WINDOW_MS}_perf.log"
        self._fd = os.open(self.directory / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._window = window

    def _close_fd(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def close(self) -> None:
        self.acquire()
        try:
            self._close_fd()
        finally:
            self.release()
        super().close()


# -- the middleware -------------------------------------------------------------------------
ACCESS_LOG = logging.getLogger("healthid.access")
BDE_LOG = logging.getLogger("healthid.bde")


class ObservabilityMiddleware:
    """Request id, metrics, access log and BDE record of every HTTP request."""

    def __init__(self, app: ASGIApp, *, metrics: HostMetrics, mounts: Collection[str] = ()) -> None:
        self.app = app
        self.metrics = metrics
        self.mounts = frozenset(mounts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = _request_id(scope["headers"])
        token = request_id.set(rid)
        root_path = scope.get("root_path", "")
        operation = (
            BDE_OPERATIONS.get(scope["path"])
            if not root_path and BDE_LOG.isEnabledFor(logging.INFO)
            else None
        )
        body = bytearray()
        status = 500  # an exception before the response: ServerErrorMiddleware answers 500
        rid_header = (REQUEST_ID_HEADER, rid.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), rid_header]}
            await send(message)

        async def tapped() -> Message:  # the BDE needs the client_id of PAR, consent, token
            message = await receive()
            if message["type"] == "http.request" and len(body) <= MAX_BDE_BODY_BYTES:
                body.extend(message.get("body", b""))
            return message

        try:
            await self.app(scope, tapped if operation else receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route = self._route(scope, root_path)
            method = scope["method"] if scope["method"] in METHODS else OTHER_METHOD
            self.metrics.observe(route, method, status, seconds)
            if ACCESS_LOG.isEnabledFor(logging.INFO):
                _access_line(rid, method, route, status, seconds)
            if operation is not None and route in BDE_OPERATIONS:
                _bde_line(rid, operation, status, seconds, bytes(body))
            request_id.reset(token)

    def _route(self, scope: Scope, root_path: str) -> str:
        """The matched route's template (Starlette leaves the route in the scope)."""
        route = scope.get("route")
        path = getattr(route, "path", None)
        if not isinstance(path, str):
            return UNMATCHED
        mounted = scope.get("root_path", "")
        if mounted == root_path:
            return path
        if isinstance(route, Mount):  # a mounted app without routes of its own
            return f"{path}/{{path}}"
        prefix = mounted[len(root_path) :]
        return (prefix if prefix in self.mounts else "{mount}") + path


def _access_line(rid: str, method: str, route: str, status: int, seconds: float) -> None:
    ms = round(seconds * 1000, 3)
    # makeRecord + handle: Logger.info would also walk the stack for the caller (~1 µs)
    record = ACCESS_LOG.makeRecord(
        ACCESS_LOG.name,
        logging.INFO,
        __file__,
        0,
        "%s %s %d %.1f ms",
        (method, route, status, ms),
        None,
        extra={
            "request_id": rid,
            "fields": {"method": method, "route": route, "status": status, "duration_ms": ms},
        },
    )
    ACCESS_LOG.handle(record)


def _bde_line(rid: str, operation: str, status: int, seconds: float, body: bytes) -> None:
    client_id = bde_client_id(operation, body)
    duration_ms = int(seconds * 1000)
    record = BdeRecord(
        start_ms=int(time.time() * 1000) - duration_ms,
        duration_ms=duration_ms,
        operation_id=operation,
        status=bde_status(status),
        cidi=None if client_id is None else zlib.crc32(client_id.encode("utf-8")),
    )
    BDE_LOG.handle(  # as _access_line: no stack walk
        BDE_LOG.makeRecord(
            BDE_LOG.name,
            logging.INFO,
            __file__,
            0,
            record.line(),
            (),
            None,
            extra={"request_id": rid, "bde": record},
        )
    )


# -- logging ----------------------------------------------------------------------------------
class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, request_id (in a request),
    the record's structured ``fields`` and ``bde``, and an exception's traceback."""

    _second = -1
    _stamp = ""

    def _time(self, created: float, msecs: float) -> str:
        second = int(created)
        if second != self._second:  # one strftime a second, not one a line
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._stamp}.{int(msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": self._time(record.created, record.msecs),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or request_id.get()
        if rid:
            out["request_id"] = rid
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        bde = getattr(record, "bde", None)
        if isinstance(bde, BdeRecord):
            out["bde"] = bde.fields()
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        try:  # orjson: 0.3 µs where json takes 3.4 (a line per request)
            return orjson.dumps(out, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
        except TypeError:  # what orjson does not take (an integer beyond 64 bits): as json does
            return _JSON.encode(out)


class TextFormatter(logging.Formatter):
    """``time level logger [request id] message`` for development."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s [%(request_id)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if not getattr(record, "request_id", None):
            record.request_id = request_id.get() or "-"
        return super().format(record)


LOG_FORMATS: Final = ("json", "text")


def logging_config(
    json_format: bool,
    *,
    level: str = "INFO",
    bde_ik: str | None = None,
    bde_dir: Path | None = None,
    bde_ci_id: str = "healthid",
) -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` for ``healthid serve`` (uvicorn applies it in each
    worker): every record through one handler on stderr; uvicorn's own access log off (ours is
    ``healthid.access``); httpx's per-request INFO lines (URLs with query strings) off; BDE
    records (only with ``bde_ik`` or ``bde_dir``) stamped with the IK and, with ``bde_dir``,
    written in gematik's file format besides."""
    formatter = "healthid.host.observability." + (
        "JsonFormatter" if json_format else "TextFormatter"
    )
    bde_handlers = ["bde_file"] if bde_dir is not None else []
    config: dict[str, Any] = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": {"()": formatter}},
        "filters": {"bde": {"()": "healthid.host.observability.BdeStamp", "ik": bde_ik}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level, "handlers": ["default"]},
        "loggers": {
            "uvicorn": {"level": level, "handlers": [], "propagate": True},
            "uvicorn.error": {"level": level, "handlers": [], "propagate": True},
            "uvicorn.access": {"level": "WARNING", "handlers": [], "propagate": False},
            "healthid.bde": {
                # opt-in, as gsi-server's gsi.bdeLoggingEnabled: on with an IK or a directory
                "level": "INFO" if bde_ik is not None or bde_dir is not None else "WARNING",
                "filters": ["bde"],
                "handlers": bde_handlers,
            },
            # httpx logs every outbound URL with its query string at INFO
            "httpx": {"level": "WARNING"},
            "httpcore": {"level": "WARNING"},
        },
    }
    if bde_dir is not None:
        config["handlers"]["bde_file"] = {
            "()": "healthid.host.observability.BdeFileHandler",
            "directory": str(bde_dir),
            "ci_id": bde_ci_id,
        }
    return config


def configure_logging(json: bool, **options: Any) -> None:
    """Apply :func:`logging_config` to this process."""
    logging.config.dictConfig(logging_config(json, **options))
