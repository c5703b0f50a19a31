"""The bad-input suite: print how many inputs each parser and route was given."""

from __future__ import annotations

from typing import Any

from fuzz_testlib import INPUTS


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not INPUTS:
        return
    terminalreporter.section("bad inputs tried (issue #7 item 5)")
    for name, count in sorted(INPUTS.items()):
        terminalreporter.write_line(f"{count:>8}  {name}")
    inputs = sum(n for name, n in INPUTS.items() if not name.startswith("known bug"))
    terminalreporter.write_line(f"{inputs:>8}  total inputs (known-bug hits are among them)")
