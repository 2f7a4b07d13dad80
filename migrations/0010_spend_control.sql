-- Spend control (see metering/src/ceiling.rs and filter/src/holds.rs).
-- `reserve`: a billed request is admitted only if its ceiling fits the spendable balance;
-- `balance`: admitted while the balance is above zero. New accounts take SPEND_CONTROL's value.
ALTER TABLE accounts
    ADD COLUMN spend_control text NOT NULL DEFAULT 'reserve' CHECK (spend_control IN ('reserve', 'balance'));

-- What each gateway's requests in flight hold, per account, as its last report said. Reports
-- replace each other every sync period and are worthless after a crash (the gateways report again
-- within a second), so the table is not WAL-logged.
CREATE UNLOGGED TABLE gateway_holds (
    gateway     uuid NOT NULL,
    account_id  uuid NOT NULL,
    credits     numeric NOT NULL CHECK (credits > 0),
    reported_at timestamptz NOT NULL,
    PRIMARY KEY (gateway, account_id)
);
CREATE INDEX gateway_holds_by_time ON gateway_holds (reported_at);
