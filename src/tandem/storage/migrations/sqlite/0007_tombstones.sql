-- A deleted document leaves only this marker: when, by whom, at which version.
-- Its ops, snapshots and documents row are gone; erasing removes this too.
CREATE TABLE document_tombstones (
    doc     TEXT    NOT NULL,
    deleted REAL    NOT NULL,
    version INTEGER NOT NULL,
    "by"    TEXT    NOT NULL,
    PRIMARY KEY (doc, deleted)
) WITHOUT ROWID;
