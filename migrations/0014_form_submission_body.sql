-- What the first submission of a form sent (SHA-256 of its body): a resend of the same form with
-- other values (Back, an edit, send) is told that its edit was not applied, instead of being
-- shown the first result as if it were its own (see control-plane/src/dashboard/form.rs).
ALTER TABLE form_submissions ADD COLUMN body_hash text CHECK (body_hash ~ '^[0-9a-f]{64}$');
