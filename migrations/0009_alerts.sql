-- Balance alerts and the account webhook (see control-plane/src/webhooks/).
ALTER TABLE accounts
    -- `balance.low` is sent when the balance goes below this (credits); null: no alert.
    ADD COLUMN low_balance_threshold numeric CHECK (low_balance_threshold >= 0),
    -- Whether the balance is below the threshold as last seen: an alert is sent once per crossing.
    ADD COLUMN low_balance_alerted boolean NOT NULL DEFAULT false,
    -- Where events are POSTed; null: none.
    ADD COLUMN webhook_url text,
    -- The signing secret is derived from the control plane's WEBHOOK_SIGNING_KEY and this number
    -- (bumped each time the URL is set): no secret is stored.
    ADD COLUMN webhook_secret_version integer NOT NULL DEFAULT 0;
-- Every debit batch looks for the accounts it touched that have a threshold: a probe of this
-- index, as small as the number of accounts with alerts, instead of one per account touched.
CREATE INDEX accounts_with_alerts ON accounts (id) WHERE low_balance_threshold IS NOT NULL;

-- One event for one account's webhook, with its delivery state. `body` is the JSON exactly as
-- signed and sent; `dedupe_key` makes an event that a retried transaction emits again the same one.
CREATE TABLE webhook_events (
    id              uuid PRIMARY KEY,
    account_id      uuid NOT NULL REFERENCES accounts (id),
    type            text NOT NULL,
    body            text NOT NULL,
    url             text NOT NULL,
    dedupe_key      text NOT NULL UNIQUE,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    created_at      timestamptz NOT NULL,
    delivered_at    timestamptz
);
CREATE INDEX webhook_events_due ON webhook_events (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_events_account ON webhook_events (account_id, created_at DESC, id DESC);

-- The delivery log: one row per attempt.
CREATE TABLE webhook_attempts (
    event_id    uuid NOT NULL REFERENCES webhook_events (id),
    attempt     integer NOT NULL,
    at          timestamptz NOT NULL,
    status_code integer,
    error       text,
    duration_ms integer NOT NULL,
    PRIMARY KEY (event_id, attempt)
);
