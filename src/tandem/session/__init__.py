"""One open document and what it shares with the others; each rule in its own small module.

==================  ==========================================================
``delivery``        pure: who hears what, when (commit → broadcast, sync → ack,
                    held while an ack is outstanding, rollback)
``document``        async: join/leave and one ``sequence()`` for every path
                    (OT, REST, Yjs, offline merge); the committer's reports
``commit``          group commit across documents
``offline``         offline merge of a long branch, and its checkpoints
``replication``     other nodes: publishing, applying, gap fill, rebase on conflict
``payloads``        pure: the bus payload codec (ops as ``OpRecord``, presence)
``presence``        presence fan-out, coalescing and expiry
``yjs``             the CRDT replica and the Yjs peers
``manager``         open/close documents, single-flight load, the bus publisher
``ownership``       pure: one document's lease on this node (deadline, epochs, fenced)
``leases``          this node's leases: acquire, renew on time, release, report losses
                    (not used by the sessions yet)
==================  ==========================================================

The import arrows point one way: ``manager`` → ``document`` → the pieces →
``delivery``; a piece sees the session through a small protocol of its own.
This package file imports nothing, so importing one piece never loads the others.
"""
