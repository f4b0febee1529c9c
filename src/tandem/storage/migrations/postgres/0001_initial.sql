-- Tandem schema v1 (PostgreSQL). Applied once, inside the migration
-- transaction, under an advisory lock, in the schema named by search_path.
--
-- Document ids use COLLATE "C" (code point order, as Python sorts str): the
-- order list_documents promises, and cheaper comparisons in every index.
-- Ops and content are `json`, not `jsonb`: stored verbatim, so they round-trip
-- exactly and accept "\u0000" (jsonb rejects it); we never query inside them.
-- Times are double precision seconds, so OpRecord.time round-trips exactly.

-- One row per document: its committed head. append locks these rows
-- (INSERT ... ON CONFLICT DO UPDATE, in doc order) before checking the heads,
-- so a second writer waits, then sees the new head and gets ConflictError.
CREATE TABLE documents (
    doc     text COLLATE "C" NOT NULL PRIMARY KEY,
    head    bigint           NOT NULL DEFAULT 0,
    updated double precision NOT NULL
);

-- The op log; the primary key is the last line of defence against a gap or a
-- duplicate version, and the index get_ops / load range-scan.
CREATE TABLE ops (
    doc       text COLLATE "C" NOT NULL,
    version   bigint           NOT NULL CHECK (version >= 1),
    op        json             NOT NULL,
    client_id text             NOT NULL,
    seq       bigint,
    "user"    text             NOT NULL,
    time      double precision NOT NULL,
    PRIMARY KEY (doc, version)
);

-- Idempotency: one commit per (doc, client_id, seq); ops without seq are exempt.
CREATE UNIQUE INDEX ops_client_seq ON ops (doc, client_id, seq) WHERE seq IS NOT NULL;

CREATE TABLE snapshots (
    doc     text COLLATE "C" NOT NULL,
    version bigint           NOT NULL CHECK (version >= 0),
    content json             NOT NULL,
    crdt    bytea,
    PRIMARY KEY (doc, version)
);
