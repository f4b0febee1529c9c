-- The effective Yjs update of an op that came from a Yjs client (NULL for OT
-- ops): replaying it rebuilds the document's CRDT replica with the same items.
ALTER TABLE ops ADD COLUMN crdt BLOB;
