-- Idempotent container requests: a POST repeated with the same Idempotency-Key returns the first
-- result instead of doing the work twice.
CREATE TABLE idempotency_keys (
    uid_number  integer NOT NULL REFERENCES users (uid_number) ON DELETE CASCADE,
    key         text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    status      integer,
    response    jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (uid_number, key)
);
CREATE TRIGGER idempotency_keys_updated_at BEFORE UPDATE ON idempotency_keys
    FOR EACH ROW EXECUTE FUNCTION siteward_set_updated_at();

-- Lifecycle states of containers beyond creation.
ALTER TABLE containers DROP CONSTRAINT containers_status_check;
ALTER TABLE containers ADD CONSTRAINT containers_status_check
    CHECK (status IN ('pending', 'creating', 'running', 'stopped', 'failed', 'deleting'));
