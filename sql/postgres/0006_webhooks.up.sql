-- webhooks: the callbacks an operator registered (plc watch add) for the
-- new ops of one DID. did is the DID as text; url an http or https URL.
-- cursor is the last seq whose op the delivery worker has handled for
-- this webhook (delivered, or not of its DID): the worker resumes after it
-- and never skips an op. failures counts the failed attempts at the op
-- after the cursor; a webhook whose attempts ran out is disabled (until
-- plc watch enable), with its last error kept. Unlike the log, rows are
-- updated (the cursor moves) and deleted (plc watch remove).
CREATE TABLE webhooks (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    did        TEXT    NOT NULL,
    url        TEXT    NOT NULL,
    cursor     BIGINT  NOT NULL CHECK (cursor >= 0),
    created_at BIGINT  NOT NULL,
    failures   INTEGER NOT NULL DEFAULT 0 CHECK (failures >= 0),
    disabled   SMALLINT NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    last_error TEXT    NOT NULL DEFAULT '',
    UNIQUE (did, url)
);

-- webhook_lease: which process delivers the webhooks, when several share
-- the database (plc serve processes over one PostgreSQL): the holder (a
-- random id per process) owns it until expires_at (unix milliseconds) and
-- renews it; another takes it over only once it has expired.
CREATE TABLE webhook_lease (
    id         SMALLINT PRIMARY KEY CHECK (id = 1),
    holder     TEXT     NOT NULL,
    expires_at BIGINT   NOT NULL
);
INSERT INTO webhook_lease (id, holder, expires_at) VALUES (1, '', 0);
