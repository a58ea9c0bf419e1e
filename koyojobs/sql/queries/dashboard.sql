-- The dashboard's read-only statements.
-- Blocks start with "-- name: NAME"; Python asks for them by that name.

-- name: dashboard_ready_queues
-- The queues that have ready jobs, found by skipping through the index of
-- ready rows (a probe per queue): a CTE of dashboard_queues(_unindexed).
ready_queues(queue) AS (
    (SELECT queue FROM koyojobs_jobs WHERE status = 'ready' ORDER BY queue LIMIT 1)
    UNION ALL
    SELECT (SELECT j.queue FROM koyojobs_jobs AS j
             WHERE j.status = 'ready' AND j.queue > r.queue ORDER BY j.queue LIMIT 1)
      FROM ready_queues AS r
     WHERE r.queue IS NOT NULL
)

-- name: dashboard_live_counts
-- Per queue q: its due and its scheduled (ready, due later) jobs, counted up
-- to $1, and its oldest wait, each per priority in the claim's index (see
-- koyojobs_ready_priorities: a backlog of millions is not read on every
-- refresh); its running jobs, in their own index; and whether it is paused.
-- Columns of dashboard_queues(_unindexed), which both take the bound as $1.
       EXISTS (SELECT FROM koyojobs_queues AS p WHERE p.queue = q.queue) AS paused,
       (SELECT count(*)
          FROM (SELECT FROM koyojobs_ready_priorities(q.queue) AS p,
                       LATERAL (SELECT FROM koyojobs_jobs AS j
                                 WHERE j.queue = q.queue AND j.status = 'ready'
                                   AND j.priority = p AND j.scheduled_at <= now()
                                 LIMIT $1) AS x
                 LIMIT $1) AS b) AS ready,
       (SELECT count(*)
          FROM (SELECT FROM koyojobs_ready_priorities(q.queue) AS p,
                       LATERAL (SELECT FROM koyojobs_jobs AS j
                                 WHERE j.queue = q.queue AND j.status = 'ready'
                                   AND j.priority = p AND j.scheduled_at > now()
                                 LIMIT $1) AS x
                 LIMIT $1) AS b) AS scheduled,
       (SELECT count(*) FROM koyojobs_jobs
         WHERE queue = q.queue AND status = 'running') AS running,
       (SELECT extract(epoch FROM now() - min(d.due))::float8
          FROM koyojobs_ready_priorities(q.queue) AS p,
               LATERAL (SELECT j.scheduled_at AS due FROM koyojobs_jobs AS j
                         WHERE j.queue = q.queue AND j.status = 'ready' AND j.priority = p
                         ORDER BY j.scheduled_at LIMIT 1) AS d
         WHERE d.due <= now()) AS oldest_wait,

-- name: dashboard_queues
-- The dashboard's queues page, one row per queue, at a bounded cost however
-- many finished jobs the table keeps. The queues are found by skipping
-- through indexes (a probe per queue, not a scan of the rows); ready and
-- running jobs are counted in their partial indexes; finished ones are
-- counted up to $1 (the page shows "$1+") and over the last hour, in the
-- index of finished rows by queue (0006_dashboard). A paused queue shows
-- even without jobs.
WITH RECURSIVE finished_queues(queue) AS (
    (SELECT queue FROM koyojobs_jobs
      WHERE status IN ('done', 'failed', 'cancelled') ORDER BY queue LIMIT 1)
    UNION ALL
    SELECT (SELECT j.queue FROM koyojobs_jobs AS j
             WHERE j.status IN ('done', 'failed', 'cancelled') AND j.queue > f.queue
             ORDER BY j.queue LIMIT 1)
      FROM finished_queues AS f
     WHERE f.queue IS NOT NULL
),
-- include: dashboard_ready_queues
, queues AS (
    SELECT queue FROM finished_queues WHERE queue IS NOT NULL
    UNION
    SELECT queue FROM ready_queues WHERE queue IS NOT NULL
    UNION
    SELECT queue FROM koyojobs_jobs WHERE status = 'running'
    UNION
    SELECT queue FROM koyojobs_queues
)
SELECT q.queue,
-- include: dashboard_live_counts
       (SELECT count(*) FROM (SELECT 1 FROM koyojobs_jobs
                               WHERE queue = q.queue AND status = 'done' LIMIT $1) AS b) AS done,
       (SELECT count(*) FROM (SELECT 1 FROM koyojobs_jobs
                               WHERE queue = q.queue AND status = 'failed' LIMIT $1) AS b) AS failed,
       (SELECT count(*) FROM (SELECT 1 FROM koyojobs_jobs
                               WHERE queue = q.queue AND status = 'cancelled' LIMIT $1) AS b)
           AS cancelled,
       (SELECT count(*) FROM (SELECT FROM koyojobs_jobs
                               WHERE queue = q.queue AND status = 'done'
                                 AND finished_at > now() - interval '1 hour' LIMIT $1) AS b)
           AS done_last_hour,
       (SELECT count(*) FROM (SELECT FROM koyojobs_jobs
                               WHERE queue = q.queue AND status = 'failed'
                                 AND finished_at > now() - interval '1 hour' LIMIT $1) AS b)
           AS failed_last_hour
  FROM queues AS q
 ORDER BY q.queue;

-- name: dashboard_jobs
-- A page of the dashboard's jobs page, newest first, paged by id ($4: below
-- this id). Rows are taken in id order, of one status ($1) if asked, at most
-- $5 of them: through the index of failed and cancelled rows (0006_dashboard),
-- the ready or running rows' own, or the primary key. Only those are matched
-- against the queue ($2), name ($3) and status $7 (done, or any finished
-- status when that index is missing), so a name that matches nothing costs
-- $5 rows, not the table (both steps are MATERIALIZED: estimating such a name
-- rare, the planner would rather scan the whole table for it). The first row
-- says how far the look went (floor, scanned); there is always one: with no
-- match, its job columns are NULL.
WITH scanned AS MATERIALIZED (
    SELECT id, queue, name, status
      FROM koyojobs_jobs
     WHERE ($1::text IS NULL OR status = $1) AND id < $4
     ORDER BY id DESC
     LIMIT $5
), matched AS MATERIALIZED (
    SELECT id
      FROM scanned
     WHERE ($2::text IS NULL OR queue = $2) AND ($3::text IS NULL OR name = $3)
       AND ($7::text IS NULL OR status = $7)
     ORDER BY id DESC
     LIMIT $6
)
SELECT s.floor, s.scanned, p.*
  FROM (SELECT min(id) AS floor, count(*) AS scanned FROM scanned) AS s
  LEFT JOIN LATERAL (
      SELECT j.id, j.name, j.queue, j.priority, j.status, j.attempts, j.max_attempts,
             j.scheduled_at, j.created_at, j.finished_at, j.last_error, j.progress,
             j.progress_message
        FROM matched
        JOIN koyojobs_jobs AS j ON j.id = matched.id
  ) AS p ON true
 ORDER BY p.id DESC;

-- name: dashboard_settings
-- For the read-only transaction of one dashboard page. A generic plan cannot
-- know that a filter is NULL, nor which partial index a status matches; a
-- custom plan can. JIT compiling is off: dashboard_queues is estimated dear
-- (the planner cannot tell how many queues the skip scans find), and JIT
-- spent 270 ms compiling a statement that ran in 20.
SELECT set_config('plan_cache_mode', 'force_custom_plan', true), set_config('jit', 'off', true);

-- name: dashboard_indexed
-- Whether the indexes of 0006_dashboard exist and are usable (a failed CREATE
-- INDEX CONCURRENTLY leaves an invalid one). Without them the dashboard leaves
-- out what only they make cheap, rather than read the whole table.
SELECT count(*) = 2
  FROM pg_index
 WHERE indisvalid
   AND indexrelid IN (to_regclass('koyojobs_jobs_finished_queue_idx'),
                      to_regclass('koyojobs_jobs_failed_idx'));

-- name: dashboard_queues_unindexed
-- dashboard_queues without the index of finished rows by queue: ready and
-- running jobs only (their own indexes, counted up to $1), and paused queues.
WITH RECURSIVE
-- include: dashboard_ready_queues
, queues AS (
    SELECT queue FROM ready_queues WHERE queue IS NOT NULL
    UNION
    SELECT queue FROM koyojobs_jobs WHERE status = 'running'
    UNION
    SELECT queue FROM koyojobs_queues
)
SELECT q.queue,
-- include: dashboard_live_counts
       NULL::bigint AS done, NULL::bigint AS failed, NULL::bigint AS cancelled,
       NULL::bigint AS done_last_hour, NULL::bigint AS failed_last_hour
  FROM queues AS q
 ORDER BY q.queue;

-- name: dashboard_job
-- Every column of one job but its payloads, for the dashboard's job page, and
-- why it waits (job_waiting). The payloads' sizes come from octet_length, which
-- reads a stored value's header, not the value: a job of 300 MB costs its page
-- nothing. (A column added by a migration goes here too: a test compares this
-- list with the table's.)
SELECT j.id, j.name, j.queue, j.priority, j.status, j.attempts, j.max_attempts,
       j.snoozes, j.scheduled_at, j.created_at, j.started_at, j.finished_at,
       j.lease_expires_at, j.worker_id, j.waited, j.lapsed_attempt, j.unique_key,
       j.limit_key, j.trace_context, j.last_error, j.last_traceback,
       j.workflow_id, j.step, j.upstream_left, j.progress, j.progress_message,
       octet_length(j.args) AS args_bytes, octet_length(j.result) AS result_bytes,
-- include: job_waiting
  FROM koyojobs_jobs AS j
 WHERE j.id = $1;

-- name: dashboard_job_payloads
-- A job's arguments and result, each only if at most $2 bytes (NULL beyond:
-- the page says how big it is instead of loading it).
SELECT CASE WHEN octet_length(args) <= $2 THEN args END AS args,
       CASE WHEN octet_length(result) <= $2 THEN result END AS result
  FROM koyojobs_jobs
 WHERE id = $1;

-- name: dashboard_schedules
-- Every periodic job the database knows, with the status of its last run.
SELECT s.name, s.last_tick, s.last_enqueued_tick, s.last_skipped, s.last_job_id,
       j.status AS last_job_status, clock_timestamp() AS now
  FROM koyojobs_schedules AS s
  LEFT JOIN koyojobs_jobs AS j ON j.id = s.last_job_id
 ORDER BY s.name;

-- name: dashboard_table_size
-- The planner's estimate of the jobs table's rows: free, and enough for "about".
SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = 'koyojobs_jobs'::regclass;
