-- Reading and acting on single jobs and queues: get, cancel, retry, wait, list, status.
-- Blocks start with "-- name: NAME"; Python asks for them by that name.

-- name: get_job
SELECT id, name, queue, priority, status, attempts, max_attempts, scheduled_at,
       created_at, started_at, finished_at, last_error, last_traceback, result, snoozes,
       workflow_id, step, progress, progress_message
  FROM koyojobs_jobs
 WHERE id = $1;

-- name: cancel_job
-- A running job's worker notices at its next lease renewal and stops it. A
-- workflow step's dependents are cancelled with it (its "always" ones
-- released), in this statement.
WITH ended AS (
    UPDATE koyojobs_jobs
       SET status = 'cancelled', finished_at = now(), lease_expires_at = NULL, worker_id = NULL
     WHERE id = $1 AND status IN ('pending', 'ready', 'running')
    RETURNING id, status, step, pg_notify('koyojobs_finished', '')
)
-- include: release_dependents
SELECT id FROM ended;

-- name: mark_waited
-- Broker.wait: from now on, the statement that ends job $1 notifies.
UPDATE koyojobs_jobs SET waited = true
 WHERE id = $1 AND NOT waited AND status IN ('pending', 'ready', 'running');

-- name: finished_among
-- Which of the jobs $1 (those Broker.wait waits for) have finished.
SELECT id FROM koyojobs_jobs
 WHERE id = ANY ($1::bigint[]) AND status IN ('done', 'failed', 'cancelled');

-- name: retry_job
-- Operator's retry: a finished job runs again with a fresh attempt budget,
-- unless another job holds its unique key now (a pending step too). Not a workflow step still
-- waiting for upstream steps (one cancelled with them): it would run before
-- them; retrying the step that failed revives those (revive_dependents).
WITH retried AS (
    UPDATE koyojobs_jobs AS j
       SET status = 'ready', scheduled_at = now(), attempts = 0, finished_at = NULL,
           result = NULL, lease_expires_at = NULL, worker_id = NULL
     WHERE id = $1 AND status IN ('failed', 'cancelled', 'done')
       AND coalesce(upstream_left, 0) <= 0
       AND NOT EXISTS (SELECT FROM koyojobs_jobs AS k
                        WHERE k.unique_key = j.unique_key
                          AND k.status IN ('pending', 'ready', 'running'))
    RETURNING id, queue, workflow_id
)
-- include: revive_dependents
SELECT id, queue FROM retried;

-- name: unique_holder
-- The pending, ready or running job that holds job $1's unique key, if
-- another does (a pending one: a workflow step waiting for its upstream steps).
SELECT k.id
  FROM koyojobs_jobs AS j
  JOIN koyojobs_jobs AS k ON k.unique_key = j.unique_key
                         AND k.status IN ('pending', 'ready', 'running')
 WHERE j.id = $1 AND k.id <> j.id;

-- name: job_status
-- Why an operator's retry or cancel did nothing: NULL for an unknown job.
SELECT status FROM koyojobs_jobs WHERE id = $1;

-- name: queue_status
-- Counts per queue and status (pending workflow steps too), how long the
-- oldest due job has waited, and whether the queue is paused (a paused queue
-- shows even with no jobs).
WITH counts AS (
    SELECT queue,
           count(*) FILTER (WHERE status = 'pending')::bigint AS pending,
           count(*) FILTER (WHERE status = 'ready')::bigint AS ready,
           count(*) FILTER (WHERE status = 'running')::bigint AS running,
           count(*) FILTER (WHERE status = 'done')::bigint AS done,
           count(*) FILTER (WHERE status = 'failed')::bigint AS failed,
           count(*) FILTER (WHERE status = 'cancelled')::bigint AS cancelled,
           extract(epoch FROM now() - min(scheduled_at)
                   FILTER (WHERE status = 'ready' AND scheduled_at <= now()))::float8
               AS oldest_ready_seconds
      FROM koyojobs_jobs
     GROUP BY queue
)
SELECT coalesce(c.queue, p.queue) AS queue,
       coalesce(c.ready, 0) AS ready, coalesce(c.running, 0) AS running,
       coalesce(c.done, 0) AS done, coalesce(c.failed, 0) AS failed,
       coalesce(c.cancelled, 0) AS cancelled, c.oldest_ready_seconds,
       p.queue IS NOT NULL AS paused, coalesce(c.pending, 0) AS pending
  FROM counts AS c
  FULL JOIN koyojobs_queues AS p ON p.queue = c.queue
 ORDER BY 1;

-- name: job_waiting
-- Why the job j, due but not running, waits, if anything but a free worker
-- holds it back: a column of list_jobs and dashboard_job. For a pending
-- workflow step, the upstream steps it still waits for.
       CASE WHEN j.status = 'pending' THEN
           (SELECT 'upstream steps ' || string_agg(u.step, ', ' ORDER BY u.id)
              FROM koyojobs_job_edges AS e
              JOIN koyojobs_jobs AS u ON u.id = e.upstream_id
             WHERE e.job_id = j.id AND u.status IN ('pending', 'ready', 'running'))
            WHEN j.status = 'ready' AND j.scheduled_at <= now() THEN
           CASE WHEN EXISTS (SELECT FROM koyojobs_queues AS q WHERE q.queue = j.queue)
                THEN 'queue paused'
                WHEN j.limit_key IS NULL THEN NULL
                ELSE (SELECT CASE
                          WHEN r.running >= d.concurrency
                          THEN format('concurrency limit: %s of %s running%s', r.running,
                                      d.concurrency, k.shown)
                          WHEN w.blocked_until > now()
                          THEN format('rate limit: %s starts in %ss%s, next start at %s',
                                      d.rate_count, d.rate_seconds, k.shown,
                                      to_char(w.blocked_until AT TIME ZONE 'UTC',
                                              'YYYY-MM-DD HH24:MI:SS UTC'))
                      END
                        FROM koyojobs_limited_jobs AS d
                        CROSS JOIN LATERAL (
                              SELECT count(*) AS running FROM koyojobs_jobs AS x
                               WHERE x.limit_key = j.limit_key AND x.status = 'running') AS r
                        CROSS JOIN LATERAL (
                              SELECT CASE WHEN position(chr(31) IN j.limit_key) > 0
                                          THEN format(' for key %L',
                                                      split_part(j.limit_key, chr(31), 2))
                                          ELSE '' END AS shown) AS k
                        LEFT JOIN koyojobs_rate_windows AS w ON w.limit_key = j.limit_key
                       WHERE d.name = j.name)
           END
       END AS waiting

-- name: list_jobs
-- The newest jobs, optionally of one status and one queue. For a job that is
-- due but not running, "waiting" says what holds it back, if anything does
-- beyond a free worker: its queue paused, its key at its concurrency limit,
-- or its key's rate window full.
SELECT j.id, j.name, j.queue, j.priority, j.status, j.attempts, j.max_attempts,
       j.scheduled_at, j.created_at, j.started_at, j.finished_at, j.last_error,
       j.last_traceback, j.result, j.snoozes, j.workflow_id, j.step, j.progress,
       j.progress_message,
-- include: job_waiting
  FROM koyojobs_jobs AS j
 WHERE ($1::text IS NULL OR j.status = $1) AND ($2::text IS NULL OR j.queue = $2)
 ORDER BY j.id DESC
 LIMIT $3;

-- name: enqueued_jobs_named
-- What koyojobs.testing inspects: the jobs of one name not yet started, ready
-- or pending (a workflow step waiting for its upstream steps), oldest first.
SELECT id, args, status FROM koyojobs_jobs
 WHERE name = $1 AND status IN ('pending', 'ready') ORDER BY id;

-- name: database_now
SELECT clock_timestamp();
