-- Names and ports the edge NGINX itself serves: no service may take them (issue #13, items 2,
-- 3 and 12). The renderer skips any service that still would (rows older than this migration,
-- or a reservation added later), so siteward's own servers are never replaced.

-- Host labels reserved under every external domain: the sign-in host's label (the first label
-- of `http.public_url`'s host, which names the sign-in host of every domain). Each siteward
-- process adds the labels its configuration derives when it starts; rows are never removed on
-- their own (a changed public URL leaves the old label reserved until an operator deletes it).
CREATE TABLE edge_reserved_labels (
    label       dns_label PRIMARY KEY CHECK (label = lower(label)),
    reason      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Ports the edge listens on for HTTP(S), for TCP and UDP alike: 80 and 443 from here on; each
-- process adds the port of its `http.public_url` and its `http.edge_ports` when it starts.
CREATE TABLE edge_reserved_ports (
    port        tcp_port PRIMARY KEY,
    reason      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO edge_reserved_ports (port, reason) VALUES
    (80, 'edge HTTP (ACME HTTP-01, redirects)'),
    (443, 'edge HTTPS (sign-in hosts, HTTP services)');

-- An HTTP service may not be a sign-in host (a reserved label under any domain) nor the apex of
-- another external domain (`lab` under `example.org` when `lab.example.org` is a domain of its
-- own: its HTTP-01 server, catch-all and possibly its sign-in host). `.well-known` and every
-- other path of the edge's own servers cannot be named by a service: a service is a host, and
-- only on the TLS port; port 80 of every host belongs to the edge (HTTP-01, redirects).
CREATE FUNCTION siteward_http_service_not_reserved() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    fqdn text;
BEGIN
    IF EXISTS (SELECT 1 FROM edge_reserved_labels WHERE label = lower(NEW.external_hostname)) THEN
        RAISE EXCEPTION 'external_hostname % is reserved for the edge''s sign-in host',
                        NEW.external_hostname
            USING ERRCODE = 'unique_violation', CONSTRAINT = 'http_services_edge_reserved';
    END IF;
    SELECT lower(NEW.external_hostname) || '.' || lower(domain) INTO fqdn
      FROM external_domains WHERE id = NEW.external_domain_id;
    IF fqdn IS NOT NULL AND EXISTS (SELECT 1 FROM external_domains WHERE lower(domain) = fqdn) THEN
        RAISE EXCEPTION '% is an external domain of its own', fqdn
            USING ERRCODE = 'unique_violation', CONSTRAINT = 'http_services_edge_reserved';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER http_services_edge_reserved
    BEFORE INSERT OR UPDATE OF external_hostname, external_domain_id ON http_services
    FOR EACH ROW EXECUTE FUNCTION siteward_http_service_not_reserved();

CREATE FUNCTION siteward_transport_port_not_reserved() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM edge_reserved_ports WHERE port = NEW.external_port) THEN
        RAISE EXCEPTION 'external_port % is a port of the edge itself', NEW.external_port
            USING ERRCODE = 'unique_violation', CONSTRAINT = 'transport_services_edge_reserved_port';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER transport_services_edge_reserved_port
    BEFORE INSERT OR UPDATE OF external_port ON transport_services
    FOR EACH ROW EXECUTE FUNCTION siteward_transport_port_not_reserved();

-- The edge no longer terminates TLS for transport services: it would present the domain's
-- certificate, which covers every host the session cookie is sent to, on a port whose plaintext
-- goes to the container (browsers send cookies to any port). NOT VALID: rows from before stay
-- (the renderer leaves them out, never serving them in the clear); new rows and updates obey.
ALTER TABLE transport_services
    ADD CONSTRAINT transport_services_no_edge_tls CHECK (NOT use_tls) NOT VALID;
