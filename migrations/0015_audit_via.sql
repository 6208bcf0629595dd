-- Audit rows say through which door a change came: a browser session, an API key, the CLI,
-- LDAP Password Modify, a request nobody was signed in for (registration, sign-in, a
-- self-service reset), or the server itself (expiry, cleanup). Rows written before this
-- migration have no value.
ALTER TABLE audit_log ADD COLUMN via text
    CHECK (via IN ('session', 'api_key', 'cli', 'ldap', 'public', 'system'));
CREATE INDEX audit_log_actor_idx ON audit_log (actor_uid, id DESC);
