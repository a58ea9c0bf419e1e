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

-- The steps that the failed or cancelled steps p_roots cancel: their
-- dependents, and theirs, through any depth, but for "always" steps (and
-- what waits for those). With the root each was reached from (any one). A
-- function, not a recursive CTE in the statements that end steps: the
-- planner prices a recursive CTE at many times its input, and that price
-- made each round of a worker's claim (a generic plan) JIT-compiled. ROWS 1:
-- most statements doom nothing. VOLATILE so that it is never inlined; it
-- reads only edges, which never change.
CREATE FUNCTION koyojobs_doomed(p_roots bigint[]) RETURNS TABLE (id bigint, root bigint)
LANGUAGE sql VOLATILE ROWS 1 AS $$
    WITH RECURSIVE doomed(id, root) AS (
        SELECT e.job_id, e.upstream_id
          FROM koyojobs_job_edges AS e
         WHERE e.upstream_id = ANY (p_roots) AND NOT e.always
        UNION
        -- One probe of the edges' index per step (OFFSET 0 keeps it one).
        SELECT x.job_id, d.root
          FROM doomed AS d,
               LATERAL (SELECT e.job_id FROM koyojobs_job_edges AS e
                         WHERE e.upstream_id = d.id AND NOT e.always OFFSET 0) AS x
    )
    SELECT doomed.id, doomed.root FROM doomed
$$;
