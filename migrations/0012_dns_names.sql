-- siteward schema, version 12: one owner per name in a site's zone.
--
-- A site's forward zone gets names from several tables: container hostnames and node names (A),
-- static records (`dns_records`), the SRV owners of DNS services, and the name servers' own names
-- (`ns1`, with glue). Before this migration a container named like a node, a static record, a
-- CNAME owner or `ns1` merged its A record into that RRset (or pushed a CNAME out): a name a user
-- chooses reached a place an admin owns. Now every such name is *claimed*, and PostgreSQL refuses
-- a second claimant, so plain SQL obeys the rule as the API does.
--
-- Who may share a name (the `share` of a claim):
--   static     static records other than CNAME (several A/TXT/MX... of one name are one node),
--              and the reserved name-server names (which an admin may give an address with a
--              static A record, but no container or node may take);
--   service    SRV owners of DNS services (`_ldap._tcp`): several containers offering one
--              service form one RRset;
--   container, node, cname
--              exclusive: one holder, nothing beside it (RFC 1034 §3.6.2 for CNAME).
--
-- Two tables: `dns_name_holders` has one row per claimant (deleted with it by foreign keys), and
-- `dns_names` one row per (site, name) with its share and holder count, maintained by a trigger
-- on the holders. Its primary key is what makes two writers exclusive, under any isolation level.
-- A conflict is raised as a unique violation naming a constraint of the writer's table
-- (`containers_dns_name_key`, ...), which the store maps to a 409 naming the field.

-- Names of the name servers, relative to every site's zone. The binary keeps this equal to the
-- relative names in `dns.nameservers` at start; `ns1` is the default.
CREATE TABLE dns_reserved_names (
    name        dns_name PRIMARY KEY CHECK (name = lower(name)),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE dns_names (
    site_id     bigint NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    -- Relative to the zone, lower-case (`@` for the apex).
    name        text NOT NULL CHECK (name = lower(name)),
    share       text NOT NULL CHECK (share IN ('static', 'service', 'container', 'node', 'cname')),
    holders     integer NOT NULL CHECK (holders >= 0),
    PRIMARY KEY (site_id, name)
);

CREATE TABLE dns_name_holders (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site_id         bigint NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    name            text NOT NULL CHECK (name = lower(name)),
    share           text NOT NULL,
    container_id    bigint UNIQUE REFERENCES containers (id) ON DELETE CASCADE,
    node_id         bigint UNIQUE REFERENCES nodes (id) ON DELETE CASCADE,
    record_id       bigint UNIQUE REFERENCES dns_records (id) ON DELETE CASCADE,
    dns_service_id  bigint UNIQUE REFERENCES dns_services (id) ON DELETE CASCADE,
    reserved_name   text REFERENCES dns_reserved_names (name) ON DELETE CASCADE ON UPDATE CASCADE,
    CHECK (num_nonnulls(container_id, node_id, record_id, dns_service_id, reserved_name) = 1),
    UNIQUE (site_id, reserved_name)
);
CREATE INDEX dns_name_holders_name_idx ON dns_name_holders (site_id, name);

-- A holder row takes (or joins) the claim of its name, or raises a unique violation that names
-- the writer's table; deleting or moving it releases the claim.
CREATE FUNCTION siteward_dns_name_holder() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    n integer;
    left_over integer;
    what text;
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        UPDATE dns_names SET holders = holders - 1
         WHERE site_id = OLD.site_id AND name = OLD.name
        RETURNING holders INTO left_over;
        IF left_over = 0 THEN
            DELETE FROM dns_names
             WHERE site_id = OLD.site_id AND name = OLD.name AND holders = 0;
        END IF;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO dns_names AS d (site_id, name, share, holders)
             VALUES (NEW.site_id, NEW.name, NEW.share, 1)
        ON CONFLICT (site_id, name) DO UPDATE SET holders = d.holders + 1
             WHERE d.share = EXCLUDED.share AND d.share IN ('static', 'service');
        GET DIAGNOSTICS n = ROW_COUNT;
        IF n = 0 THEN
            what := CASE
                WHEN NEW.container_id IS NOT NULL THEN 'containers_dns_name_key'
                WHEN NEW.node_id IS NOT NULL THEN 'nodes_dns_name_key'
                WHEN NEW.record_id IS NOT NULL THEN 'dns_records_dns_name_key'
                WHEN NEW.dns_service_id IS NOT NULL THEN 'dns_services_dns_name_key'
                ELSE 'dns_reserved_names_dns_name_key'
            END;
            RAISE EXCEPTION 'the name % is already taken in the zone of site %', NEW.name, NEW.site_id
                USING ERRCODE = 'unique_violation', CONSTRAINT = what,
                      HINT = 'names in a zone are unique across containers, nodes, static records, DNS services and name servers';
        END IF;
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER dns_name_holders_claim AFTER INSERT OR UPDATE OR DELETE ON dns_name_holders
    FOR EACH ROW EXECUTE FUNCTION siteward_dns_name_holder();

-- The claim of each source row. Renames and moves drop the old holder row and add a new one (so a
-- row that held nothing, see the backfill below, claims its name when renamed).
CREATE FUNCTION siteward_dns_claim() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'containers' THEN
        IF TG_OP = 'UPDATE' AND NEW.hostname IS NOT DISTINCT FROM OLD.hostname
           AND NEW.site_id IS NOT DISTINCT FROM OLD.site_id THEN
            RETURN NULL;
        END IF;
        DELETE FROM dns_name_holders WHERE container_id = NEW.id;
        INSERT INTO dns_name_holders (site_id, name, share, container_id)
             VALUES (NEW.site_id, lower(NEW.hostname), 'container', NEW.id);
        IF TG_OP = 'UPDATE' AND NEW.site_id IS DISTINCT FROM OLD.site_id THEN
            -- Its DNS services move with it.
            DELETE FROM dns_name_holders h USING services s, dns_services d
             WHERE s.container_id = NEW.id AND d.service_id = s.id AND h.dns_service_id = d.id;
            INSERT INTO dns_name_holders (site_id, name, share, dns_service_id)
                 SELECT NEW.site_id, lower(d.service_name), 'service', d.id
                   FROM services s JOIN dns_services d ON d.service_id = s.id
                  WHERE s.container_id = NEW.id;
        END IF;
    ELSIF TG_TABLE_NAME = 'nodes' THEN
        IF TG_OP = 'UPDATE' AND NEW.name IS NOT DISTINCT FROM OLD.name
           AND NEW.site_id IS NOT DISTINCT FROM OLD.site_id THEN
            RETURN NULL;
        END IF;
        DELETE FROM dns_name_holders WHERE node_id = NEW.id;
        INSERT INTO dns_name_holders (site_id, name, share, node_id)
             VALUES (NEW.site_id, lower(NEW.name), 'node', NEW.id);
    ELSIF TG_TABLE_NAME = 'dns_records' THEN
        IF TG_OP = 'UPDATE' AND NEW.name IS NOT DISTINCT FROM OLD.name
           AND NEW.type IS NOT DISTINCT FROM OLD.type
           AND NEW.site_id IS NOT DISTINCT FROM OLD.site_id THEN
            RETURN NULL;
        END IF;
        DELETE FROM dns_name_holders WHERE record_id = NEW.id;
        INSERT INTO dns_name_holders (site_id, name, share, record_id)
             VALUES (NEW.site_id, lower(NEW.name),
                     CASE WHEN NEW.type = 'CNAME' THEN 'cname' ELSE 'static' END, NEW.id);
    ELSIF TG_TABLE_NAME = 'dns_services' THEN
        IF TG_OP = 'UPDATE' AND NEW.service_name IS NOT DISTINCT FROM OLD.service_name
           AND NEW.service_id IS NOT DISTINCT FROM OLD.service_id THEN
            RETURN NULL;
        END IF;
        DELETE FROM dns_name_holders WHERE dns_service_id = NEW.id;
        INSERT INTO dns_name_holders (site_id, name, share, dns_service_id)
             SELECT c.site_id, lower(NEW.service_name), 'service', NEW.id
               FROM services s JOIN containers c ON c.id = s.container_id
              WHERE s.id = NEW.service_id;
    ELSIF TG_TABLE_NAME = 'services' THEN
        IF NEW.container_id IS NOT DISTINCT FROM OLD.container_id THEN
            RETURN NULL;
        END IF;
        DELETE FROM dns_name_holders h USING dns_services d
         WHERE d.service_id = NEW.id AND h.dns_service_id = d.id;
        INSERT INTO dns_name_holders (site_id, name, share, dns_service_id)
             SELECT c.site_id, lower(d.service_name), 'service', d.id
               FROM dns_services d JOIN containers c ON c.id = NEW.container_id
              WHERE d.service_id = NEW.id;
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER containers_dns_name AFTER INSERT OR UPDATE OF hostname, site_id ON containers
    FOR EACH ROW EXECUTE FUNCTION siteward_dns_claim();
CREATE TRIGGER nodes_dns_name AFTER INSERT OR UPDATE OF name, site_id ON nodes
    FOR EACH ROW EXECUTE FUNCTION siteward_dns_claim();
CREATE TRIGGER dns_records_dns_name AFTER INSERT OR UPDATE OF name, type, site_id ON dns_records
    FOR EACH ROW EXECUTE FUNCTION siteward_dns_claim();
CREATE TRIGGER dns_services_dns_name AFTER INSERT OR UPDATE OF service_name, service_id
    ON dns_services FOR EACH ROW EXECUTE FUNCTION siteward_dns_claim();
CREATE TRIGGER services_dns_name AFTER UPDATE OF container_id ON services
    FOR EACH ROW EXECUTE FUNCTION siteward_dns_claim();

-- Reserved names are claimed in every site. A new site has nothing to conflict with; a name
-- reserved later is skipped (with a warning) in a site where something already holds it, and
-- the zone still gives the name server its glue (see docs/dns.md).
CREATE FUNCTION siteward_dns_reserve() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    IF TG_TABLE_NAME = 'sites' THEN
        INSERT INTO dns_name_holders (site_id, name, share, reserved_name)
             SELECT NEW.id, name, 'static', name FROM dns_reserved_names;
    ELSE
        FOR r IN SELECT id FROM sites ORDER BY id LOOP
            BEGIN
                INSERT INTO dns_name_holders (site_id, name, share, reserved_name)
                     VALUES (r.id, NEW.name, 'static', NEW.name);
            EXCEPTION WHEN unique_violation THEN
                RAISE WARNING 'name server name % is already taken in site %; not reserved there',
                    NEW.name, r.id;
            END;
        END LOOP;
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER sites_dns_reserved AFTER INSERT ON sites
    FOR EACH ROW EXECUTE FUNCTION siteward_dns_reserve();
CREATE TRIGGER dns_reserved_names_claim AFTER INSERT ON dns_reserved_names
    FOR EACH ROW EXECUTE FUNCTION siteward_dns_reserve();

-- A CNAME at the apex would sit beside the SOA and NS records. NOT VALID: existing rows stay (the
-- zone drops such a CNAME, as before), new ones are refused.
ALTER TABLE dns_records ADD CONSTRAINT dns_records_apex_cname_check
    CHECK (NOT (type = 'CNAME' AND name = '@')) NOT VALID;

-- Backfill. Existing rows claim their names in the order the zone builder gives them precedence:
-- name servers, nodes, static records (CNAMEs last), DNS services, containers. A row whose name
-- is taken already is kept but holds nothing: it is reported here and in `dns_name_conflicts`,
-- and the zone serves the earlier holder only. Rename it (or remove the other) to resolve.
INSERT INTO dns_reserved_names (name) VALUES ('ns1');

DO $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT 1 AS rank, id, site_id, lower(name) AS name, 'node' AS share,
               id AS node_id, NULL::bigint AS record_id, NULL::bigint AS dns_service_id,
               NULL::bigint AS container_id
          FROM nodes
        UNION ALL
        SELECT CASE WHEN type = 'CNAME' THEN 3 ELSE 2 END, id, site_id, lower(name),
               CASE WHEN type = 'CNAME' THEN 'cname' ELSE 'static' END, NULL, id, NULL, NULL
          FROM dns_records
        UNION ALL
        SELECT 4, d.id, c.site_id, lower(d.service_name), 'service', NULL, NULL, d.id, NULL
          FROM dns_services d JOIN services s ON s.id = d.service_id
          JOIN containers c ON c.id = s.container_id
        UNION ALL
        SELECT 5, id, site_id, lower(hostname), 'container', NULL, NULL, NULL, id
          FROM containers
        ORDER BY rank, id
    LOOP
        BEGIN
            INSERT INTO dns_name_holders
                   (site_id, name, share, node_id, record_id, dns_service_id, container_id)
                 VALUES (r.site_id, r.name, r.share, r.node_id, r.record_id, r.dns_service_id,
                         r.container_id);
        EXCEPTION WHEN unique_violation THEN
            RAISE WARNING '% % (%) conflicts with another name in the zone of site %; see dns_name_conflicts',
                r.share, r.id, r.name, r.site_id;
        END;
    END LOOP;
END;
$$;

-- Rows that hold no name (left over from before this migration, or a name server name reserved
-- after something took it): what an operator has to rename.
CREATE VIEW dns_name_conflicts AS
    SELECT 'container' AS kind, c.id, c.site_id, lower(c.hostname) AS name
      FROM containers c
     WHERE NOT EXISTS (SELECT 1 FROM dns_name_holders h WHERE h.container_id = c.id)
    UNION ALL
    SELECT 'node', n.id, n.site_id, lower(n.name)
      FROM nodes n
     WHERE NOT EXISTS (SELECT 1 FROM dns_name_holders h WHERE h.node_id = n.id)
    UNION ALL
    SELECT 'dns_record', r.id, r.site_id, r.name
      FROM dns_records r
     WHERE NOT EXISTS (SELECT 1 FROM dns_name_holders h WHERE h.record_id = r.id)
    UNION ALL
    SELECT 'dns_service', d.id, c.site_id, lower(d.service_name)
      FROM dns_services d JOIN services s ON s.id = d.service_id
      JOIN containers c ON c.id = s.container_id
     WHERE NOT EXISTS (SELECT 1 FROM dns_name_holders h WHERE h.dns_service_id = d.id)
    UNION ALL
    SELECT 'reserved', NULL, s.id, rn.name
      FROM sites s CROSS JOIN dns_reserved_names rn
     WHERE NOT EXISTS (SELECT 1 FROM dns_name_holders h
                        WHERE h.site_id = s.id AND h.reserved_name = rn.name);
