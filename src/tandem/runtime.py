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
  collection waits for 100 middle-generation passes instead of 10. Young
  collections are untouched: they are short and keep memory flat.

  The price: cyclic garbage that reached the oldest generation waits longer.
  The main such garbage is a closed socket's uvicorn HTTP protocol, parser
  and transport (they reference each other, ≈5 KB a connection): under heavy
  connection churn memory rises by that much per closed socket until the next
  full collection (7,000 connections opened and closed: +47 MiB against +12
  MiB with CPython's defaults, in a churn test). 100 bounds that at ten times
  the default interval; breaking those cycles when a socket closes would
  remove it.
"""

from __future__ import annotations

import gc
import sys

__all__ = ["FULL_COLLECTION_EVERY", "SWITCH_INTERVAL", "tune_process"]

#: Seconds a thread may hold the GIL while another waits for it.
SWITCH_INTERVAL = 0.0005
#: Middle-generation collections between two full ones (CPython's default: 10).
FULL_COLLECTION_EVERY = 100


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
