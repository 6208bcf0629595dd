-- Sessions are cached in memory by every siteward process (see store/src/auth.rs). Each deleted
-- or re-keyed session row is announced on `siteward_session` with its id hash, so no process
-- keeps answering for a session that is gone; a TRUNCATE announces `*`. Changes to the signing
-- secrets announce `#secrets`. Refreshing last_seen_at announces nothing.
CREATE FUNCTION siteward_notify_session() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'session_secrets' THEN
        PERFORM pg_notify('siteward_session', '#secrets');
    ELSIF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify('siteward_session', '*');
    ELSE
        PERFORM pg_notify('siteward_session', OLD.id_hash);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER sessions_notify_delete AFTER DELETE ON sessions
    FOR EACH ROW EXECUTE FUNCTION siteward_notify_session();
CREATE TRIGGER sessions_notify_update
    AFTER UPDATE OF id_hash, uid_number, csrf_token, expires_at ON sessions
    FOR EACH ROW EXECUTE FUNCTION siteward_notify_session();
CREATE TRIGGER sessions_notify_truncate AFTER TRUNCATE ON sessions
    FOR EACH STATEMENT EXECUTE FUNCTION siteward_notify_session();
CREATE TRIGGER session_secrets_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON session_secrets
    FOR EACH STATEMENT EXECUTE FUNCTION siteward_notify_session();
