-- The console's statements: what operators do instead of SQL (bulk actions,
-- workers, charts, metrics) and the checks before them.
-- Blocks start with "-- name: NAME"; Python asks for them by that name.

-- name: queue_known
-- Whether any job, pause or live worker has named queue $1: a probe per
-- status group, each through an index (the claim's for ready jobs, 0006's
-- for finished ones, the few running rows), never a scan of every job.
SELECT EXISTS (SELECT FROM koyojobs_jobs WHERE queue = $1 AND status = 'ready')
    OR EXISTS (SELECT FROM koyojobs_jobs WHERE queue = $1 AND status = 'running')
    OR EXISTS (SELECT FROM koyojobs_jobs
                WHERE queue = $1 AND status IN ('done', 'failed', 'cancelled'))
    OR EXISTS (SELECT FROM koyojobs_queues WHERE queue = $1);
