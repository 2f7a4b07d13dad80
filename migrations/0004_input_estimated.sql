-- A partial debit whose response was cut before the upstream reported any input-side usage is
-- billed an input estimated by the gateway from the request body's size (see filter/src/exchange.rs);
-- this marks those records. Earlier records were never estimated.
ALTER TABLE usage_records ADD COLUMN input_estimated boolean NOT NULL DEFAULT false;
