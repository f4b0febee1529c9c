-- Tandem schema v1 (SQLite). Applied once, inside the migration transaction.
-- Text compares in BINARY (UTF-8 byte) order, which is code point order: the
-- order list_documents promises.

-- One row per document: its committed head. The append transaction reads and
-- advances it under the database write lock (BEGIN IMMEDIATE).
CREATE TABLE documents (
    doc     TEXT    NOT NULL PRIMARY KEY,
    head    INTEGER NOT NULL DEFAULT 0,
    updated REAL    NOT NULL
) WITHOUT ROWID;

-- The op log. The primary key is both the uniqueness guard and the index that
-- get_ops / load range-scan, so a doc with 100k ops reads only the rows asked for.
CREATE TABLE ops (
    doc       TEXT    NOT NULL,
    version   INTEGER NOT NULL CHECK (version >= 1),
    op        TEXT    NOT NULL,  -- Delta.to_json(), as JSON text
    client_id TEXT    NOT NULL,
    seq       INTEGER,
    "user"    TEXT    NOT NULL,
    time      REAL    NOT NULL,  -- seconds since the epoch, stored exactly
    PRIMARY KEY (doc, version)
) WITHOUT ROWID;

-- Idempotency: one commit per (doc, client_id, seq); ops without seq are exempt.
CREATE UNIQUE INDEX ops_client_seq ON ops (doc, client_id, seq) WHERE seq IS NOT NULL;

CREATE TABLE snapshots (
    doc     TEXT    NOT NULL,
    version INTEGER NOT NULL CHECK (version >= 0),
    content TEXT    NOT NULL,  -- Delta.to_json() of the document, as JSON text
    crdt    BLOB,
    PRIMARY KEY (doc, version)
) WITHOUT ROWID;
