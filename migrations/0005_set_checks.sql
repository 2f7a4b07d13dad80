-- The ledger's references are checked once per statement instead of once per row.
--
-- A debit batch of n debits writes n transfers, 2n entries and n usage records. Their foreign keys
-- cost a row-level check each, nine per debit, most of the ledger's write time. They are replaced
-- by set-based checks run once per statement, and by triggers that make the rows they name
-- permanent (no delete, no truncate, no new id), which the foreign keys guaranteed while a
-- reference existed:
-- - entries: `entries_balanced` now also refuses an entry whose transfer does not exist (checked
--   first), and it requires each entry's account to be its transfer's `from_account` or
--   `to_account`;
-- - transfers: both ledger accounts must exist (`transfers_refs`);
-- - usage records: the account, the key and the transfer, when there is one (`usage_records_refs`).
-- Errors keep the foreign-key SQLSTATE (23503).
--
-- Each existence check is a correlated scalar subquery per new row, which PostgreSQL can only run
-- as an index probe: as NOT EXISTS or a join the planner hashes the whole referenced table once
-- per statement (74 ms per batch at 100,000 ledger accounts instead of 7 ms), a cost that would
-- grow with the number of accounts.
ALTER TABLE entries
    DROP CONSTRAINT entries_transfer_id_fkey,
    DROP CONSTRAINT entries_ledger_account_id_fkey;

CREATE OR REPLACE FUNCTION entries_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE bad uuid;
BEGIN
    -- Two queries, so that a missing transfer is always the error reported first (one LEFT JOIN
    -- ordered by it ran 20 times slower on a ledger of 500,000 transfers).
    SELECT n.transfer_id INTO bad
    FROM (SELECT DISTINCT transfer_id FROM new_entries) n
    WHERE (SELECT true FROM transfers t WHERE t.id = n.transfer_id) IS NULL
    LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'entry names transfer % which does not exist', bad
            USING ERRCODE = 'foreign_key_violation';
    END IF;
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

ALTER TABLE transfers
    DROP CONSTRAINT transfers_from_account_fkey,
    DROP CONSTRAINT transfers_to_account_fkey;

CREATE FUNCTION transfers_refs() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE bad uuid;
BEGIN
    SELECT n.id INTO bad
    FROM new_transfers n
    WHERE (SELECT true FROM ledger_accounts a WHERE a.id = n.from_account) IS NULL
       OR (SELECT true FROM ledger_accounts a WHERE a.id = n.to_account) IS NULL
    LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'transfer % names a ledger account that does not exist', bad
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER transfers_refs AFTER INSERT ON transfers
    REFERENCING NEW TABLE AS new_transfers
    FOR EACH STATEMENT EXECUTE FUNCTION transfers_refs();

ALTER TABLE usage_records
    DROP CONSTRAINT usage_records_account_id_fkey,
    DROP CONSTRAINT usage_records_key_id_fkey,
    DROP CONSTRAINT usage_records_transfer_id_fkey;

CREATE FUNCTION usage_records_refs() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE bad uuid;
BEGIN
    SELECT n.debit_id INTO bad
    FROM new_usage n
    WHERE (SELECT true FROM accounts a WHERE a.id = n.account_id) IS NULL
       OR (SELECT true FROM api_keys k WHERE k.id = n.key_id) IS NULL
       OR (n.transfer_id IS NOT NULL AND (SELECT true FROM transfers t WHERE t.id = n.transfer_id) IS NULL)
    LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'usage record % names an account, key or transfer that does not exist', bad
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER usage_records_refs AFTER INSERT ON usage_records
    REFERENCING NEW TABLE AS new_usage
    FOR EACH STATEMENT EXECUTE FUNCTION usage_records_refs();

-- A usage record's references never change (the foreign keys also checked updates).
CREATE FUNCTION usage_records_refs_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.account_id IS DISTINCT FROM OLD.account_id
       OR NEW.key_id IS DISTINCT FROM OLD.key_id
       OR NEW.transfer_id IS DISTINCT FROM OLD.transfer_id THEN
        RAISE EXCEPTION 'usage record %: its account, key and transfer never change', OLD.debit_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER usage_records_refs_fixed BEFORE UPDATE OF account_id, key_id, transfer_id ON usage_records
    FOR EACH ROW EXECUTE FUNCTION usage_records_refs_fixed();

-- What the ledger names is permanent: accounts are closed, keys revoked, never deleted (a delete
-- is refused per row, so one that matches nothing still succeeds; a truncate always fails).
CREATE FUNCTION ledger_referenced_permanent() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% on % refused: its rows are named by the ledger and kept forever', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'foreign_key_violation';
END $$;
CREATE FUNCTION ledger_referenced_id_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.id IS DISTINCT FROM OLD.id THEN
        RAISE EXCEPTION 'the id of a row of % never changes: the ledger names it', TG_TABLE_NAME
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER accounts_kept BEFORE DELETE ON accounts
    FOR EACH ROW EXECUTE FUNCTION ledger_referenced_permanent();
CREATE TRIGGER accounts_permanent BEFORE TRUNCATE ON accounts
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_referenced_permanent();
CREATE TRIGGER api_keys_kept BEFORE DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION ledger_referenced_permanent();
CREATE TRIGGER api_keys_permanent BEFORE TRUNCATE ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_referenced_permanent();
CREATE TRIGGER ledger_accounts_kept BEFORE DELETE ON ledger_accounts
    FOR EACH ROW EXECUTE FUNCTION ledger_referenced_permanent();
CREATE TRIGGER ledger_accounts_permanent BEFORE TRUNCATE ON ledger_accounts
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_referenced_permanent();
CREATE TRIGGER transfers_permanent BEFORE TRUNCATE ON transfers
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_referenced_permanent();
CREATE TRIGGER entries_permanent BEFORE TRUNCATE ON entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_referenced_permanent();
CREATE TRIGGER accounts_id_fixed BEFORE UPDATE OF id ON accounts
    FOR EACH ROW EXECUTE FUNCTION ledger_referenced_id_fixed();
CREATE TRIGGER api_keys_id_fixed BEFORE UPDATE OF id ON api_keys
    FOR EACH ROW EXECUTE FUNCTION ledger_referenced_id_fixed();
CREATE TRIGGER ledger_accounts_id_fixed BEFORE UPDATE OF id ON ledger_accounts
    FOR EACH ROW EXECUTE FUNCTION ledger_referenced_id_fixed();
