-- Secret history: every version of a secret is a row of its own, sealed
-- under its own data key; `secrets` keeps the metadata and the number of
-- the current version. Times are microseconds since the Unix epoch.
--
-- `keys` (a JSON array of the version's key names, sorted) and `changes`
-- (JSON {"added":[...],"removed":[...],"changed":[...]} against the version
-- before it) hold names, never values: listing and history need no
-- decryption. Rows moved here from an older store get `keys` filled in at
-- the first start that can decrypt them; `changes` stays NULL (unknown)
-- where the version before them was never kept.

CREATE TABLE secret_versions (
    secret_id      TEXT NOT NULL REFERENCES secrets (id) ON DELETE CASCADE,
    version        BIGINT NOT NULL,
    created_at     BIGINT NOT NULL,
    created_by     TEXT NOT NULL,
    action         TEXT NOT NULL,
    source_version BIGINT,
    keys           TEXT,
    changes        TEXT,
    key_id         TEXT NOT NULL,
    wrapped_key    BYTEA NOT NULL,
    ciphertext     BYTEA NOT NULL,
    PRIMARY KEY (secret_id, version)
);

-- The rows whose key lists are still to be filled in (none, once a start
-- has decrypted them): each start looks for them without a full scan.
CREATE INDEX secret_versions_unlisted ON secret_versions (secret_id) WHERE keys IS NULL;

INSERT INTO secret_versions (secret_id, version, created_at, created_by, action, key_id, wrapped_key, ciphertext)
SELECT id, version,
       CASE WHEN version = 1 THEN created_at ELSE (extract(epoch FROM clock_timestamp()) * 1000000)::BIGINT END,
       CASE WHEN version = 1 THEN created_by ELSE '' END,
       CASE WHEN version = 1 THEN 'created' ELSE 'updated' END,
       key_id, wrapped_key, ciphertext
FROM secrets;

ALTER TABLE secrets DROP COLUMN key_id;
ALTER TABLE secrets DROP COLUMN wrapped_key;
ALTER TABLE secrets DROP COLUMN ciphertext;
