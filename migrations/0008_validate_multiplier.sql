-- The check of usage_records.multiplier (0007) was added NOT VALID, so that adding the column did
-- not scan the table under the ALTER's lock; validating it here takes a lock that lets debits be
-- recorded meanwhile (each migration is a transaction of its own).
ALTER TABLE usage_records VALIDATE CONSTRAINT usage_records_multiplier_check;
