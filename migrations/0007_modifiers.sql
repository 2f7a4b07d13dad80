-- What the December 2026 API bills beyond the five token categories (see metering/src/cost.rs):
-- each usage record keeps the modifiers billed, their combined multiplier, what the request asked
-- for, and the answer's per-iteration usage.
ALTER TABLE usage_records
    -- The `speed` and `inference_geo` billed: the answer's report where the price has it, else
    -- the request's, else the upstream's default; a reported value without a price is kept as
    -- reported (billed x1). Null: none.
    ADD COLUMN speed text,
    ADD COLUMN inference_geo text,
    -- The product of their multipliers on the top-level usage; earlier records had none.
    ADD COLUMN multiplier numeric NOT NULL DEFAULT 1,
    -- `{"speed", "inference_geo", "code_execution"}` as the request asked; null: nothing.
    ADD COLUMN requested jsonb,
    -- `usage.iterations` as the answer reported them (type, model, counts); null: none.
    ADD COLUMN iterations jsonb,
    -- The answer named a modifier value or an iteration model without a price (billed as
    -- unreported, or at the served model's rates): the price table needs it.
    ADD COLUMN unpriced_report boolean NOT NULL DEFAULT false;
-- Checked for new rows at once; the existing ones (all 1) are validated by 0008 without holding
-- this statement's lock over a scan of the table.
ALTER TABLE usage_records ADD CONSTRAINT usage_records_multiplier_check CHECK (multiplier >= 1) NOT VALID;

-- The shipped price tables applied to this database, each once (metering::price::DEFAULT_TABLES).
-- A database seeded before this table existed was seeded from the November 2026 table.
CREATE TABLE price_seeds (
    source     text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO price_seeds (source) SELECT 'prices-2026-11' WHERE EXISTS (SELECT 1 FROM price_versions);
