-- Tokens that expire, rotate, and record their last use.
--
-- expires_at:            when the token stops being accepted (NULL: never).
-- last_used_at:          the last authentication with it, kept to the minute.
-- previous_secret_hash:  after a rotation, the SHA-256 of the secret it
--                        replaced, accepted until previous_secret_until
--                        (both NULL when there is no grace period running).
-- Times are microseconds since the Unix epoch.
--
-- Numbered 0004 (not 0003) so that it follows the audit log's migration,
-- which is numbered 0003 on SQLite.

ALTER TABLE tokens ADD COLUMN expires_at INTEGER;
ALTER TABLE tokens ADD COLUMN last_used_at INTEGER;
ALTER TABLE tokens ADD COLUMN previous_secret_hash BLOB;
ALTER TABLE tokens ADD COLUMN previous_secret_until INTEGER;
