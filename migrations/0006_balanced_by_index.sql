-- The balance check of new entries reads each transfer by its primary key, whatever the plan cache
-- holds.
--
-- `entries_balanced` joined the new entries' transfers to the `transfers` table. PL/pgSQL keeps a
-- statement's plan for the life of the connection, and a plan made while the table was small (the
-- control plane's first batches on a new database) hashed the whole table: on a connection that
-- lived on, every later batch read every transfer ever written (one full scan per debit batch,
-- about 100 ms at a million transfers). Nothing replans it but an ANALYZE, which does not happen
-- where autovacuum is off. The transfer is now fetched by a scalar subquery on its id, which runs
-- as an index probe per new transfer (like the existence check before it), and `OFFSET 0` keeps
-- the planner from copying that subquery into each of its uses.
CREATE OR REPLACE FUNCTION entries_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE bad uuid;
BEGIN
    -- Two queries, so that a missing transfer is always the error reported first.
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
    CROSS JOIN LATERAL (
        SELECT (SELECT t FROM transfers t WHERE t.id = n.transfer_id) AS t OFFSET 0
    ) tr
    CROSS JOIN LATERAL (
        SELECT count(*) AS c, sum(e.amount) AS s,
               bool_and((e.amount < 0 AND e.ledger_account_id = (tr.t).from_account AND -e.amount = (tr.t).amount)
                     OR (e.amount > 0 AND e.ledger_account_id = (tr.t).to_account AND e.amount = (tr.t).amount)) AS ok
        FROM entries e WHERE e.transfer_id = n.transfer_id
    ) x
    WHERE x.c <> 2 OR x.s <> 0 OR NOT x.ok
    LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'transfer % does not have two balanced entries', bad;
    END IF;
    RETURN NULL;
END $$;
