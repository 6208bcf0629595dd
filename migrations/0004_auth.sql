-- Sign-in and the edge: which groups may reach an HTTP service behind auth_request.
-- An empty list means every signed-in, active user.
ALTER TABLE http_services ADD COLUMN allowed_groups text[] NOT NULL DEFAULT '{}';
