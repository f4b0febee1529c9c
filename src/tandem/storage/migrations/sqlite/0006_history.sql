-- A document's past (tandem.history): checkpoints of content and authorship,
-- named versions, and where retention cut the log.

-- The document and who inserted each character, at a version. Written every
-- history_checkpoint_every versions as history is read, and at every cut.
CREATE TABLE history_checkpoints (
    doc     TEXT    NOT NULL,
    version INTEGER NOT NULL CHECK (version >= 0),
    content TEXT    NOT NULL,  -- Delta.to_json() of the document, as JSON text
    authors TEXT    NOT NULL,  -- [[user, length], ...] as JSON text
    PRIMARY KEY (doc, version)
) WITHOUT ROWID;

-- Named versions ("v1 sent to legal").
CREATE TABLE history_labels (
    doc     TEXT    NOT NULL,
    name    TEXT    NOT NULL,
    version INTEGER NOT NULL CHECK (version >= 0),
    "user"  TEXT    NOT NULL,
    time    REAL    NOT NULL,
    PRIMARY KEY (doc, name)
) WITHOUT ROWID;

-- Ops up to and including `oldest` were compacted away; `oldest` is the
-- oldest version that can still be read.
CREATE TABLE history_compacted (
    doc    TEXT    NOT NULL PRIMARY KEY,
    oldest INTEGER NOT NULL
) WITHOUT ROWID;
