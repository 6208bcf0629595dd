-- A Cloudflare challenge record is noted before it is asked for (`cloudflare-pending`,
-- reference: `<record name> <TXT value>`), and the note becomes `cloudflare` (reference: the
-- record's id) once Cloudflare answers. A process killed between the create and its answer
-- leaves the pending note, so the domain's next order finds the record by name and content and
-- deletes it; before, such a record was made remotely with no note naming it.
ALTER TABLE acme_published DROP CONSTRAINT acme_published_kind_check;
ALTER TABLE acme_published DROP CONSTRAINT acme_published_reference_check;
ALTER TABLE acme_published DROP CONSTRAINT acme_published_check;
ALTER TABLE acme_published
    ADD CONSTRAINT acme_published_kind_check
        CHECK (kind IN ('txt', 'http', 'cloudflare', 'cloudflare-pending')),
    ADD CONSTRAINT acme_published_reference_check
        CHECK (length(reference) BETWEEN 1 AND 512),
    ADD CONSTRAINT acme_published_check
        CHECK ((kind LIKE 'cloudflare%') = (zone IS NOT NULL));
