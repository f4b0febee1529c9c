-- A document's head is the version of its last op, read from the ops' primary
-- key: a commit no longer rewrites a row of its own here, one WAL page less per
-- op (docs/performance.md, item 14). What remains lists the documents; `created`
-- (the first op's time, or the first snapshot's) dates one that has no ops.
ALTER TABLE documents DROP COLUMN head;
ALTER TABLE documents RENAME COLUMN updated TO created;
