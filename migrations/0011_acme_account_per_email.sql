-- One ACME account per directory *and* contact e-mail: domains whose `acme_email` differ get
-- accounts of their own (the CA's notices go to each domain's own contact). E-mails compare
-- case-insensitively; no e-mail is its own key.
ALTER TABLE acme_accounts DROP CONSTRAINT acme_accounts_directory_key;
CREATE UNIQUE INDEX acme_accounts_directory_email
    ON acme_accounts (directory, (coalesce(lower(email), '')));
