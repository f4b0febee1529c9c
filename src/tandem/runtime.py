"""Process-wide tuning that ``tandem serve`` applies before it starts serving.

Only the command does this: an application embedding Tandem's router owns its
process and tunes it (or not) itself.

Two knobs, both chosen by measurement (docs/performance.md, "What the profiles
showed"):

* **The GIL switch interval** (5 ms by default). The event loop and the SQLite
  commit thread share the GIL; a commit that finished during a long fan-out
  waited for it, which showed as propagation latency under a crowd. 0.5 ms
  hands it over sooner.
* **The garbage collector.** CPython's full collection walks every tracked
  object. With 2,000 open sockets that is ~180 ms during which nothing is
  sent, and the default thresholds ran one every few seconds while clients
  connected and typed: each one a stall every document's latency paid.
  Everything alive once the app is built (modules, the app, settings: ~70,000
  objects) is moved out of the collector's sight (``gc.freeze``), and a full
  collection waits for 1,000 middle-generation passes instead of 10. Young
  collections are untouched: they are short and keep memory flat.

  The price would be cyclic garbage that reached the oldest generation waiting
  longer. A closed socket leaves none: uvicorn's upgraded HTTP protocol and a
  Yjs link's membership were such cycles (≈5 KB a connection) and are broken
  when they are done with (``uvicorn_glue.release_http_protocol``,
  ``YjsLink.leave``). Churn test, 7,000 ``/collab`` connections opened and
  closed in rounds of 1,000: RSS +16 MiB with or without this policy, +56 MiB
  with it before those cycles were broken. ``tests/integration/test_churn.py``
  keeps it so: what closed connections held must go in young collections, with
  nothing left for a full one.
"""

from __future__ import annotations

import gc
import sys

__all__ = ["FULL_COLLECTION_EVERY", "SWITCH_INTERVAL", "tune_process"]

#: Seconds a thread may hold the GIL while another waits for it.
SWITCH_INTERVAL = 0.0005
#: Middle-generation collections between two full ones (CPython's default: 10).
FULL_COLLECTION_EVERY = 1000


def tune_process() -> None:
    """Apply the switch interval and the collector policy to this process.

    Call it once the app is built and before serving: what exists then lives
    as long as the process and is frozen out of every later collection.
    """
    sys.setswitchinterval(SWITCH_INTERVAL)
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)
