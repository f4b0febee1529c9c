-- Document incarnations (docs/protocol.md, "Incarnations"): versions are
-- comparable only within one incarnation. A document with no row gets a new
-- one when a node next opens it, so deleting the rows (a delete, a restore,
-- an import, `tandem docs renew`) starts new incarnations.
-- `yjs_client` is the Yjs client id the server's CRDT replica writes with in
-- this incarnation; `yjs_from` the version at which that replica was seeded
-- from the document's text (0: it continues the stored CRDT state);
-- `retired` the Yjs client ids (space-separated) of the replica it replaced:
-- a Yjs client holding changes by one of them holds the old history.
CREATE TABLE document_incarnations (
    doc         text COLLATE "C" PRIMARY KEY,
    incarnation text   NOT NULL,
    yjs_client  bigint NOT NULL,
    yjs_from    bigint NOT NULL,
    retired     text   NOT NULL DEFAULT ''
);

-- Documents that exist before this migration keep their history and their
-- replica (written by client id 1 so far): one incarnation each, from now.
INSERT INTO document_incarnations (doc, incarnation, yjs_client, yjs_from)
SELECT doc, md5(random()::text || clock_timestamp()::text || doc), 1, 0
FROM (SELECT doc FROM documents UNION SELECT doc FROM ops UNION SELECT doc FROM snapshots) AS known;
