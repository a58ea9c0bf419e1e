-- Unique jobs apply to workflow steps (koyojobs.workflow_unique): a step of
-- a unique job holds its key from its enqueue on, pending included. Were it
-- to hold it only from ready on, another job could take the key while the
-- step waits, and the step's release (pending -> ready, inside every claim
-- statement) would then break the unique index and fail that claim loop's
-- statement every round. Plain jobs are never pending: nothing changes for
-- them.
--
-- The unique index, replaced by one that covers pending rows too: the new one
-- is built first, then the old one dropped, so there is no moment without a
-- unique index. A plain CREATE INDEX blocks writes while it reads the table,
-- and a migration runs in a transaction, where CONCURRENTLY is not allowed:
-- as 0009, this step replaces it only on a table of at most 100,000 rows; on
-- a bigger one it warns, and `koyojobs migrate` builds the new index
-- CONCURRENTLY after the migrations, then drops the old one. Until then, a
-- workflow with a unique step is refused at enqueue (insert_workflow looks
-- for the new index), and plain unique jobs work as before: the ON CONFLICT
-- of koyojobs_insert_round (status IN ('ready', 'running')) infers either.
DO $$
BEGIN
    IF (SELECT count(*) FROM (SELECT 1 FROM koyojobs_jobs LIMIT 100001) AS bounded) <= 100000 THEN
        CREATE UNIQUE INDEX IF NOT EXISTS koyojobs_jobs_unique_held_idx
            ON koyojobs_jobs (unique_key)
            WHERE unique_key IS NOT NULL AND status IN ('pending', 'ready', 'running');
        DROP INDEX IF EXISTS koyojobs_jobs_unique_idx;
    ELSE
        RAISE WARNING 'koyojobs: the jobs table is big; `koyojobs migrate` builds '
                      'koyojobs_jobs_unique_held_idx CONCURRENTLY (unique workflow steps '
                      'need it: see the Workflows page of the docs)';
    END IF;
END
$$;

-- As 0005's, but a pending workflow step holds its key too: a unique enqueue
-- while one waits returns the step's id.
CREATE OR REPLACE FUNCTION koyojobs_insert_unique(
    p_names text[], p_queues text[], p_priorities integer[], p_max_attempts integer[],
    p_args bytea[], p_scheduled timestamptz[], p_limit_keys text[], p_unique_keys uuid[],
    p_trace_context text)
RETURNS TABLE (id bigint, unique_key uuid)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_ids bigint[] := '{}';
    v_keys uuid[] := '{}';
    v_new_ids bigint[];
    v_new_keys uuid[];
    v_missing uuid[];  -- NULL: every key of the batch
    v_unkeyed_done boolean := false;
    v_round integer := 0;
    v_keyed bigint := (SELECT count(k) FROM unnest(p_unique_keys) AS k);
BEGIN
    LOOP
        v_round := v_round + 1;
        IF v_keyed > 1 THEN
            -- Two batches that insert some keys in other orders can deadlock:
            -- the one PostgreSQL picks undoes this round (letting go of what
            -- it held) and tries again. Not for a single key, which cannot:
            -- a subtransaction per enqueue would cost a transaction that
            -- enqueues many, one by one, more than 64 of them (and every
            -- snapshot of the server while it runs).
            BEGIN
                SELECT coalesce(array_agg(r.id), '{}'), coalesce(array_agg(r.unique_key), '{}')
                  INTO v_new_ids, v_new_keys
                  FROM koyojobs_insert_round(p_names, p_queues, p_priorities, p_max_attempts,
                                             p_args, p_scheduled, p_limit_keys, p_unique_keys,
                                             p_trace_context, v_unkeyed_done, v_missing) AS r;
            EXCEPTION WHEN deadlock_detected THEN
                v_new_ids := NULL;
            END;
        ELSE
            SELECT coalesce(array_agg(r.id), '{}'), coalesce(array_agg(r.unique_key), '{}')
              INTO v_new_ids, v_new_keys
              FROM koyojobs_insert_round(p_names, p_queues, p_priorities, p_max_attempts,
                                         p_args, p_scheduled, p_limit_keys, p_unique_keys,
                                         p_trace_context, v_unkeyed_done, v_missing) AS r;
        END IF;
        IF v_new_ids IS NOT NULL THEN
            v_ids := v_ids || v_new_ids;
            v_keys := v_keys || v_new_keys;
            v_unkeyed_done := true;
        END IF;
        -- The keys no job inserted here holds: usually none, found by counting.
        IF v_unkeyed_done AND v_missing IS NULL
           AND v_keyed = (SELECT count(k) FROM unnest(v_keys) AS k) THEN
            EXIT;
        END IF;
        v_missing := ARRAY(SELECT k FROM unnest(p_unique_keys) AS k WHERE k IS NOT NULL
                           EXCEPT
                           SELECT k FROM unnest(v_keys) AS k WHERE k IS NOT NULL);
        EXIT WHEN cardinality(v_missing) = 0;
        -- The holders: ready or running (through either index), else a
        -- pending workflow step, looked for only if a key is still missing.
        SELECT coalesce(array_agg(j.id), '{}'), coalesce(array_agg(j.unique_key), '{}')
          INTO v_new_ids, v_new_keys
          FROM koyojobs_jobs AS j
         WHERE j.unique_key = ANY (v_missing) AND j.status IN ('ready', 'running');
        IF cardinality(v_new_keys) < cardinality(v_missing) THEN
            SELECT v_new_ids || coalesce(array_agg(j.id), '{}'),
                   v_new_keys || coalesce(array_agg(j.unique_key), '{}')
              INTO v_new_ids, v_new_keys
              FROM koyojobs_jobs AS j
             WHERE j.unique_key = ANY (v_missing) AND j.status = 'pending';
        END IF;
        v_ids := v_ids || v_new_ids;
        v_keys := v_keys || v_new_keys;
        v_missing := ARRAY(SELECT k FROM unnest(v_missing) AS k
                           EXCEPT
                           SELECT k FROM unnest(v_new_keys) AS k);
        EXIT WHEN cardinality(v_missing) = 0;
        IF v_round >= 20 THEN
            RAISE EXCEPTION 'koyojobs: % unique keys kept changing hands while enqueuing',
                cardinality(v_missing);
        END IF;
    END LOOP;
    RETURN QUERY SELECT * FROM unnest(v_ids, v_keys);
END;
$$;
