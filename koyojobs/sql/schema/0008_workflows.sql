-- Workflows (koyojobs.workflows): steps that wait for each other, and the
-- progress of running jobs. Columns without defaults, or with constant ones:
-- no table rewrite. Plain jobs leave every new column NULL, so they enter
-- none of the new (partial) indexes.

-- One row per enqueued workflow; its name is for people.
CREATE TABLE koyojobs_workflows (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- A step's workflow and its name in it (unique within the workflow).
ALTER TABLE koyojobs_jobs ADD COLUMN workflow_id bigint;
ALTER TABLE koyojobs_jobs ADD COLUMN step text;
-- How many of a pending step's upstream steps have not ended yet. The
-- statement that ends an upstream step counts it down; at zero the step is
-- ready. A counter on the row, not a look at the upstream rows: two workers
-- ending a step's last two upstream steps at once each see the other's still
-- running in their snapshots, but an UPDATE of the counter waits for the
-- other's and reads its result.
ALTER TABLE koyojobs_jobs ADD COLUMN upstream_left integer;
-- report_progress(): how far the running job got (0 to 1), and what it said.
ALTER TABLE koyojobs_jobs ADD COLUMN progress real;
ALTER TABLE koyojobs_jobs ADD COLUMN progress_message text;

-- A step that waits for its upstream steps is "pending": no claim looks at it
-- (the ready index holds ready rows only). NOT VALID: every existing row
-- already met the narrower check this one replaces, and validating would read
-- the whole table under the ALTER's lock, blocking every claim meanwhile.
ALTER TABLE koyojobs_jobs DROP CONSTRAINT koyojobs_jobs_status_check;
ALTER TABLE koyojobs_jobs ADD CONSTRAINT koyojobs_jobs_status_check
    CHECK (status IN ('pending', 'ready', 'running', 'done', 'failed', 'cancelled')) NOT VALID;

-- Step job_id waits for upstream_id. always: job_id runs however its upstream
-- steps end (else a failed or cancelled one cancels it). Found from both
-- ends: the release walks from an ended step to its dependents, upstream()
-- from a step to its upstream ones.
CREATE TABLE koyojobs_job_edges (
    job_id      bigint  NOT NULL,
    upstream_id bigint  NOT NULL,
    always      boolean NOT NULL DEFAULT false,
    PRIMARY KEY (job_id, upstream_id)
);
CREATE INDEX koyojobs_job_edges_upstream_idx ON koyojobs_job_edges (upstream_id);

-- A workflow's steps (get_workflow, cancel_workflow, and retention's look
-- for an unfinished step). Partial: plain jobs never enter it. Built here only
-- on a table small enough to index in a moment (as 0006 does): a plain
-- CREATE INDEX blocks every write while it reads the table. On a bigger one
-- it warns; the Workflows page gives the statement to run CONCURRENTLY.
DO $$
BEGIN
    IF (SELECT count(*) FROM (SELECT 1 FROM koyojobs_jobs LIMIT 100001) AS bounded) <= 100000 THEN
        CREATE INDEX IF NOT EXISTS koyojobs_jobs_workflow_idx
            ON koyojobs_jobs (workflow_id)
            WHERE workflow_id IS NOT NULL;
    ELSE
        RAISE WARNING 'koyojobs: the jobs table is big; build koyojobs_jobs_workflow_idx '
                      'with CREATE INDEX CONCURRENTLY (see the Workflows page of the docs)';
    END IF;
END
$$;

-- What the statements that end workflow steps call, in the same transaction
-- (the release_dependents block of sql/queries/workflows.sql), with the steps
-- they ended: p_ids, their statuses (done, failed, cancelled) and names.
-- First every pending step that a failed or cancelled one cancels, through
-- any depth, but for "always" steps (which wait for their upstream steps to
-- end in any way), its error naming the step that ended badly. Then each
-- dependent's count of upstream steps not yet ended goes down by those that
-- ended here (a failed or cancelled one never counts down a step that is not
-- "always": its count never reaches zero); at zero the step is ready, and
-- its queue is notified (the insert trigger only fires on INSERT). Returns
-- how many steps it released or cancelled.
--
-- A function, called only when a statement ended a step: a batch of plain
-- jobs pays for none of it (as CTEs of every claim, even empty, they cost
-- each round a tenth more). Its statements see the latest committed rows:
-- a count-down of a row that another transaction is counting down waits for
-- it, then reads its result, so two workers ending a step's last two
-- upstream steps at once release it once.
-- jit = off: these are statements of a few rows, and the planner prices a
-- recursive walk at many times its input; priced high enough, each call was
-- JIT-compiled first (a tenth of a second a call).
CREATE FUNCTION koyojobs_release_dependents(p_ids bigint[], p_statuses text[], p_steps text[])
RETURNS integer
LANGUAGE plpgsql
SET jit = off
AS $$
DECLARE
    v_cancelled bigint[] := '{}';
    v_released integer;
BEGIN
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
    ), cancelled AS (
        UPDATE koyojobs_jobs AS j
           SET status = 'cancelled', finished_at = now(), last_error = c.cause
          FROM causes AS c
         WHERE j.id = c.id AND j.status = 'pending'
           AND j.id = ANY (ARRAY(SELECT id FROM causes))
        RETURNING j.id, CASE WHEN j.waited THEN pg_notify('koyojobs_finished', '') END
    )
    SELECT coalesce(array_agg(id), '{}') INTO v_cancelled FROM cancelled;
    END IF;

    WITH counted AS (
        SELECT e.job_id, count(*)::integer AS n, bool_or(t.bad) AS bad,
               bool_and(e.always) AS always
          FROM (SELECT u.id, u.status <> 'done' AS bad FROM unnest(p_ids, p_statuses) AS u(id, status)
                UNION ALL
                SELECT c, true FROM unnest(v_cancelled) AS c) AS t
          JOIN koyojobs_job_edges AS e ON e.upstream_id = t.id
         GROUP BY e.job_id
    -- Locked in id order: two workers that end steps of one fan-in at once
    -- must not take its dependents' rows in opposite orders.
    ), locked AS (
        SELECT j.id
          FROM koyojobs_jobs AS j
         WHERE j.id = ANY (ARRAY(SELECT job_id FROM counted WHERE always OR NOT bad))
           AND j.status = 'pending'
         ORDER BY j.id
           FOR UPDATE
    ), released AS (
        UPDATE koyojobs_jobs AS j
           SET upstream_left = j.upstream_left - c.n,
               status = CASE WHEN j.upstream_left - c.n <= 0 THEN 'ready' ELSE 'pending' END
          FROM counted AS c
         WHERE j.id = c.job_id AND j.status = 'pending' AND (c.always OR NOT c.bad)
           AND j.id = ANY (ARRAY(SELECT id FROM locked))
        RETURNING j.id, CASE WHEN j.status = 'ready' THEN pg_notify('koyojobs', j.queue) END
    )
    SELECT count(*) INTO v_released FROM released;
    RETURN v_released + cardinality(v_cancelled);
END;
$$;
