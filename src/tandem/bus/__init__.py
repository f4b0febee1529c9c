"""Fan-out between document sessions, on one node or across several: ``open_bus(url)``.

Owns the choice of backend by URL. Imports only the bus modules; the Redis
backend (and redis-py) is imported only when a ``redis://`` URL asks for it.
"""

from __future__ import annotations

from tandem.bus.base import Bus, Handler, Subscription
from tandem.bus.local import LocalBus

__all__ = ["Bus", "Handler", "LocalBus", "Subscription", "open_bus"]


def open_bus(url: str) -> Bus:
    """A new, not yet opened bus for ``url``: ``await bus.open()`` before use.

    ``""`` or ``local://`` → ``LocalBus``; ``redis://…`` / ``rediss://…`` →
    ``RedisBus``, as is ``unix://`` (add ``?prefix=name:`` to namespace its channels; default
    ``tandem:``). Anything else raises ``ValueError``.
    """
    scheme = url.partition("://")[0].lower() if "://" in url else url.lower()
    if scheme in ("", "local"):
        return LocalBus()
    if scheme in ("redis", "rediss", "unix"):
        from tandem.bus.redis import RedisBus

        return RedisBus(url)
    raise ValueError(f"unsupported bus URL scheme {scheme!r}: use local:// or redis(s)://")
