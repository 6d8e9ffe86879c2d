-- Tokens that expire, rotate, and record their last use: the same columns
-- as migrations/sqlite/0004_tokens.sql (see there).
--
-- Numbered 0005 (not 0004) so that it follows the audit log's migration,
-- which is numbered 0004 on PostgreSQL.

ALTER TABLE tokens ADD COLUMN expires_at BIGINT;
ALTER TABLE tokens ADD COLUMN last_used_at BIGINT;
ALTER TABLE tokens ADD COLUMN previous_secret_hash BYTEA;
ALTER TABLE tokens ADD COLUMN previous_secret_until BIGINT;
