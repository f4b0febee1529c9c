"""``python -m tests.integration.gcprobe serve ...``: ``tandem serve`` that answers SIGUSR1
with what its garbage collector holds, for the churn test (``test_churn.py``).

On SIGUSR1 it appends one JSON line to the file named by ``TANDEM_GC_PROBE``:
``young``, the count of tracked objects after a young and middle collection
(what the server runs between full ones: cyclic garbage that reached the oldest
generation is still counted); ``full``, the count after a full collection
(which also moves every survivor to the oldest generation); ``waiting``, the
most common kinds of object only the full collection let go of; and ``rss_kib``.
The objects ``tune_process`` froze are not counted.
"""

from __future__ import annotations

import collections
import gc
import json
import os
import re
import runpy
import signal
from pathlib import Path
from types import FrameType


def _kinds() -> collections.Counter[str]:
    return collections.Counter(type(o).__qualname__ for o in gc.get_objects())


def _report(signum: int, frame: FrameType | None) -> None:
    gc.collect(1)
    young = _kinds()
    gc.collect()
    full = _kinds()
    status = Path("/proc/self/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    line = {
        "young": sum(young.values()),
        "full": sum(full.values()),
        "waiting": (young - full).most_common(8),
        "rss_kib": rss,
    }
    with open(os.environ["TANDEM_GC_PROBE"], "a") as out:
        out.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    signal.signal(signal.SIGUSR1, _report)
    runpy.run_module("tandem", run_name="__main__", alter_sys=True)
