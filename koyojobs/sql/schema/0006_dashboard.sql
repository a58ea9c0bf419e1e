-- The dashboard (koyojobs.dashboard) reads finished jobs by queue and status
-- (its counts and the last hour's throughput) and by status in id order (its
-- jobs page, paged by id). Without an index for each, every look reads the
-- whole table: on a million finished jobs, a refresh took hundreds of
-- milliseconds (docs/benchmarks.md has the figures).
--
-- Both indexes are partial, on finished rows only: a job enters them once,
-- when it finishes. Claims and lease renewals of running jobs, which update
-- the same rows many times, insert nothing into them.
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
        CREATE INDEX IF NOT EXISTS koyojobs_jobs_finished_status_idx
            ON koyojobs_jobs (status, id)
            WHERE status IN ('done', 'failed', 'cancelled');
    ELSE
        RAISE WARNING 'koyojobs: the jobs table is big; build the dashboard''s indexes '
                      'with CREATE INDEX CONCURRENTLY (see the Dashboard page of the docs)';
    END IF;
END
$$;
