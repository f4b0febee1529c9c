-- A deleted document leaves only this marker: when, by whom, at which version.
-- Its ops, snapshots and documents row are gone; erasing removes this too.
CREATE TABLE document_tombstones (
    doc     text COLLATE "C" NOT NULL,
    deleted double precision NOT NULL,
    version bigint           NOT NULL,
    "by"    text             NOT NULL,
    PRIMARY KEY (doc, deleted)
);
