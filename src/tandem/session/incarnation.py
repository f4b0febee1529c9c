"""Which incarnation an open document is in, and whether a client's state belongs to it.

A document gets a new incarnation when a node opens it and finds none
(``storage/incarnations.py``: created, recreated after a delete, restored,
imported or renewed). ``establish`` does that once per load: the new
incarnation's Yjs replica is seeded from the document's text at its head by a
new Yjs client id, and the client ids of the replica it replaces are retired.
The first node to store a row wins; every other node (and every restart)
reads that row and builds the same replica from it.

The rules for clients (docs/protocol.md, "Incarnations"):

* ``catch_up_allowed``: an OT client's ``join`` with a version ``v`` and the
  incarnation ``i`` it belongs to gets a catch-up only when ``i`` is the
  document's incarnation; a version of another incarnation gets a snapshot.
  A join without ``i`` (an older client) is trusted, as before.
* ``stale_yjs_client``: a Yjs client whose state vector or update holds
  changes by a retired client id holds the old history; merging it would bring
  that history back, so the connection is closed (``StaleIncarnation``, 4409).

``catch_up_allowed`` and ``stale_yjs_client`` are pure; ``establish`` awaits
the store. Must not import the server or the session's other modules but
``session/yjs`` (to build the replica being replaced).
"""

from __future__ import annotations

from collections.abc import Mapping

from tandem.errors import StaleIncarnation
from tandem.merge.updates import clock_ends
from tandem.merge.yproto import SYNC_STEP1, Decoder, Message
from tandem.session.stored_replica import replica_clients
from tandem.storage.base import LoadedDocument
from tandem.storage.incarnations import LEGACY, Incarnation, IncarnationStore, new_incarnation

__all__ = ["catch_up_allowed", "check_yjs_frame", "establish", "stale_yjs_client"]


async def establish(incarnations: IncarnationStore | None, loaded: LoadedDocument) -> Incarnation:
    """The incarnation of the document just loaded, starting a new one if it has none."""
    if incarnations is None:
        return LEGACY
    found = await incarnations.get(loaded.doc)
    if found is not None:
        return found
    if loaded.version == 0 and loaded.snapshot is None:
        fresh = new_incarnation(0, frozenset())  # a new document: nothing to retire
    else:
        fresh = new_incarnation(loaded.version, replica_clients(loaded))
    return await incarnations.create(loaded.doc, fresh)


def catch_up_allowed(current: Incarnation, claimed: str | None) -> bool:
    """May a client whose version belongs to incarnation ``claimed`` get a catch-up?"""
    return claimed is None or not current.id or claimed == current.id


def stale_yjs_client(current: Incarnation, clocks: Mapping[int, int]) -> int | None:
    """A retired client id with changes in ``clocks`` (a state vector or an update's ends)."""
    for client, clock in clocks.items():
        if clock > 0 and client in current.retired:
            return client
    return None


def check_yjs_frame(current: Incarnation, message: Message) -> None:
    """Raise ``StaleIncarnation`` if a sync message (a SyncStep1's state vector, a
    SyncStep2's or an Update's update) holds changes of the old history; a payload
    that does not decode is left to the ordinary checks."""
    if not current.retired:
        return
    payload = message.payload
    try:
        if message.sub != SYNC_STEP1:
            clocks = clock_ends(payload)
        else:
            decoder = Decoder(payload)
            clocks = {decoder.var_uint(): decoder.var_uint() for _ in range(decoder.var_uint())}
    except (ValueError, IndexError, UnicodeDecodeError):
        return
    client = stale_yjs_client(current, clocks)
    if client is not None:
        raise StaleIncarnation(
            f"this Yjs document holds changes (client {client}) from another incarnation "
            "of the document (it was restored or recreated): start from a fresh Y.Doc "
            "and apply your unsent edits to it"
        )
