-- Revocations (tandem.revocation), kept until every token they cover has
-- expired (expires NULL: forever). `data` is the revocation as JSON.
CREATE TABLE revocations (
    id      text             NOT NULL PRIMARY KEY,
    data    json             NOT NULL,
    created double precision NOT NULL,
    expires double precision
);
