-- Templates (#13): a container is made only from what an administrator made a template on
-- Proxmox: a `vztmpl` volume on the node's image storage, or a container with `template: 1`.
-- The API and the job check that against Proxmox; the database refuses any other shape of
-- `containers.template`, so a backup, an ISO, a snippet, a disk image, a path or `..` is never
-- stored as a template, whoever writes (API, CLI or plain SQL).
--
-- The same rule as `TemplateRef::parse` in admin/src/templates.rs:
--   a VMID 100..999999999, or
--   <storage>:vztmpl/<file>.tar[.gz|.xz|.zst|.bz2], storage a PVE storage id in lower case,
--   file of letters, digits and - . _ + =, not starting with a dot, no `..` anywhere.
CREATE FUNCTION siteward_template_shape_ok(t text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT t IS NULL
        OR (length(t) <= 255
            AND position('..' IN t) = 0
            AND (t ~ '^[1-9][0-9]{2,8}$'
                 OR t ~ '^[a-z][a-z0-9._-]*[a-z0-9]:vztmpl/[A-Za-z0-9_+=-][A-Za-z0-9._+=-]*\.tar(\.(gz|xz|zst|bz2))?$'))
$$;

-- A trigger rather than a CHECK: rows written before this migration keep whatever they hold
-- (they are labels of containers that exist) and can still change status; a new or changed
-- template must have the shape.
CREATE FUNCTION siteward_containers_template_check() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF (TG_OP = 'INSERT' OR NEW.template IS DISTINCT FROM OLD.template)
       AND NOT siteward_template_shape_ok(NEW.template) THEN
        RAISE EXCEPTION 'template must be a CT template volume (<storage>:vztmpl/<file>) or the VMID of a template container'
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = 'containers_template_check',
                  TABLE = 'containers',
                  COLUMN = 'template';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER containers_template_check BEFORE INSERT OR UPDATE OF template ON containers
    FOR EACH ROW EXECUTE FUNCTION siteward_containers_template_check();
