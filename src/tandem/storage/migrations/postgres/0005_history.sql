-- A document's past (tandem.history): checkpoints of content and authorship,
-- named versions, and where retention cut the log.

-- The document and who inserted each character, at a version. Written every
-- history_checkpoint_every versions as history is read, and at every cut.
CREATE TABLE history_checkpoints (
    doc     text COLLATE "C" NOT NULL,
    version bigint           NOT NULL CHECK (version >= 0),
    content text             NOT NULL,  -- Delta.to_json() of the document
    authors text             NOT NULL,  -- [[user, length], ...] as JSON text
    PRIMARY KEY (doc, version)
);

-- Named versions ("v1 sent to legal").
CREATE TABLE history_labels (
    doc     text COLLATE "C" NOT NULL,
    name    text             NOT NULL,
    version bigint           NOT NULL CHECK (version >= 0),
    "user"  text             NOT NULL,
    time    double precision NOT NULL,
    PRIMARY KEY (doc, name)
);

-- Ops up to and including `oldest` were compacted away; `oldest` is the
-- oldest version that can still be read.
CREATE TABLE history_compacted (
    doc    text COLLATE "C" NOT NULL PRIMARY KEY,
    oldest bigint           NOT NULL
);
