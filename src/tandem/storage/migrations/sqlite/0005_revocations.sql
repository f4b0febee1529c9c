-- Revocations (tandem.revocation), kept until every token they cover has
-- expired (expires NULL: forever). `data` is the revocation as JSON.
CREATE TABLE revocations (
    id      TEXT NOT NULL PRIMARY KEY,
    data    TEXT NOT NULL,
    created REAL NOT NULL,
    expires REAL
) WITHOUT ROWID;
