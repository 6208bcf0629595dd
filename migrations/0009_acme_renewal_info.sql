-- ACME Renewal Information (RFC 9773): the window the CA suggests for renewing a certificate,
-- its explanation, and when to ask the CA again. NULL window: the CA gave none (or has no ARI).
ALTER TABLE certificates
    ADD COLUMN ari_window_start  timestamptz,
    ADD COLUMN ari_window_end    timestamptz,
    ADD COLUMN ari_explanation   text,
    ADD COLUMN ari_next_check_at timestamptz,
    ADD CONSTRAINT certificates_ari_window
        CHECK ((ari_window_start IS NULL) = (ari_window_end IS NULL)
               AND (ari_window_end IS NULL OR ari_window_end >= ari_window_start));
