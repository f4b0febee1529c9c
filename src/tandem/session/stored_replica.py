"""The CRDT replica as the store holds it: rebuilt from a snapshot and the ops after it.

``build_replica`` makes the replica of a loaded document (what ``ReplicaHost``
loads and rebuilds); ``replica_clients`` reads which Yjs client ids its items
carry without building it (what a renewed incarnation retires).

May import the pure parts and the store's types; must not import asyncio,
the server, network code or the session's other modules.
"""

from __future__ import annotations

import logging

from tandem.merge.replica import SERVER_CLIENT_ID, Replica, replay_record
from tandem.merge.updates import clock_ends
from tandem.ot.document import Document
from tandem.storage.base import LoadedDocument
from tandem.storage.incarnations import LEGACY, Incarnation

__all__ = ["build_replica", "replica_clients"]

log = logging.getLogger("tandem.session.yjs")


def build_replica(loaded: LoadedDocument, incarnation: Incarnation = LEGACY) -> Replica:
    """The replica at ``loaded.version``: stored CRDT state, else seeded, then the ops.

    In an incarnation whose replica was seeded from the text at ``yjs_from``
    (a restored, imported or renewed document), a snapshot up to that version
    may hold the old history's items: the text at ``yjs_from`` is seeded afresh by
    the incarnation's own Yjs client id (deterministic, so every node and
    every restart builds the same items), and only the ops after it replayed.
    """
    snapshot = loaded.snapshot
    client = incarnation.yjs_client
    base = snapshot.version if snapshot is not None else 0
    # A snapshot at ``yjs_from`` may still be the old history's (taken before the
    # renewal); the new incarnation's own one there is the seeded state anyway.
    if incarnation.yjs_from > 0 and incarnation.yjs_from >= base:
        document = Document(snapshot.content) if snapshot is not None else Document()
        for record in loaded.ops:
            if record.version <= incarnation.yjs_from:
                document = document.apply(record.op)
        replica = Replica.seeded(document, incarnation.yjs_from, client)
    elif snapshot is not None and snapshot.crdt:
        replica = Replica(snapshot.crdt, snapshot.version, client)
    elif snapshot is not None:
        replica = Replica.seeded(snapshot.content, snapshot.version, client)
    else:
        replica = Replica(client_id=client)
    for record in loaded.ops:
        if record.version > replica.version:
            replay_record(replica, record)
    return replica


def replica_clients(loaded: LoadedDocument) -> frozenset[int]:
    """The Yjs client ids whose items the stored replica of ``loaded`` holds.

    Read from the stored updates (the snapshot's CRDT state and every op's
    update) without building the replica; ``SERVER_CLIENT_ID`` always, as a
    replica seeded from text or applying an op without an update writes with it
    (before incarnations, the only id it wrote with).
    """
    clients = {SERVER_CLIENT_ID}
    updates = [loaded.snapshot.crdt] if loaded.snapshot is not None else []
    updates += [record.crdt for record in loaded.ops]
    for update in updates:
        if update:
            try:
                clients.update(clock_ends(update))
            except (ValueError, UnicodeDecodeError):  # unreadable: what replays would refuse
                log.warning("%s: a stored Yjs update does not decode", loaded.doc)
    return frozenset(clients)
