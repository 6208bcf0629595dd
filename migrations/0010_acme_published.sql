-- Challenge answers an order has published and not yet withdrawn: a TXT record in one of our
-- zones (reference: the dns_records id), an HTTP-01 token, or a Cloudflare record (reference:
-- its id, zone: the Cloudflare zone id). A row is written as soon as the answer exists and
-- removed once it is withdrawn, so what a crashed or killed process left behind is withdrawn by
-- the domain's next order. A deleted domain leaves its notes (domain NULL) for the scheduler,
-- which withdraws what it still can.
CREATE TABLE acme_published (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    external_domain_id  bigint REFERENCES external_domains (id) ON DELETE SET NULL,
    kind                text NOT NULL CHECK (kind IN ('txt', 'http', 'cloudflare')),
    reference           text NOT NULL CHECK (length(reference) BETWEEN 1 AND 256),
    zone                text CHECK (length(zone) BETWEEN 1 AND 256),
    created_at          timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'cloudflare') = (zone IS NOT NULL))
);
CREATE INDEX acme_published_domain ON acme_published (external_domain_id);
