-- The audit log: one row per change, value read, failed authentication or
-- denial, never a value, a token secret or a request body. Times are
-- microseconds since the Unix epoch.
--
-- Events form a chain: `mac` is an HMAC-SHA256, under the store's audit key
-- (random, kept in `meta` wrapped by the master key), of the event's fields
-- and the previous event's `mac`. `audit_head` holds the newest event's
-- number and MAC; appending an event updates it in the same transaction,
-- which also orders appends from every writer. Its one row is made by the
-- first start that holds the master key (beside the audit key).

CREATE TABLE audit_events (
    seq            BIGINT PRIMARY KEY,
    at             BIGINT NOT NULL,
    workspace_id   TEXT,
    actor_id       TEXT,
    actor_name     TEXT,
    actor_role     TEXT,
    client         TEXT,
    interface      TEXT NOT NULL,
    action         TEXT NOT NULL,
    environment    TEXT,
    secret_name    TEXT,
    secret_id      TEXT,
    version        BIGINT,
    outcome        TEXT NOT NULL,
    detail         TEXT,
    mac            BYTEA NOT NULL
);

CREATE INDEX audit_events_by_time ON audit_events (at);
CREATE INDEX audit_events_by_secret ON audit_events (secret_id, version) WHERE secret_id IS NOT NULL;
CREATE INDEX audit_events_by_actor ON audit_events (actor_id) WHERE actor_id IS NOT NULL;

CREATE TABLE audit_head (
    id   BIGINT PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    mac  BYTEA NOT NULL
);
