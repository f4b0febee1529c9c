-- Document leases: one owner node per document across nodes.
-- `epoch` is the fencing token. Every acquisition takes it from one sequence,
-- at the moment it takes the row lock, so a document's epochs only grow and
-- no value is ever issued twice, even after the row is deleted with the
-- document. `expires` is always computed with the database's clock; a
-- released lease has expires = '-infinity'.
CREATE SEQUENCE document_lease_epochs;

CREATE TABLE document_leases (
    doc     text COLLATE "C" PRIMARY KEY,
    owner   text        NOT NULL,
    epoch   bigint      NOT NULL,
    expires timestamptz NOT NULL
);
