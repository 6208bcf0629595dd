-- siteward schema, version 2: SOA serials of the sites' DNS zones.
--
-- `sites.dns_serial` counts the changes to what a site's zones (forward and reverse) are built
-- from. Statement-level triggers on every zone-feeding table bump it in the same transaction as
-- the change, so the serial the snapshot reads always matches the zone content it reads, and it
-- survives restarts. Writers never set it themselves: any UPDATE of a site row bumps it too.

ALTER TABLE sites ADD COLUMN dns_serial bigint NOT NULL DEFAULT 1 CHECK (dns_serial >= 1);

-- Any change to a site row itself (domain, subnet, gateway, ...) bumps its serial, unless the
-- statement is the bump below (which already changed it).
CREATE FUNCTION siteward_site_bump_serial() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.dns_serial = OLD.dns_serial THEN
        NEW.dns_serial := OLD.dns_serial + 1;
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER sites_dns_serial BEFORE UPDATE ON sites
    FOR EACH ROW EXECUTE FUNCTION siteward_site_bump_serial();

-- Bumps the serial of every site a statement on `TG_TABLE_NAME` touched, once per statement.
-- `changed` is the transition table(s): `new_rows` and/or `old_rows` depending on TG_OP.
CREATE FUNCTION siteward_zone_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        UPDATE sites SET dns_serial = dns_serial + 1;
    ELSIF TG_TABLE_NAME IN ('containers', 'nodes', 'dns_records') THEN
        IF TG_OP = 'INSERT' THEN
            UPDATE sites SET dns_serial = dns_serial + 1
             WHERE id IN (SELECT site_id FROM new_rows);
        ELSIF TG_OP = 'DELETE' THEN
            UPDATE sites SET dns_serial = dns_serial + 1
             WHERE id IN (SELECT site_id FROM old_rows);
        ELSE
            UPDATE sites SET dns_serial = dns_serial + 1
             WHERE id IN (SELECT site_id FROM new_rows UNION SELECT site_id FROM old_rows);
        END IF;
    ELSIF TG_TABLE_NAME = 'services' THEN
        IF TG_OP = 'INSERT' THEN
            UPDATE sites SET dns_serial = dns_serial + 1 WHERE id IN
                (SELECT c.site_id FROM new_rows r JOIN containers c ON c.id = r.container_id
                  WHERE r.type = 'dns');
        ELSIF TG_OP = 'DELETE' THEN
            UPDATE sites SET dns_serial = dns_serial + 1 WHERE id IN
                (SELECT c.site_id FROM old_rows r JOIN containers c ON c.id = r.container_id
                  WHERE r.type = 'dns');
        ELSE
            UPDATE sites SET dns_serial = dns_serial + 1 WHERE id IN
                (SELECT c.site_id FROM new_rows r JOIN containers c ON c.id = r.container_id
                  WHERE r.type = 'dns'
                 UNION
                 SELECT c.site_id FROM old_rows r JOIN containers c ON c.id = r.container_id
                  WHERE r.type = 'dns');
        END IF;
    ELSIF TG_TABLE_NAME = 'dns_services' THEN
        IF TG_OP = 'INSERT' THEN
            UPDATE sites SET dns_serial = dns_serial + 1 WHERE id IN
                (SELECT c.site_id FROM new_rows r JOIN services s ON s.id = r.service_id
                   JOIN containers c ON c.id = s.container_id);
        ELSIF TG_OP = 'DELETE' THEN
            UPDATE sites SET dns_serial = dns_serial + 1 WHERE id IN
                (SELECT c.site_id FROM old_rows r JOIN services s ON s.id = r.service_id
                   JOIN containers c ON c.id = s.container_id);
        ELSE
            UPDATE sites SET dns_serial = dns_serial + 1 WHERE id IN
                (SELECT c.site_id FROM new_rows r JOIN services s ON s.id = r.service_id
                   JOIN containers c ON c.id = s.container_id
                 UNION
                 SELECT c.site_id FROM old_rows r JOIN services s ON s.id = r.service_id
                   JOIN containers c ON c.id = s.container_id);
        END IF;
    END IF;
    RETURN NULL;
END;
$$;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['containers', 'nodes', 'dns_records', 'services', 'dns_services']
    LOOP
        EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON %I REFERENCING NEW TABLE AS new_rows '
                       'FOR EACH STATEMENT EXECUTE FUNCTION siteward_zone_changed()',
                       t || '_dns_serial_ins', t);
        EXECUTE format('CREATE TRIGGER %I AFTER UPDATE ON %I REFERENCING NEW TABLE AS new_rows '
                       'OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION siteward_zone_changed()',
                       t || '_dns_serial_upd', t);
        EXECUTE format('CREATE TRIGGER %I AFTER DELETE ON %I REFERENCING OLD TABLE AS old_rows '
                       'FOR EACH STATEMENT EXECUTE FUNCTION siteward_zone_changed()',
                       t || '_dns_serial_del', t);
        EXECUTE format('CREATE TRIGGER %I AFTER TRUNCATE ON %I '
                       'FOR EACH STATEMENT EXECUTE FUNCTION siteward_zone_changed()',
                       t || '_dns_serial_trunc', t);
    END LOOP;
END;
$$;
