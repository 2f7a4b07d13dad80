-- The control plane's schema: customer accounts, API keys, a double-entry credit ledger,
-- usage records, effective-dated prices, plans, the audit log and the sync version counter.
--
-- Money and credits are NUMERIC without a declared scale, checked to at most 18 fractional digits:
-- exact like NUMERIC(38,18), but a value keeps its own scale (6.489 stays 6.489), so it always fits
-- rust_decimal's 28 significant digits when read back (a fixed scale of 18 would not above 1e10).

-- One row: the commit-ordered sync version. Every transaction that changes keys, accounts or
-- prices increments it as its last statement but one, so versions are handed out in commit order.
CREATE TABLE sync_state (
    id             boolean PRIMARY KEY DEFAULT true CHECK (id),
    version        bigint  NOT NULL DEFAULT 0 CHECK (version >= 0),
    prices_version bigint  NOT NULL DEFAULT 0 CHECK (prices_version >= 0)
);
INSERT INTO sync_state (id) VALUES (true);

CREATE TABLE accounts (
    id         uuid PRIMARY KEY,
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    email      text NOT NULL CHECK (length(email) BETWEEN 3 AND 254),
    status     text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX accounts_created ON accounts (created_at DESC, id DESC);

-- Customer accounts (id = accounts.id) and system accounts (a code, no customer). The balance and
-- the sync version of a customer's spendable state live here, next to each other.
CREATE TABLE ledger_accounts (
    id           uuid PRIMARY KEY,
    account_id   uuid UNIQUE REFERENCES accounts (id),
    code         text UNIQUE,
    balance      numeric NOT NULL DEFAULT 0 CHECK (scale(balance) <= 18),
    sync_version bigint NOT NULL DEFAULT 0,
    CHECK ((account_id IS NULL) <> (code IS NULL)),
    CHECK (account_id IS NULL OR account_id = id)
);
CREATE INDEX ledger_accounts_sync ON ledger_accounts (sync_version, id) WHERE account_id IS NOT NULL;
INSERT INTO ledger_accounts (id, code) VALUES
    ('00000000-0000-0000-0000-000000000001', 'issuance'),
    ('00000000-0000-0000-0000-000000000002', 'usage_revenue'),
    ('00000000-0000-0000-0000-000000000003', 'sales');

CREATE TABLE api_keys (
    id           uuid PRIMARY KEY,
    account_id   uuid NOT NULL REFERENCES accounts (id),
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    key_hash     text NOT NULL UNIQUE CHECK (key_hash ~ '^[0-9a-f]{64}$'),
    prefix       text NOT NULL,
    status       text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    sync_version bigint NOT NULL
);
CREATE INDEX api_keys_account ON api_keys (account_id, created_at DESC, id DESC);
CREATE INDEX api_keys_sync ON api_keys (sync_version, id);

-- A movement of credits from one ledger account to another. The idempotency key is unique within
-- its scope (admin, debit, payment); the fingerprint is a hash of the content, so a replay with the
-- same key can be told apart from a conflicting reuse.
CREATE TABLE transfers (
    id              uuid PRIMARY KEY,
    scope           text NOT NULL CHECK (scope IN ('admin', 'debit', 'payment')),
    idempotency_key text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    kind            text NOT NULL CHECK (kind IN ('grant', 'correction', 'usage', 'purchase', 'refund')),
    from_account    uuid NOT NULL REFERENCES ledger_accounts (id),
    to_account      uuid NOT NULL REFERENCES ledger_accounts (id),
    amount          numeric NOT NULL CHECK (amount > 0 AND scale(amount) <= 18),
    reason          text,
    actor           text NOT NULL,
    fingerprint     text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (scope, idempotency_key),
    CHECK (from_account <> to_account)
);

-- Two entries per transfer: minus on the source, plus on the destination, each with the balance of
-- its ledger account right after it.
CREATE TABLE entries (
    id                bigserial PRIMARY KEY,
    transfer_id       uuid NOT NULL REFERENCES transfers (id),
    ledger_account_id uuid NOT NULL REFERENCES ledger_accounts (id),
    amount            numeric NOT NULL CHECK (amount <> 0 AND scale(amount) <= 18),
    balance_after     numeric NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX entries_account ON entries (ledger_account_id, id DESC);
CREATE INDEX entries_transfer ON entries (transfer_id);

-- Transfers and entries are append-only: corrections are new transfers.
CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only: % on % refused', TG_OP, TG_TABLE_NAME;
END $$;
CREATE TRIGGER transfers_append_only BEFORE UPDATE OR DELETE ON transfers
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER entries_append_only BEFORE UPDATE OR DELETE ON entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();

-- The control plane inserts both entries of a transfer in one statement; this checks, once per
-- statement, that every transfer touched has exactly two entries that sum to zero and match it.
CREATE FUNCTION entries_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE bad uuid;
BEGIN
    SELECT n.transfer_id INTO bad
    FROM (SELECT DISTINCT transfer_id FROM new_entries) n
    JOIN transfers t ON t.id = n.transfer_id
    JOIN LATERAL (
        SELECT count(*) AS c, sum(e.amount) AS s,
               bool_and((e.amount < 0 AND e.ledger_account_id = t.from_account AND -e.amount = t.amount)
                     OR (e.amount > 0 AND e.ledger_account_id = t.to_account AND e.amount = t.amount)) AS ok
        FROM entries e WHERE e.transfer_id = n.transfer_id
    ) x ON true
    WHERE x.c <> 2 OR x.s <> 0 OR NOT x.ok
    LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'transfer % does not have two balanced entries', bad;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER entries_balanced AFTER INSERT ON entries
    REFERENCING NEW TABLE AS new_entries
    FOR EACH STATEMENT EXECUTE FUNCTION entries_balanced();

-- One served request, as the gateway metered it. Never any content.
CREATE TABLE usage_records (
    debit_id              uuid PRIMARY KEY,
    account_id            uuid NOT NULL REFERENCES accounts (id),
    key_id                uuid NOT NULL REFERENCES api_keys (id),
    transfer_id           uuid REFERENCES transfers (id),
    route                 text NOT NULL,
    model_requested       text NOT NULL,
    model_served          text,
    model_billed          text NOT NULL,
    price_version         text NOT NULL,
    input_tokens          bigint NOT NULL CHECK (input_tokens >= 0),
    output_tokens         bigint NOT NULL CHECK (output_tokens >= 0),
    thinking_tokens       bigint NOT NULL CHECK (thinking_tokens >= 0),
    cache_write_5m_tokens bigint NOT NULL CHECK (cache_write_5m_tokens >= 0),
    cache_write_1h_tokens bigint NOT NULL CHECK (cache_write_1h_tokens >= 0),
    cache_read_tokens     bigint NOT NULL CHECK (cache_read_tokens >= 0),
    web_search_requests   bigint NOT NULL CHECK (web_search_requests >= 0),
    web_fetch_requests    bigint NOT NULL CHECK (web_fetch_requests >= 0),
    service_tier          text,
    cost                  numeric NOT NULL CHECK (cost >= 0),
    list_usd              numeric NOT NULL CHECK (list_usd >= 0),
    partial               boolean NOT NULL,
    output_estimated      boolean NOT NULL,
    served_model_unpriced boolean NOT NULL,
    admitted_at           timestamptz NOT NULL,
    finished_at           timestamptz,
    upstream_request_id   text,
    upstream_message_id   text,
    upstream_status       integer,
    gateway_id            text,
    fingerprint           text NOT NULL,
    sync_version          bigint NOT NULL,
    recorded_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX usage_account_time ON usage_records (account_id, admitted_at DESC, debit_id DESC);
CREATE INDEX usage_time ON usage_records (admitted_at);

-- Official prices (USD per million tokens), one row per version of a model family.
CREATE TABLE price_versions (
    id             uuid PRIMARY KEY,
    model          text NOT NULL,
    effective_from timestamptz NOT NULL,
    entry          jsonb NOT NULL,
    actor          text NOT NULL,
    reason         text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    sync_version   bigint NOT NULL,
    UNIQUE (model, effective_from)
);

CREATE TABLE plans (
    id         uuid PRIMARY KEY,
    name       text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
    credits    numeric NOT NULL CHECK (credits > 0 AND scale(credits) <= 18),
    price_usd  numeric NOT NULL CHECK (price_usd > 0 AND scale(price_usd) <= 2),
    active     boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO plans (id, name, credits, price_usd) VALUES
    ('8f1c7a52-0d6e-4c41-9a7e-000000001000', '1,000 credits', 1000, 5),
    ('8f1c7a52-0d6e-4c41-9a7e-000000010000', '10,000 credits', 10000, 50),
    ('8f1c7a52-0d6e-4c41-9a7e-000000105000', '105,000 credits', 105000, 500),
    ('8f1c7a52-0d6e-4c41-9a7e-000000275000', '275,000 credits', 275000, 1250);

CREATE TABLE audit_log (
    id         bigserial PRIMARY KEY,
    actor      text NOT NULL,
    action     text NOT NULL,
    target     text NOT NULL,
    reason     text,
    details    jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_target ON audit_log (target, id DESC);
