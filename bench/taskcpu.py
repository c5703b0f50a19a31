"""Where a server worker's CPU goes: per asyncio task, and per stretch between two awaits.

``bench/flow.py --cpu-by-task`` installs this in every server worker. Each task is timed step
by step with the thread's CPU clock (user + system, so the system calls a step makes count),
and labelled by the request it serves (``POST /token``) or by its coroutine
(``AuditLog._run``). A step runs from one await to the next; it is also booked to the pair
of places in our code where it resumed and where it stopped, which says where in an
endpoint the time goes (``pipeline.py:86:call -> policyholders.py:156:get``: after the Redis
reply, up to the SQL read). What runs outside any task (HTTP parsing in the protocol's
callbacks, the event loop itself, the drivers' protocol callbacks) is the worker's total
minus the tasks.

It runs on asyncio's Python task class (``asyncio.tasks._PyTask``, slower than the C one), so
the figures add up to a little more than the same worker without it: for finding where the
time goes, not for the targets. When its server has shut down, each worker writes
``taskcpu.<pid>.json`` to the directory it is given.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections import Counter
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

_clock = time.thread_time_ns
_TOKEN = re.compile(r"/[A-Za-z0-9_-]{20,}")  # ids and tokens in paths: one label for all
_DEPTH = 64  # awaits followed down from a task's coroutine


def _where(coro: Any) -> str:
    """The innermost frame of our code (healthid) that the task is suspended in."""
    last = None
    for _ in range(_DEPTH):
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        if "/healthid/" in frame.f_code.co_filename:
            name = frame.f_code.co_filename.rsplit("/", 1)[-1]
            last = f"{name}:{frame.f_lineno}:{frame.f_code.co_name}"
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        if coro is None:
            break
    return last or "start/end"


class _Tally:
    def __init__(self) -> None:
        self.cpu: Counter[str] = Counter()
        self.tasks: Counter[str] = Counter()
        self.segments: Counter[tuple[str, str, str]] = Counter()
        self.started = _clock()


def _label(coro: Coroutine[Any, Any, Any]) -> str:
    name = getattr(coro, "__qualname__", "?")
    if name.endswith("run_asgi"):  # uvicorn's request cycle: label it by its request
        frame = getattr(coro, "cr_frame", None)
        scope = getattr(frame.f_locals.get("self"), "scope", None) if frame else None
        if isinstance(scope, dict):
            return f"{scope.get('method', '?')} {_TOKEN.sub('/*', str(scope.get('path')))}"
    return str(name)


def install(out_dir: Path) -> None:
    """Time every task of this process's event loop from uvicorn's startup on."""
    import uvicorn.server

    tally = _Tally()

    class TimedTask(asyncio.tasks._PyTask):  # type: ignore[name-defined,misc]
        label = "?"

        def _Task__step(self, exc: BaseException | None = None) -> None:  # noqa: N802
            resumed = _where(self._coro)
            start = _clock()
            try:
                super()._Task__step(exc)
            finally:
                spent = _clock() - start
                tally.cpu[self.label] += spent
                tally.segments[(self.label, resumed, _where(self._coro))] += spent

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        task = TimedTask(coro, loop=loop, **kwargs)
        task.label = _label(coro)
        tally.tasks[task.label] += 1
        return task  # type: ignore[no-any-return]

    startup = uvicorn.server.Server.startup

    async def timed_startup(self: Any, *args: Any, **kwargs: Any) -> None:
        asyncio.get_running_loop().set_task_factory(factory)  # type: ignore[arg-type]
        tally.started = _clock()
        await startup(self, *args, **kwargs)

    uvicorn.server.Server.startup = timed_startup  # type: ignore[method-assign]

    def write() -> None:
        report = {
            "total_ns": _clock() - tally.started,
            "tasks": {k: [v, tally.tasks[k]] for k, v in tally.cpu.items()},
            "segments": [[*k, v] for k, v in tally.segments.items()],
        }
        (out_dir / f"taskcpu.{os.getpid()}.json").write_text(json.dumps(report))

    shutdown = uvicorn.server.Server.shutdown

    async def shutdown_and_write(self: Any, *args: Any, **kwargs: Any) -> None:
        # not at exit: a worker stopped by SIGTERM ends by raising it again, unhandled
        await shutdown(self, *args, **kwargs)
        write()

    uvicorn.server.Server.shutdown = shutdown_and_write  # type: ignore[method-assign]


def summary(out_dir: Path, per: str = "POST /token", top: int = 25) -> list[str]:
    """The lines to print: µs per flow (one ``per`` request a flow) of each task label, of
    the time outside tasks, and of the costliest stretches between awaits, summed over the
    workers whose files are in ``out_dir``."""
    total = 0
    cpu: Counter[str] = Counter()
    count: Counter[str] = Counter()
    segments: Counter[tuple[str, str, str]] = Counter()
    for path in out_dir.glob("taskcpu.*.json"):
        report = json.loads(path.read_text())
        total += report["total_ns"]
        for label, (ns, n) in report["tasks"].items():
            cpu[label] += ns
            count[label] += n
        for label, resumed, stopped, ns in report["segments"]:
            segments[(label, resumed, stopped)] += ns
    flows = count.get(per, 0)
    if not flows:
        return ["cpu by task: no worker wrote its figures (or no flow ran)"]

    def us(ns: float) -> str:
        return f"{ns / flows / 1000:8.1f}"

    lines = [f"server workers' CPU by task, µs per flow ({flows} flows, all rounds):"]
    lines += [f"  {us(ns)}  {label}" for label, ns in cpu.most_common() if ns / flows >= 1000]
    lines.append(f"  {us(total - sum(cpu.values()))}  outside tasks (protocol callbacks, loop)")
    lines.append(f"  {us(total)}  in all")
    lines.append(f"the {top} costliest stretches between awaits, µs per flow:")
    lines += [
        f"  {us(ns)}  {label}: {resumed} -> {stopped}"
        for (label, resumed, stopped), ns in segments.most_common(top)
    ]
    return lines
