-- Single-use form tokens of the dashboard and the console (see control-plane/src/dashboard/form.rs).
-- Every form that changes something carries a fresh random token; its first submission claims the
-- row, does the change and records where its result is shown. A second submission of the same
-- token (a refresh of the result, a double click, the Back button) changes nothing: it is sent to
-- the first one's result. Rows are kept a day.
CREATE TABLE form_submissions (
    token_hash   text PRIMARY KEY CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    -- Shown on the result page's address (`?done=`): not the token.
    id           uuid NOT NULL UNIQUE,
    -- The session that submitted it (its token's hash): only that session sees the result.
    session_hash text NOT NULL CHECK (session_hash ~ '^[0-9a-f]{64}$'),
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- Set once the change is done (null while it runs).
    done_at      timestamptz,
    -- The page that shows the result, and the result in words (never a secret).
    location     text,
    notice       text,
    -- A secret to show once on the result page (a new API key, a password link), sealed with a key
    -- derived from the session's token, which only the browser's cookie holds: the database alone
    -- cannot read it. Cleared when shown.
    sealed       bytea
);
CREATE INDEX form_submissions_created ON form_submissions (created_at);
