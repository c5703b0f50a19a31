"""The serving processes tune the garbage collector once they are built (healthid.gc_tuning);
checked in a fresh interpreter, since a frozen test process would keep every app it builds."""

from __future__ import annotations

import json
import subprocess
import sys

from healthid import gc_tuning

PROBE = """
import gc, json
import cryptography.x509  # something imported before: frozen, not walked again
from healthid.gc_tuning import tune_for_serving
before = gc.get_freeze_count()
tune_for_serving()
print(json.dumps([before, gc.get_freeze_count(), gc.get_threshold()]))
"""


def test_serving_freezes_what_startup_built_and_collects_the_young_less_often() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    before, frozen, threshold = json.loads(out)
    assert before == 0
    assert frozen > 10_000  # the imported modules' objects
    assert threshold == [
        gc_tuning.YOUNG_THRESHOLD,
        gc_tuning.MIDDLE_THRESHOLD,
        gc_tuning.OLD_THRESHOLD,
    ]
    assert gc_tuning.YOUNG_THRESHOLD > 700  # CPython's default


def test_the_serving_entry_points_tune_the_collector() -> None:
    from pathlib import Path

    src = Path(gc_tuning.__file__).parent
    for module in ("cli.py", "runtime.py", "enclave_cli.py"):
        assert "tune_for_serving()" in (src / module).read_text(), module
