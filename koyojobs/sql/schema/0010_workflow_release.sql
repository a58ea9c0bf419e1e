-- Workflows, second pass: one lock order for every change to waiting steps,
-- an operator's retry of a step revives what its failure cancelled, and big
-- fan-ins count their upstream steps in shards.

-- A step waiting for many upstream steps (koyojobs.workflows._SHARD_FROM)
-- counts them in shards: each edge names the shard its upstream step's end
-- counts down, a row here holds how many of that shard's upstream steps have
-- not ended, and the step's own upstream_left counts its shards not yet at
-- zero. Two workers ending steps of one fan-in then wait for each other only
-- when they count down the same shard, instead of on every statement for the
-- fan-in's row. An edge without a shard counts down the step's row directly.
ALTER TABLE koyojobs_job_edges ADD COLUMN shard smallint;
CREATE TABLE koyojobs_step_counts (
    job_id        bigint   NOT NULL,
    shard         smallint NOT NULL,
    upstream_left integer  NOT NULL,
    PRIMARY KEY (job_id, shard)
);

-- As 0008's, with two differences. Every pending row the call may change is
-- locked first, in one pass and in id order, before any is changed (but the
-- row of a step counting in shards, which only a shard reaching zero changes:
-- its shards are locked in key order, then its row). 0008's
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
    v_released integer := 0;
    v_shard_jobs bigint[];
    v_shards smallint[];
    v_shard_n integer[];
    v_emptied bigint[];
    v_emptied_n integer[];
    v_direct boolean;
    v_sharded boolean;
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

    -- Which kinds of counting this call has to do at all: each statement
    -- skipped is a round of the plpgsql interpreter saved on every claim that
    -- ends a step.
    SELECT coalesce(bool_or(e.shard IS NULL), false), coalesce(bool_or(e.shard IS NOT NULL), false)
      INTO v_direct, v_sharded
      FROM koyojobs_job_edges AS e
     WHERE e.upstream_id = ANY (p_ids || v_doomed);

    IF v_direct OR cardinality(v_doomed) > 0 THEN
        PERFORM 1
           FROM koyojobs_jobs AS j
          WHERE j.id = ANY (ARRAY(SELECT unnest(v_doomed)
                                  UNION
                                  SELECT e.job_id
                                    FROM koyojobs_job_edges AS e
                                   WHERE e.upstream_id = ANY (p_ids || v_doomed)
                                     AND e.shard IS NULL))
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
             WHERE e.shard IS NULL
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
    END IF;

    -- Steps that count in shards: their shards (locked in key order), then the
    -- rows of the steps whose shards reached zero here (in id order). Only a
    -- shard's last upstream step touches the step's row.
    IF v_sharded THEN
        SELECT coalesce(array_agg(job_id ORDER BY job_id, shard), '{}'),
               coalesce(array_agg(shard ORDER BY job_id, shard), '{}'),
               coalesce(array_agg(n ORDER BY job_id, shard), '{}')
          INTO v_shard_jobs, v_shards, v_shard_n
          FROM (SELECT e.job_id, e.shard, count(*)::integer AS n
                  FROM (SELECT u.id, u.status <> 'done' AS bad
                          FROM unnest(p_ids, p_statuses) AS u(id, status)
                        UNION ALL
                        SELECT c, true FROM unnest(v_cancelled) AS c) AS t
                  JOIN koyojobs_job_edges AS e ON e.upstream_id = t.id
                 WHERE e.shard IS NOT NULL AND (e.always OR NOT t.bad)
                 GROUP BY e.job_id, e.shard) AS per_shard;
        IF cardinality(v_shard_jobs) > 0 THEN
            PERFORM 1
               FROM koyojobs_step_counts AS s
               JOIN unnest(v_shard_jobs, v_shards) AS k(job_id, shard)
                 ON k.job_id = s.job_id AND k.shard = s.shard
              ORDER BY s.job_id, s.shard
                FOR UPDATE OF s;
            WITH counted AS (
                UPDATE koyojobs_step_counts AS s
                   SET upstream_left = s.upstream_left - k.n
                  FROM unnest(v_shard_jobs, v_shards, v_shard_n) AS k(job_id, shard, n)
                 WHERE s.job_id = k.job_id AND s.shard = k.shard AND s.upstream_left > 0
                RETURNING s.job_id, s.upstream_left
            )
            SELECT coalesce(array_agg(job_id ORDER BY job_id), '{}'),
                   coalesce(array_agg(n ORDER BY job_id), '{}')
              INTO v_emptied, v_emptied_n
              FROM (SELECT job_id, count(*)::integer AS n
                      FROM counted
                     WHERE upstream_left <= 0
                     GROUP BY job_id) AS z;

            IF cardinality(v_emptied) > 0 THEN
                PERFORM 1
                   FROM koyojobs_jobs AS j
                  WHERE j.id = ANY (v_emptied) AND j.status = 'pending'
                  ORDER BY j.id
                    FOR UPDATE;
                WITH released AS (
                    UPDATE koyojobs_jobs AS j
                       SET upstream_left = j.upstream_left - z.n,
                           status = CASE WHEN j.upstream_left - z.n <= 0
                                         THEN 'ready' ELSE 'pending' END
                      FROM unnest(v_emptied, v_emptied_n) AS z(job_id, n)
                     WHERE j.id = z.job_id AND j.status = 'pending'
                    RETURNING j.id,
                              CASE WHEN j.status = 'ready' THEN pg_notify('koyojobs', j.queue) END
                )
                SELECT v_released + count(*) INTO v_released FROM released;
            END IF;
        END IF;
    END IF;
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
-- A cancelled unique step is revived only while no other job holds its key
-- (pending, ready or running, or retried by the calling statement): else it
-- stays cancelled, as a retry of a unique job would. Steps that ran already
-- ("always" ones) are left as they are. Returns how
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
                     WHERE e.upstream_id = ANY (v_wave) AND e.shard IS NULL
                     GROUP BY e.job_id) AS c
             WHERE j.id = c.job_id AND j.status = 'pending'
            RETURNING j.id
        )
        SELECT count(*) INTO v_counted FROM counted;

        -- A step counting in shards: its shard counts the step again, and a
        -- shard that had reached zero counts again on the step's row.
        WITH bumped AS (
            UPDATE koyojobs_step_counts AS s
               SET upstream_left = s.upstream_left + k.n
              FROM (SELECT e.job_id, e.shard, count(*)::integer AS n
                      FROM koyojobs_job_edges AS e
                      JOIN koyojobs_jobs AS d ON d.id = e.job_id AND d.status = 'pending'
                     WHERE e.upstream_id = ANY (v_wave) AND e.shard IS NOT NULL
                     GROUP BY e.job_id, e.shard) AS k
             WHERE s.job_id = k.job_id AND s.shard = k.shard
            RETURNING s.job_id, s.upstream_left - k.n <= 0 AS reopened
        ), reopened AS (
            UPDATE koyojobs_jobs AS j
               SET upstream_left = j.upstream_left + r.n
              FROM (SELECT job_id, count(*)::integer AS n
                      FROM bumped
                     WHERE reopened
                     GROUP BY job_id) AS r
             WHERE j.id = r.job_id AND j.status = 'pending'
        )
        SELECT v_counted + count(DISTINCT job_id) INTO v_counted FROM bumped;

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
               -- A unique step (0011) only while no other job holds its key.
               AND (j.unique_key IS NULL
                    OR NOT EXISTS (SELECT FROM koyojobs_jobs AS k
                                    WHERE k.unique_key = j.unique_key AND k.id <> j.id
                                      AND (k.status IN ('pending', 'ready', 'running')
                                           OR k.id = ANY (p_ids))))
            RETURNING j.id
        )
        SELECT coalesce(array_agg(id), '{}') INTO v_revived FROM revived;

        -- A revived step counting in shards: each shard's count of upstream
        -- steps not done, and the step's of shards not at zero.
        UPDATE koyojobs_step_counts AS s
           SET upstream_left = (SELECT count(*)
                                  FROM koyojobs_job_edges AS e
                                  JOIN koyojobs_jobs AS u ON u.id = e.upstream_id
                                 WHERE e.job_id = s.job_id AND e.shard = s.shard
                                   AND (u.status <> 'done' OR u.id = ANY (p_ids)))
         WHERE s.job_id = ANY (v_revived);
        UPDATE koyojobs_jobs AS j
           SET upstream_left = (SELECT count(*) FROM koyojobs_step_counts AS s
                                 WHERE s.job_id = j.id AND s.upstream_left > 0)
         WHERE j.id = ANY (v_revived)
           AND EXISTS (SELECT FROM koyojobs_step_counts AS s WHERE s.job_id = j.id);

        v_changed := v_changed + v_counted + cardinality(v_revived);
        v_wave := v_revived;
    END LOOP;
    RETURN v_changed;
END;
$$;
