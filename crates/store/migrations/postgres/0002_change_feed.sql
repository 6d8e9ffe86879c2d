-- Every change to a named secret, and to any environment, is announced on
-- the channel `latchkey_changes` when its transaction commits, so that each
-- replica can drop what its lookup cache holds of it (src/changes.rs).
-- Triggers rather than statements in the adapter: a change made by any
-- writer (another version of latchkey, an operator's SQL) is announced too.
-- The payload is the secret's id, or '*' for "forget everything".

CREATE FUNCTION latchkey_announce_secret() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('latchkey_changes', OLD.id);
    RETURN NULL;
END
$$;

CREATE FUNCTION latchkey_announce_all() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('latchkey_changes', '*');
    RETURN NULL;
END
$$;

-- Only named secrets are ever cached; anonymous ones come and go unannounced.
CREATE TRIGGER secrets_announce_change
    AFTER UPDATE OR DELETE ON secrets
    FOR EACH ROW WHEN (OLD.name IS NOT NULL)
    EXECUTE FUNCTION latchkey_announce_secret();

CREATE TRIGGER secrets_announce_truncate
    AFTER TRUNCATE ON secrets
    FOR EACH STATEMENT EXECUTE FUNCTION latchkey_announce_all();

CREATE TRIGGER environments_announce_change
    AFTER UPDATE OR DELETE ON environments
    FOR EACH STATEMENT EXECUTE FUNCTION latchkey_announce_all();
