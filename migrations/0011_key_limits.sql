-- Key limits (see metering/src/keylimit.rs and control-plane/src/keys.rs).
ALTER TABLE api_keys
    -- Credits the key may spend per period; null: no limit (then period is null too).
    ADD COLUMN limit_credits numeric CHECK (limit_credits > 0),
    ADD COLUMN limit_period text CHECK (limit_period IN ('day', 'week', 'month', 'total')),
    -- The end of the current period as the gateways were last told (null: no limit, or `total`).
    -- When it passes, the key is re-versioned so that gateways get the new period's budget.
    ADD COLUMN limit_resets_at timestamptz,
    -- Whether key.limit_reached was sent for the period starting at this instant (epoch: `total`).
    ADD COLUMN limit_alerted_for timestamptz,
    -- Model ids, families or `prefix*` patterns the key may use; empty: every model.
    ADD COLUMN allowed_models text[] NOT NULL DEFAULT '{}',
    ADD COLUMN expires_at timestamptz,
    ADD CONSTRAINT api_keys_limit_whole CHECK ((limit_credits IS NULL) = (limit_period IS NULL));

-- Spend of a key over its period, and its last use: one index range per key.
CREATE INDEX usage_key_time ON usage_records (key_id, admitted_at) INCLUDE (cost);
-- Keys whose period is due to end: a probe as small as the number of limited keys.
CREATE INDEX api_keys_limit_resets ON api_keys (limit_resets_at) WHERE limit_resets_at IS NOT NULL;

-- The first instant of the period holding `at` (UTC calendar day, ISO week from Monday, month);
-- the epoch for `total` (and for no period). Agrees with metering::keylimit::LimitPeriod::bounds
-- (tested).
CREATE FUNCTION key_period_start(period text, at timestamptz) RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT CASE period
        WHEN 'day' THEN date_trunc('day', at, 'UTC')
        WHEN 'week' THEN date_trunc('week', at, 'UTC')
        WHEN 'month' THEN date_trunc('month', at, 'UTC')
        ELSE 'epoch'::timestamptz
    END
$$;

-- The first instant of the next period (null for `total` and for no period).
CREATE FUNCTION key_period_end(period text, at timestamptz) RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT CASE period
        WHEN 'day' THEN (date_trunc('day', at, 'UTC') AT TIME ZONE 'UTC' + interval '1 day') AT TIME ZONE 'UTC'
        WHEN 'week' THEN (date_trunc('week', at, 'UTC') AT TIME ZONE 'UTC' + interval '7 days') AT TIME ZONE 'UTC'
        WHEN 'month' THEN (date_trunc('month', at, 'UTC') AT TIME ZONE 'UTC' + interval '1 month') AT TIME ZONE 'UTC'
    END
$$;
