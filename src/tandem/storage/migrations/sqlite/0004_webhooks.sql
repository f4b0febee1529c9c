-- The webhook outbox (tandem.webhooks). A delivery is a row until its receiver
-- answered 2xx or it was dropped; a restart resends what is left.
CREATE TABLE webhook_deliveries (
    id           TEXT    NOT NULL PRIMARY KEY,  -- the idempotency key
    url          TEXT    NOT NULL,
    doc          TEXT    NOT NULL,
    from_version INTEGER NOT NULL,  -- the delivery covers from_version < v <= to_version
    to_version   INTEGER NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL    NOT NULL,  -- seconds since the epoch
    created      REAL    NOT NULL
) WITHOUT ROWID;
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt);
CREATE INDEX webhook_deliveries_line ON webhook_deliveries (url, doc, from_version);

-- Per subscriber and document: the highest version a delivery was queued for.
CREATE TABLE webhook_cursors (
    url     TEXT    NOT NULL,
    doc     TEXT    NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (url, doc)
) WITHOUT ROWID;

-- When each subscriber URL was first configured: documents changed before
-- that are not owed a delivery.
CREATE TABLE webhook_subscriptions (
    url   TEXT NOT NULL PRIMARY KEY,
    since REAL NOT NULL
) WITHOUT ROWID;
