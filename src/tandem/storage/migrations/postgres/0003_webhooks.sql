-- The webhook outbox (tandem.webhooks). A delivery is a row until its receiver
-- answered 2xx or it was dropped; a restart resends what is left.
CREATE TABLE webhook_deliveries (
    id           text             NOT NULL PRIMARY KEY,  -- the idempotency key
    url          text             NOT NULL,
    doc          text COLLATE "C" NOT NULL,
    from_version bigint           NOT NULL,  -- covers from_version < v <= to_version
    to_version   bigint           NOT NULL,
    attempts     integer          NOT NULL DEFAULT 0,
    next_attempt double precision NOT NULL,  -- seconds since the epoch
    created      double precision NOT NULL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt);
CREATE INDEX webhook_deliveries_line ON webhook_deliveries (url, doc, from_version);

-- Per subscriber and document: the highest version a delivery was queued for.
CREATE TABLE webhook_cursors (
    url     text             NOT NULL,
    doc     text COLLATE "C" NOT NULL,
    version bigint           NOT NULL,
    PRIMARY KEY (url, doc)
);

-- When each subscriber URL was first configured: documents changed before
-- that are not owed a delivery.
CREATE TABLE webhook_subscriptions (
    url   text             NOT NULL PRIMARY KEY,
    since double precision NOT NULL
);
