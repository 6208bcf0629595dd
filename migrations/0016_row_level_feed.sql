-- The change feed names rows, not only tables: `<table> <key>,<key>,...` per statement, where a
-- key is the row's primary key (`uid:gid` for memberships, the public prefix for API keys). The
-- listener re-reads just those rows and patches the snapshot. A statement that touches more
-- than 200 rows, and TRUNCATE, send `<table> *` (reload that half): the payload stays far below
-- NOTIFY's 8,000-byte limit. An UPDATE names the old and the new key of each row, so a changed
-- key is seen as a removal and an insertion.
--
-- The triggers are named `<table>_changes_*` so that they fire before `<table>_dns_serial_*`
-- (triggers on one event fire in name order): a statement's rows are announced before the
-- serial bump of their site, and the listener, which re-reads the site rows of the rows it is
-- told about, never serves a new serial with old contents.

CREATE FUNCTION siteward_notify_rows() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    key_expr text := TG_ARGV[0];
    touched bigint;
    keys text;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify('siteward_change', TG_TABLE_NAME || ' *');
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        EXECUTE format('SELECT count(*) FROM new_rows') INTO touched;
    ELSE
        EXECUTE format('SELECT count(*) FROM old_rows') INTO touched;
    END IF;
    IF touched = 0 THEN
        RETURN NULL;
    END IF;
    IF touched > 200 THEN
        PERFORM pg_notify('siteward_change', TG_TABLE_NAME || ' *');
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        EXECUTE format('SELECT string_agg(DISTINCT k, '','') FROM (SELECT %s AS k FROM new_rows) r',
                       key_expr) INTO keys;
    ELSIF TG_OP = 'DELETE' THEN
        EXECUTE format('SELECT string_agg(DISTINCT k, '','') FROM (SELECT %s AS k FROM old_rows) r',
                       key_expr) INTO keys;
    ELSE
        EXECUTE format('SELECT string_agg(DISTINCT k, '','') FROM (SELECT %s AS k FROM old_rows '
                       'UNION SELECT %s FROM new_rows) r', key_expr, key_expr) INTO keys;
    END IF;
    PERFORM pg_notify('siteward_change', TG_TABLE_NAME || ' ' || keys);
    RETURN NULL;
END;
$$;

DO $$
DECLARE
    t text;
    k text;
BEGIN
    FOR t, k IN SELECT * FROM (VALUES
            ('sites', 'id::text'), ('nodes', 'id::text'), ('containers', 'id::text'),
            ('external_domains', 'id::text'), ('services', 'id::text'),
            ('http_services', 'service_id::text'), ('transport_services', 'service_id::text'),
            ('dns_services', 'service_id::text'), ('dns_records', 'id::text'),
            ('users', 'uid_number::text'), ('groups', 'gid_number::text'),
            ('user_groups', 'uid_number::text || '':'' || gid_number::text'),
            ('api_keys', 'prefix')) AS v(t, k)
    LOOP
        EXECUTE format('DROP TRIGGER %I ON %I', t || '_notify', t);
        EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON %I REFERENCING NEW TABLE AS new_rows '
                       'FOR EACH STATEMENT EXECUTE FUNCTION siteward_notify_rows(%L)',
                       t || '_changes_ins', t, k);
        EXECUTE format('CREATE TRIGGER %I AFTER UPDATE ON %I REFERENCING NEW TABLE AS new_rows '
                       'OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION siteward_notify_rows(%L)',
                       t || '_changes_upd', t, k);
        EXECUTE format('CREATE TRIGGER %I AFTER DELETE ON %I REFERENCING OLD TABLE AS old_rows '
                       'FOR EACH STATEMENT EXECUTE FUNCTION siteward_notify_rows(%L)',
                       t || '_changes_del', t, k);
        EXECUTE format('CREATE TRIGGER %I AFTER TRUNCATE ON %I '
                       'FOR EACH STATEMENT EXECUTE FUNCTION siteward_notify_rows(%L)',
                       t || '_changes_trunc', t, k);
    END LOOP;
END;
$$;

DROP FUNCTION siteward_notify_change();
