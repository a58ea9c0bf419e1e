-- The dashboard (koyojobs.dashboard) reads finished jobs by queue and status
-- (its counts and the last hour's throughput), and failed or cancelled ones
-- in id order (its jobs page, paged by id). Without these indexes, a refresh
-- of the queues page read the whole table: two seconds on a million finished
-- jobs (docs/benchmarks.md has the figures).
--
-- Both are partial: a job enters them once, when it finishes (the second only
-- if it failed or was cancelled, which few do). Claims and lease renewals of
-- running jobs insert nothing into them. Done jobs, dense in the table, need
-- no index of their own to be listed: the primary key finds them at once.
-- (An index of every finished row by status cost a drain a quarter of its
-- rate; what these two cost was below the noise: docs/benchmarks.md.)
--
-- A plain CREATE INDEX blocks writes to the table (every enqueue, claim and
-- outcome) for as long as it builds, and a migration runs in a transaction,
-- where CONCURRENTLY is not allowed. So this step builds them only on a table
-- small enough to index in a moment (at most 100,000 rows, counted with a
-- bound); on a bigger one it warns, and the Dashboard page of the docs gives
-- the same statements to run CONCURRENTLY. The dashboard works without them,
-- only slower.
DO $$
BEGIN
    IF (SELECT count(*) FROM (SELECT 1 FROM koyojobs_jobs LIMIT 100001) AS bounded) <= 100000 THEN
        CREATE INDEX IF NOT EXISTS koyojobs_jobs_finished_queue_idx
            ON koyojobs_jobs (queue, status, finished_at)
            WHERE status IN ('done', 'failed', 'cancelled');
        CREATE INDEX IF NOT EXISTS koyojobs_jobs_failed_idx
            ON koyojobs_jobs (status, id)
            WHERE status IN ('failed', 'cancelled');
    ELSE
        RAISE WARNING 'koyojobs: the jobs table is big; build the dashboard''s indexes '
                      'with CREATE INDEX CONCURRENTLY (see the Dashboard page of the docs)';
    END IF;
END
$$;

-- The priorities among a queue's ready jobs, found by skipping through the
-- claim's index (ordered by queue, priority, due time): a probe per priority,
-- however many jobs wait. The dashboard counts and dates a backlog per
-- priority, each a range of that index, so a million future jobs are not read
-- to count the due ones (nor the other way round).
CREATE OR REPLACE FUNCTION koyojobs_ready_priorities(p_queue text) RETURNS SETOF integer
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE priorities(p) AS (
        (SELECT priority FROM koyojobs_jobs
          WHERE queue = p_queue AND status = 'ready' ORDER BY priority LIMIT 1)
        UNION ALL
        SELECT (SELECT j.priority FROM koyojobs_jobs AS j
                 WHERE j.queue = p_queue AND j.status = 'ready' AND j.priority > priorities.p
                 ORDER BY j.priority LIMIT 1)
          FROM priorities
         WHERE priorities.p IS NOT NULL
    )
    SELECT p FROM priorities WHERE p IS NOT NULL
$$;
