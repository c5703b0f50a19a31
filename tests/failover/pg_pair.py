"""A primary and a synchronous streaming standby: two PostgreSQL clusters on loopback.

The harness of the failover tests (issue #7 item 1), not a test. Both clusters run the
snippets shipped in ``deploy/postgres/`` verbatim (copied next to the data directories and
included), plus what only a test machine needs: loopback addresses, free ports, trust
authentication on 127.0.0.1, private socket directories.

Layout under one temporary directory owned by the ``postgres`` OS user (PostgreSQL refuses to
run as root; when the tests run as root every server command runs through ``runuser``)::

    primary/  standby/          the two data directories
    *.conf                      deploy/postgres/ snippets + one node file per cluster
    primary.log  standby.log    server logs

Every wait is bounded; :func:`pg_pair` stops both clusters (``pg_ctl stop`` on their data
directories, SIGKILL to their own postmaster if that fails) and removes the directory whatever
happens — SIGTERM included; clusters of an earlier run that was SIGKILLed are reaped at the
next start. The system cluster (127.0.0.1:5432) is never touched.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

REPO = Path(__file__).resolve().parents[2]
DEPLOY_DIR = REPO / "deploy" / "postgres"
SNIPPETS = ("replication.conf", "primary.conf", "standby.conf")
PG_BIN_ENV = "HEALTHID_TEST_PG_BIN"
PG_BIN_CANDIDATES = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin")
OS_USER = "postgres"  # the servers' owner when the tests run as root
LOOPBACK = "127.0.0.1"
SYSTEM_CLUSTER_PORT = 5432  # never ours
PORT_RANGE_LOW = 20000  # the clusters' ports: from here to the ephemeral range
SUPERUSER = "postgres"
REPLICATION_ROLE = "replicator"
DATABASE = "healthid"
STANDBY_NAME = "dc2a"  # cluster_name in standby.conf, listed in primary.conf's sync names
COMMAND_TIMEOUT = 60.0  # initdb, pg_basebackup
START_TIMEOUT = 30  # pg_ctl -t: seconds until the server accepts connections
STOP_TIMEOUT = 30  # pg_ctl -t for stop and promote
SYNC_TIMEOUT = 30.0  # until pg_stat_replication shows the standby synchronous
QUERY_TIMEOUT = 10.0  # connect + statement of the harness's own queries
POLL = 0.05


class PgPairError(Exception):
    """A cluster did not do what the harness asked within its bound."""


def pg_bin_dir() -> Path | None:
    """The PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup), or None."""
    configured = os.environ.get(PG_BIN_ENV)
    candidates = (configured,) if configured else PG_BIN_CANDIDATES
    for candidate in candidates:
        if candidate and all((Path(candidate) / b).is_file() for b in ("initdb", "pg_ctl")):
            return Path(candidate)
    return None


def _ephemeral_ports_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A free loopback port below the ephemeral range: no outgoing connection (the test
    suite makes many) can take it between now and the server's start."""
    high = min(_ephemeral_ports_start(), 32768)
    for _ in range(100):
        port = random.randrange(PORT_RANGE_LOW, high)  # noqa: S311 - not a secret
        if port == SYSTEM_CLUSTER_PORT:
            continue
        with socket.socket() as s:
            try:
                s.bind((LOOPBACK, port))
            except OSError:
                continue
        return port
    raise PgPairError(f"no free loopback port in {PORT_RANGE_LOW}..{high}")


def _as_server_user() -> list[str]:
    return ["runuser", "-u", OS_USER, "--"] if os.geteuid() == 0 else []


async def _fetch(
    port: int, sql: str, *args: Any, database: str = "postgres", local_commit: bool = False
) -> list[Any]:
    conn = await asyncpg.connect(
        host=LOOPBACK,
        port=port,
        user=SUPERUSER,
        database=database,
        timeout=QUERY_TIMEOUT,
        # before its standby exists the primary would wait for it on every COMMIT
        server_settings={"synchronous_commit": "local"} if local_commit else None,
    )
    try:
        return list(await conn.fetch(sql, *args, timeout=QUERY_TIMEOUT))
    finally:
        await conn.close(timeout=QUERY_TIMEOUT)


@dataclass(kw_only=True)
class Node:
    """One cluster: its data directory, port and log."""

    name: str
    data_dir: Path
    port: int
    log: Path

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass(kw_only=True)
class PgPair:
    """The pair under ``base``; :meth:`start` builds it, :meth:`close` stops both clusters."""

    base: Path
    bin_dir: Path
    primary: Node = field(init=False)
    standby: Node = field(init=False)
    paused: set[int] = field(default_factory=set)  # processes we SIGSTOPped

    def __post_init__(self) -> None:
        self.primary = self._node("primary")
        self.standby = self._node("standby")

    def _node(self, name: str) -> Node:
        return Node(
            name=name, data_dir=self.base / name, port=free_port(), log=self.base / f"{name}.log"
        )

    # -- what healthid sees ------------------------------------------------------------------
    def url(self, database: str = DATABASE) -> str:
        """healthid's database URL: both hosts, and only the writable one is used (SQLAlchemy's
        multi-host form for asyncpg: one ``host=`` per server, each with its port)."""
        hosts = "&".join(f"host={n.address}" for n in (self.primary, self.standby))
        return (
            f"postgresql+asyncpg://{SUPERUSER}@/{database}?{hosts}&target_session_attrs=read-write"
        )

    # -- commands ----------------------------------------------------------------------------
    def _run(self, *args: str, timeout: float = COMMAND_TIMEOUT) -> str:
        cmd = [*_as_server_user(), str(self.bin_dir / args[0]), *args[1:]]
        try:
            done = subprocess.run(
                cmd, cwd=self.base, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise PgPairError(f"{args[0]} did not finish within {timeout} s") from exc
        if done.returncode != 0:
            raise PgPairError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
        return done.stdout

    def _write(self, path: Path, text: str) -> None:
        path.write_text(text)
        if os.geteuid() == 0:
            pw = pwd.getpwnam(OS_USER)
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def query(
        self,
        node: Node,
        sql: str,
        *args: Any,
        database: str = "postgres",
        local_commit: bool = False,
    ) -> list[Any]:
        """Run one statement on ``node`` (from synchronous code: own event loop).
        ``local_commit``: do not wait for a synchronous standby (the pair's set-up)."""
        return asyncio.run(
            _fetch(node.port, sql, *args, database=database, local_commit=local_commit)
        )

    def _node_conf(self, node: Node, role_snippet: str) -> str:
        return (
            f"# written by tests/failover/pg_pair.py: the {node.name} on loopback\n"
            f"listen_addresses = '{LOOPBACK}'\n"
            f"port = {node.port}\n"
            f"unix_socket_directories = '{self.base}'\n"
            f"include '{self.base / role_snippet}'\n"
        )

    def _include(self, node: Node) -> str:
        return f"include '{self.base / (node.name + '.node.conf')}'\n"

    # -- building the pair -------------------------------------------------------------------
    def start(self, *, primary_settings: dict[str, str] | None = None) -> None:
        """initdb the primary, start it, add the replication role and slot and the database,
        clone the standby with pg_basebackup -R, start it, and wait until it is synchronous.
        ``primary_settings``: settings the primary gets afterwards (ALTER SYSTEM, reload)."""
        for snippet in SNIPPETS:
            self._write(self.base / snippet, (DEPLOY_DIR / snippet).read_text())
        self._run(
            "initdb",
            "-D",
            str(self.primary.data_dir),
            "-U",
            SUPERUSER,
            "--auth=trust",  # loopback only (pg_hba below); deploy/postgres/pg_hba.conf: scram
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        self._write(self.base / "primary.node.conf", self._node_conf(self.primary, "primary.conf"))
        self._write(self.base / "standby.node.conf", self._node_conf(self.standby, "standby.conf"))
        conf = self.primary.data_dir / "postgresql.conf"
        self._write(conf, conf.read_text() + self._include(self.primary))
        self._write(
            self.primary.data_dir / "pg_hba.conf",
            f"local all all trust\n"
            f"host all {SUPERUSER} {LOOPBACK}/32 trust\n"
            f"host replication {REPLICATION_ROLE} {LOOPBACK}/32 trust\n",
        )
        self.start_node(self.primary)
        for sql in (
            f"CREATE ROLE {REPLICATION_ROLE} WITH REPLICATION LOGIN",
            f"SELECT pg_create_physical_replication_slot('{STANDBY_NAME}')",
            f"CREATE DATABASE {DATABASE}",
        ):
            self.query(self.primary, sql, local_commit=True)
        self._clone_standby()
        self.start_node(self.standby)
        self.wait_synchronous()
        for name, value in (primary_settings or {}).items():
            self.set_setting(self.primary, name, value)

    def _clone_standby(self) -> None:
        self._run(
            "pg_basebackup",
            "-D",
            str(self.standby.data_dir),
            "-d",
            f"host={LOOPBACK} port={self.primary.port} user={REPLICATION_ROLE}",
            "-X",
            "stream",
            "-S",
            STANDBY_NAME,
            "-R",  # standby.signal + primary_conninfo (postgresql.auto.conf)
            "-c",
            "fast",
            "--no-sync",
        )
        # the clone carries the primary's include line: point it at the standby's node file
        conf = self.standby.data_dir / "postgresql.conf"
        text = conf.read_text()
        if self._include(self.primary) not in text:
            raise PgPairError("the cloned postgresql.conf lacks the primary's include line")
        self._write(conf, text.replace(self._include(self.primary), self._include(self.standby)))
        for stale in ("postmaster.pid", "postmaster.opts"):
            with suppress(FileNotFoundError):
                (self.standby.data_dir / stale).unlink()

    def set_setting(self, node: Node, name: str, value: str) -> None:
        """ALTER SYSTEM SET and reload (a setting that needs no restart)."""
        self.query(node, f"ALTER SYSTEM SET {name} = '{value}'")
        self.query(node, "SELECT pg_reload_conf()")

    # -- running -----------------------------------------------------------------------------
    def start_node(self, node: Node) -> None:
        try:
            self._run(
                "pg_ctl",
                "-D",
                str(node.data_dir),
                "-l",
                str(node.log),
                "-w",
                "-t",
                str(START_TIMEOUT),
                "start",
                timeout=START_TIMEOUT + 10,
            )
        except PgPairError as exc:
            raise PgPairError(f"{exc}\n{node.name} log:\n{node.log_tail()}") from None

    def replication(self) -> list[dict[str, Any]]:
        """The primary's pg_stat_replication rows (application_name, state, sync_state)."""
        rows = self.query(
            self.primary,
            "SELECT pid, application_name, state, sync_state FROM pg_stat_replication",
        )
        return [dict(r) for r in rows]

    def wait_synchronous(self, timeout: float = SYNC_TIMEOUT) -> dict[str, Any]:
        """Until the standby streams and counts for commits: sync_state ``sync`` (a plain or
        FIRST list) or ``quorum`` (an ANY list, as in primary.conf)."""
        deadline = time.monotonic() + timeout
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            rows = self.replication()
            for row in rows:
                if (
                    row["application_name"] == STANDBY_NAME
                    and row["state"] == "streaming"
                    and row["sync_state"] in ("sync", "quorum")
                ):
                    return row
            time.sleep(POLL)
        raise PgPairError(
            f"standby not synchronous within {timeout} s: {rows}\n{self.standby.log_tail()}"
        )

    def walsender_pid(self) -> int:
        row = self.wait_synchronous()
        return int(row["pid"])

    def pause(self, pid: int) -> None:
        """SIGSTOP one server process (the walsender: the WAN link stalls)."""
        os.kill(pid, signal.SIGSTOP)
        self.paused.add(pid)

    def stop_immediate(self, node: Node) -> None:
        """``pg_ctl stop -m immediate``: the server dies without a checkpoint, like a crash."""
        self._stop(node, "immediate", kill_paused=True)

    def stop_fast(self, node: Node) -> None:
        """``pg_ctl stop -m fast``: a clean shutdown (maintenance of a standby, say)."""
        self._stop(node, "fast")

    def _stop(self, node: Node, mode: str, *, kill_paused: bool = False) -> None:
        if node.postmaster_pid() is None:
            return
        stop = subprocess.Popen(
            [
                *_as_server_user(),
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(node.data_dir),
                "-m",
                mode,
                "-w",
                "-t",
                str(STOP_TIMEOUT),
                "stop",
            ],
            cwd=self.base,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        if kill_paused:
            # a stopped process cannot act on the postmaster's SIGQUIT: end it for good (it
            # sends nothing more), or the postmaster would wait for it
            time.sleep(POLL)
            self._end_paused(signal.SIGKILL)
        try:
            _, err = stop.communicate(timeout=STOP_TIMEOUT + 10)
        except subprocess.TimeoutExpired:
            stop.kill()
            stop.communicate()
            raise PgPairError(f"pg_ctl stop -m {mode} of the {node.name} hung") from None
        if stop.returncode != 0:
            raise PgPairError(f"pg_ctl stop -m {mode} of the {node.name}: {err.decode()}")

    def _end_paused(self, sig: signal.Signals) -> None:
        while self.paused:
            pid = self.paused.pop()
            with suppress(ProcessLookupError):
                os.kill(pid, sig)

    def promote(self, node: Node) -> None:
        """``pg_ctl promote -w``: returns once the standby accepts writes."""
        self._run(
            "pg_ctl",
            "-D",
            str(node.data_dir),
            "-w",
            "-t",
            str(STOP_TIMEOUT),
            "promote",
            timeout=STOP_TIMEOUT + 10,
        )
        deadline = time.monotonic() + STOP_TIMEOUT
        while self.query(node, "SELECT pg_is_in_recovery()")[0][0]:
            if time.monotonic() > deadline:
                raise PgPairError(f"the {node.name} is still in recovery after promote")
            time.sleep(POLL)

    def close(self) -> None:
        """Stop both clusters (immediate: nothing to keep), bounded; kill what will not stop."""
        self._end_paused(signal.SIGKILL)
        for node in (self.primary, self.standby):
            try:
                self._stop(node, "immediate")
            except PgPairError:
                pid = node.postmaster_pid()
                if pid is not None:
                    with suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)


@contextmanager
def unanswered_port(port: int) -> Iterator[None]:
    """While open, connections to LOOPBACK:``port`` get no answer at all: a listener with a
    full accept queue, whose SYNs the kernel drops (a host whose data centre is gone)."""
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((LOOPBACK, port))
        listener.listen(0)  # never accepted: one queued connection fills it
        for _ in range(2):
            filler = socket.socket()
            filler.setblocking(False)
            with suppress(BlockingIOError):
                filler.connect((LOOPBACK, port))
            fillers.append(filler)
        time.sleep(0.1)
        yield
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


BASE_PREFIX = "healthid-pgpair-"
OWNER_FILE = "owner.pid"  # the test process that made the directory


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_abandoned(bin_dir: Path) -> None:
    """Stop the clusters and remove the directories of earlier runs whose test process is
    gone without cleaning up (killed: SIGKILL runs no finally block)."""
    for base in Path(tempfile.gettempdir()).glob(BASE_PREFIX + "*"):
        try:
            owner = int((base / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if _alive(owner):
            continue
        PgPair(base=base, bin_dir=bin_dir).close()
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """SIGTERM (a CI timeout, `timeout`) raises SystemExit, so the finally blocks that stop
    the clusters run; the previous handler is restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def exit_on_term(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, exit_on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def pg_pair(*, primary_settings: dict[str, str] | None = None) -> Iterator[PgPair]:
    """A started, synchronous pair; both clusters are stopped and their files removed after."""
    bin_dir = pg_bin_dir()
    if bin_dir is None:
        raise PgPairError(f"no PostgreSQL server binaries (set {PG_BIN_ENV})")
    reap_abandoned(bin_dir)
    base = Path(tempfile.mkdtemp(prefix=BASE_PREFIX))
    (base / OWNER_FILE).write_text(str(os.getpid()))
    if os.geteuid() == 0:
        pw = pwd.getpwnam(OS_USER)
        os.chown(base, pw.pw_uid, pw.pw_gid)
    pair = PgPair(base=base, bin_dir=bin_dir)
    with _terminate_as_exit():
        try:
            pair.start(primary_settings=primary_settings)
            yield pair
        finally:
            try:
                pair.close()
            finally:
                shutil.rmtree(base, ignore_errors=True)
