-- Workflows, second pass: one lock order for every change to waiting steps,
-- and an operator's retry of a step revives what its failure cancelled.

-- As 0008's, with one difference: every pending row the call may change is
-- locked first, in one pass and in id order, before any is changed. 0008's
-- locked the steps it cancelled in whatever order its join produced, then,
-- in a second pass, the steps it counted down: two calls at once (two steps
-- of one workflow failing in two workers) could take shared rows in opposite
-- orders and deadlock, failing one of the two statements. Edges only ever go
-- from a lower id to a higher one (a step names steps added before it), and
-- every statement that changes waiting steps locks them in ascending id order
-- after the row it ended, so none waits for another in a circle.
CREATE OR REPLACE FUNCTION koyojobs_release_dependents(p_ids bigint[], p_statuses text[],
                                                       p_steps text[])
RETURNS integer
LANGUAGE plpgsql
SET jit = off
AS $$
DECLARE
    v_doomed bigint[] := '{}';
    v_causes text[] := '{}';
    v_cancelled bigint[] := '{}';
    v_released integer;
BEGIN
    -- The steps a failed or cancelled one dooms, through any depth, from the
    -- edges alone (they never change); which are still pending is read once
    -- they are locked.
    IF 'failed' = ANY (p_statuses) OR 'cancelled' = ANY (p_statuses) THEN
        WITH RECURSIVE doomed(id, root) AS (
            SELECT e.job_id, e.upstream_id
              FROM unnest(p_ids, p_statuses) AS en(id, status)
              JOIN koyojobs_job_edges AS e ON e.upstream_id = en.id
             WHERE en.status <> 'done' AND NOT e.always
            UNION
            -- One probe of the edges' index per step (OFFSET 0 keeps it one).
            SELECT x.job_id, d.root
              FROM doomed AS d,
                   LATERAL (SELECT e.job_id FROM koyojobs_job_edges AS e
                             WHERE e.upstream_id = d.id AND NOT e.always OFFSET 0) AS x
        ), causes AS (
            SELECT d.id, min(format('upstream step %L %s', en.step, en.status)) AS cause
              FROM doomed AS d
              JOIN unnest(p_ids, p_statuses, p_steps) AS en(id, status, step) ON en.id = d.root
             GROUP BY d.id
        )
        SELECT coalesce(array_agg(id ORDER BY id), '{}'), coalesce(array_agg(cause ORDER BY id), '{}')
          INTO v_doomed, v_causes
          FROM causes;
    END IF;

    PERFORM 1
       FROM koyojobs_jobs AS j
      WHERE j.id = ANY (ARRAY(SELECT unnest(v_doomed)
                              UNION
                              SELECT e.job_id
                                FROM koyojobs_job_edges AS e
                               WHERE e.upstream_id = ANY (p_ids || v_doomed)))
        AND j.status = 'pending'
      ORDER BY j.id
        FOR UPDATE;

    IF cardinality(v_doomed) > 0 THEN
        WITH cancelled AS (
            UPDATE koyojobs_jobs AS j
               SET status = 'cancelled', finished_at = now(), last_error = d.cause
              FROM unnest(v_doomed, v_causes) AS d(id, cause)
             WHERE j.id = d.id AND j.status = 'pending'
            RETURNING j.id, CASE WHEN j.waited THEN pg_notify('koyojobs_finished', '') END
        )
        SELECT coalesce(array_agg(id), '{}') INTO v_cancelled FROM cancelled;
    END IF;

    -- Each dependent's count of upstream steps not yet ended goes down by those
    -- that ended here (a failed or cancelled one never counts down a step that
    -- is not "always": it was cancelled above).
    WITH counted AS (
        SELECT e.job_id, count(*)::integer AS n, bool_or(t.bad) AS bad,
               bool_and(e.always) AS always
          FROM (SELECT u.id, u.status <> 'done' AS bad
                  FROM unnest(p_ids, p_statuses) AS u(id, status)
                UNION ALL
                SELECT c, true FROM unnest(v_cancelled) AS c) AS t
          JOIN koyojobs_job_edges AS e ON e.upstream_id = t.id
         GROUP BY e.job_id
    ), released AS (
        UPDATE koyojobs_jobs AS j
           SET upstream_left = j.upstream_left - c.n,
               status = CASE WHEN j.upstream_left - c.n <= 0 THEN 'ready' ELSE 'pending' END
          FROM counted AS c
         WHERE j.id = c.job_id AND j.status = 'pending' AND (c.always OR NOT c.bad)
        RETURNING j.id, CASE WHEN j.status = 'ready' THEN pg_notify('koyojobs', j.queue) END
    )
    SELECT count(*) INTO v_released FROM released;
    RETURN v_released + cardinality(v_cancelled);
END;
$$;

-- An operator's retry of steps p_ids (made ready again by the calling
-- statement): they will end again, so
-- - a pending step downstream counted each of them down once already: it
--   counts it again (else it would start before the retried step ended);
-- - a step their failure or cancellation cancelled (its error says "upstream
--   step ...") waits again, pending, if none of its upstream steps is still
--   failed or cancelled, with its count of upstream steps not done; and so on
--   downstream, wave by wave (a step of a second failed branch stays
--   cancelled: nothing would ever release it).
-- Steps that ran already ("always" ones) are left as they are. Returns how
-- many steps it changed. The retried steps count as not done whatever the
-- calling statement's snapshot says of them.
CREATE FUNCTION koyojobs_revive_dependents(p_ids bigint[])
RETURNS integer
LANGUAGE plpgsql
SET jit = off
AS $$
DECLARE
    v_wave bigint[] := p_ids;
    v_revived bigint[];
    v_changed integer := 0;
    v_counted integer;
BEGIN
    WHILE cardinality(v_wave) > 0 LOOP
        PERFORM 1
           FROM koyojobs_jobs AS j
          WHERE j.id = ANY (ARRAY(SELECT e.job_id FROM koyojobs_job_edges AS e
                                   WHERE e.upstream_id = ANY (v_wave)))
            AND j.status IN ('pending', 'cancelled')
          ORDER BY j.id
            FOR UPDATE;

        WITH counted AS (
            UPDATE koyojobs_jobs AS j
               SET upstream_left = j.upstream_left + c.n
              FROM (SELECT e.job_id, count(*)::integer AS n
                      FROM koyojobs_job_edges AS e
                     WHERE e.upstream_id = ANY (v_wave)
                     GROUP BY e.job_id) AS c
             WHERE j.id = c.job_id AND j.status = 'pending'
            RETURNING j.id
        )
        SELECT count(*) INTO v_counted FROM counted;

        WITH revived AS (
            UPDATE koyojobs_jobs AS j
               SET status = 'pending', finished_at = NULL, last_error = NULL,
                   upstream_left = (SELECT count(*)
                                      FROM koyojobs_job_edges AS e
                                      JOIN koyojobs_jobs AS u ON u.id = e.upstream_id
                                     WHERE e.job_id = j.id
                                       AND (u.status <> 'done' OR u.id = ANY (p_ids)))
             WHERE j.id = ANY (ARRAY(SELECT e.job_id FROM koyojobs_job_edges AS e
                                      WHERE e.upstream_id = ANY (v_wave) AND NOT e.always))
               AND j.status = 'cancelled' AND j.last_error LIKE 'upstream step %'
               AND NOT EXISTS (SELECT FROM koyojobs_job_edges AS e
                                 JOIN koyojobs_jobs AS u ON u.id = e.upstream_id
                                WHERE e.job_id = j.id
                                  AND u.status IN ('failed', 'cancelled')
                                  AND u.id <> ALL (p_ids))
            RETURNING j.id
        )
        SELECT coalesce(array_agg(id), '{}') INTO v_revived FROM revived;

        v_changed := v_changed + v_counted + cardinality(v_revived);
        v_wave := v_revived;
    END LOOP;
    RETURN v_changed;
END;
$$;
