-- latchkey's first schema, PostgreSQL edition: the same tables and columns as
-- migrations/sqlite/0001_initial.sql, so that both backends decode into the
-- same row shapes (src/rows.rs) and `latchkey db copy` moves rows verbatim.
-- Times are microseconds since the Unix epoch.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);

CREATE TABLE workspaces (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

CREATE TABLE environments (
    id             TEXT PRIMARY KEY,
    workspace_id   TEXT NOT NULL REFERENCES workspaces (id),
    name           TEXT NOT NULL,
    is_default     BOOLEAN NOT NULL DEFAULT FALSE,
    webhook_suffix TEXT NOT NULL DEFAULT '',
    created_at     BIGINT NOT NULL,
    UNIQUE (workspace_id, name)
);

CREATE TABLE tokens (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    name         TEXT NOT NULL,
    secret_hash  BYTEA NOT NULL,
    role         TEXT NOT NULL,
    environments TEXT,
    created_at   BIGINT NOT NULL,
    revoked_at   BIGINT
);

-- One row per secret holding its current version only, so that a delete or
-- an overwrite leaves no older ciphertext in a live row (dead tuples are
-- reclaimed by VACUUM).
CREATE TABLE secrets (
    id             TEXT PRIMARY KEY,
    workspace_id   TEXT NOT NULL REFERENCES workspaces (id),
    environment_id TEXT NOT NULL REFERENCES environments (id),
    name           TEXT,
    app_id         TEXT,
    expires_at     BIGINT,
    created_at     BIGINT NOT NULL,
    created_by     TEXT NOT NULL,
    last_used_at   BIGINT,
    version        BIGINT NOT NULL,
    key_id         TEXT NOT NULL,
    wrapped_key    BYTEA NOT NULL,
    ciphertext     BYTEA NOT NULL
);

CREATE UNIQUE INDEX secrets_by_name ON secrets (environment_id, name) WHERE name IS NOT NULL;
-- Listing pages by creation time; uniqueness keeps paging exact.
CREATE UNIQUE INDEX secrets_by_created ON secrets (environment_id, created_at) WHERE name IS NOT NULL;
CREATE INDEX secrets_by_expiry ON secrets (expires_at) WHERE expires_at IS NOT NULL;
