-- The customer's balance history names the request behind each usage transfer: one index probe
-- per row instead of a scan of every usage record (see control-plane/src/dashboard/account.rs).
CREATE INDEX IF NOT EXISTS usage_records_transfer ON usage_records (transfer_id) WHERE transfer_id IS NOT NULL;
