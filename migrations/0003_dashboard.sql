-- The web dashboard (customers) and console (admins): passwords, one-time password links,
-- server-side sessions and login attempts for rate limiting. Secrets are stored only as hashes:
-- argon2id for passwords, SHA-256 for link and session tokens (both 256-bit random values).

-- A customer's dashboard login. The login email is the account's email, lower-cased, unique here
-- (accounts.email is not unique; two accounts with one email cannot both have a login).
CREATE TABLE customer_logins (
    account_id    uuid PRIMARY KEY REFERENCES accounts (id),
    email_lower   text NOT NULL UNIQUE CHECK (email_lower = lower(email_lower)),
    password_hash text NOT NULL CHECK (password_hash LIKE '$argon2id$%'),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- One-time links an admin generates to set (invite) or reset a password. A new link for an
-- account voids the unused ones before it.
CREATE TABLE password_links (
    token_hash text PRIMARY KEY CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    account_id uuid NOT NULL REFERENCES accounts (id),
    purpose    text NOT NULL CHECK (purpose IN ('invite', 'reset')),
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
CREATE INDEX password_links_account ON password_links (account_id) WHERE used_at IS NULL;

-- Signed-in browsers. `kind` customer has an account; kind admin has the name typed at sign-in and
-- a hash of the admin token it was opened with (a rotated token ends every admin session).
CREATE TABLE web_sessions (
    token_hash       text PRIMARY KEY CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    kind             text NOT NULL CHECK (kind IN ('customer', 'admin')),
    account_id       uuid REFERENCES accounts (id),
    admin_name       text,
    admin_token_hash text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    CHECK ((kind = 'customer') = (account_id IS NOT NULL)),
    CHECK ((kind = 'admin') = (admin_token_hash IS NOT NULL))
);
CREATE INDEX web_sessions_account ON web_sessions (account_id);
CREATE INDEX web_sessions_expires ON web_sessions (expires_at);

-- Failed sign-ins, counted per email and per client address over a sliding window. Rows older
-- than the window are deleted as new failures are written.
CREATE TABLE login_failures (
    id         bigserial PRIMARY KEY,
    scope      text NOT NULL CHECK (scope IN ('customer', 'admin')),
    email      text,
    ip         text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_email ON login_failures (email, created_at) WHERE email IS NOT NULL;
CREATE INDEX login_failures_ip ON login_failures (ip, created_at);
