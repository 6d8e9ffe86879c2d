-- latchkey's first schema. Times are microseconds since the Unix epoch.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
);

CREATE TABLE workspaces (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);

CREATE TABLE environments (
    id             TEXT PRIMARY KEY,
    workspace_id   TEXT NOT NULL REFERENCES workspaces (id),
    name           TEXT NOT NULL,
    is_default     INTEGER NOT NULL DEFAULT 0,
    webhook_suffix TEXT NOT NULL DEFAULT '',
    created_at     INTEGER NOT NULL,
    UNIQUE (workspace_id, name)
);

CREATE TABLE tokens (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    name         TEXT NOT NULL,
    secret_hash  BLOB NOT NULL,
    role         TEXT NOT NULL,
    environments TEXT,
    created_at   INTEGER NOT NULL,
    revoked_at   INTEGER
);

-- One row per secret holding its current version only, so that a delete or
-- an overwrite leaves no older ciphertext behind (with secure_delete on).
CREATE TABLE secrets (
    id             TEXT PRIMARY KEY,
    workspace_id   TEXT NOT NULL REFERENCES workspaces (id),
    environment_id TEXT NOT NULL REFERENCES environments (id),
    name           TEXT,
    app_id         TEXT,
    expires_at     INTEGER,
    created_at     INTEGER NOT NULL,
    created_by     TEXT NOT NULL,
    last_used_at   INTEGER,
    version        INTEGER NOT NULL,
    key_id         TEXT NOT NULL,
    wrapped_key    BLOB NOT NULL,
    ciphertext     BLOB NOT NULL
);

CREATE UNIQUE INDEX secrets_by_name ON secrets (environment_id, name) WHERE name IS NOT NULL;
-- Listing pages by creation time; uniqueness keeps paging exact.
CREATE UNIQUE INDEX secrets_by_created ON secrets (environment_id, created_at) WHERE name IS NOT NULL;
CREATE INDEX secrets_by_expiry ON secrets (expires_at) WHERE expires_at IS NOT NULL;
