"""The garbage collector tuned for a long-running server process (host workers, enclave).

CPython's cyclic collector runs a young collection every 700 net container allocations and
walks every tracked object of the process in its full collections, the hundreds of thousands
that the imported libraries (cryptography, SQLAlchemy, Starlette ...) and the built app
leave behind. A flow allocates thousands of short-lived containers, so under load the
collector cost about 4 % of a worker's CPU (perf, bench/flow.py).

``tune_for_serving`` is called once, after the process has imported and built everything:
it moves what exists then into the permanent generation (``gc.freeze``: never walked again,
never freed, which is what a server's startup state is anyway) and collects the young
generation less often. Reference counting still frees almost everything at once; only
cyclic garbage waits for the collector, and there is little of it per request.
Not for tests or tools: a process that builds many apps would keep each one frozen.
"""

from __future__ import annotations

import gc
from typing import Final

# Net container allocations between young collections (CPython's default: 700), and how
# many collections of one generation before one of the next (defaults: 10 and 10).
YOUNG_THRESHOLD: Final = 20_000
MIDDLE_THRESHOLD: Final = 20
OLD_THRESHOLD: Final = 10


def tune_for_serving() -> None:
    """Freeze what the process holds now and collect the young generation less often."""
    gc.collect()  # what startup left as garbage is freed, not frozen
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, OLD_THRESHOLD)
