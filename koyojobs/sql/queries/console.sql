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
    OR EXISTS (SELECT FROM koyojobs_queues WHERE queue = $1)
    OR EXISTS (SELECT FROM koyojobs_workers WHERE $1 = ANY (queues));

-- name: console_indexed
-- Whether the indexes of 0009_console exist and are usable.
SELECT count(*) = 2
  FROM pg_index
 WHERE indisvalid
   AND indexrelid IN (to_regclass('koyojobs_jobs_finished_filter_idx'),
                      to_regclass('koyojobs_jobs_ready_filter_idx'));

-- name: index_state
-- Whether index $1 is valid (NULL: it does not exist; false: a build failed).
SELECT i.indisvalid FROM pg_index AS i WHERE i.indexrelid = to_regclass($1);

-- name: build_finished_filter_idx
CREATE INDEX CONCURRENTLY IF NOT EXISTS koyojobs_jobs_finished_filter_idx
    ON koyojobs_jobs (status, name COLLATE "C", queue, id)
    WHERE status IN ('done', 'failed', 'cancelled');

-- name: drop_finished_filter_idx
DROP INDEX CONCURRENTLY IF EXISTS koyojobs_jobs_finished_filter_idx;

-- name: build_ready_filter_idx
CREATE INDEX CONCURRENTLY IF NOT EXISTS koyojobs_jobs_ready_filter_idx
    ON koyojobs_jobs (name COLLATE "C", queue, id)
    WHERE status = 'ready';

-- name: drop_ready_filter_idx
DROP INDEX CONCURRENTLY IF EXISTS koyojobs_jobs_ready_filter_idx;

-- name: build_finished_queue_idx
CREATE INDEX CONCURRENTLY IF NOT EXISTS koyojobs_jobs_finished_queue_idx
    ON koyojobs_jobs (queue, status, finished_at)
    WHERE status IN ('done', 'failed', 'cancelled');

-- name: drop_finished_queue_idx
DROP INDEX CONCURRENTLY IF EXISTS koyojobs_jobs_finished_queue_idx;

-- name: build_failed_idx
CREATE INDEX CONCURRENTLY IF NOT EXISTS koyojobs_jobs_failed_idx
    ON koyojobs_jobs (status, id)
    WHERE status IN ('failed', 'cancelled');

-- name: drop_failed_idx
DROP INDEX CONCURRENTLY IF EXISTS koyojobs_jobs_failed_idx;

-- name: console_jobs
-- A page of the jobs page, exact at any table size: the newest jobs below id
-- $5 whose status is among $1, of queue $2 (NULL: any), whose name starts
-- with $3 (NULL: any) and is among $4 (NULL: any; a label's names), at most $6.
-- The (status, name, queue) combinations are found by skipping through the
-- indexes of 0009_console (a probe each); for each that matches, its newest
-- ids below the cursor are read from the same index (at most $6 each); the
-- running rows, few, are read whole. The page is the newest $6 of those.
WITH RECURSIVE finished_kinds AS (
    (SELECT j.status, j.name, j.queue FROM koyojobs_jobs AS j
      WHERE j.status IN ('done', 'failed', 'cancelled')
        AND $1::text[] && ARRAY['done', 'failed', 'cancelled']
      ORDER BY j.status, j.name COLLATE "C", j.queue LIMIT 1)
    UNION ALL
    SELECT n.status, n.name, n.queue
      FROM finished_kinds AS k
     CROSS JOIN LATERAL (
           SELECT j.status, j.name, j.queue FROM koyojobs_jobs AS j
            WHERE j.status IN ('done', 'failed', 'cancelled')
              AND (j.status, j.name COLLATE "C", j.queue) > (k.status, k.name COLLATE "C", k.queue)
            ORDER BY j.status, j.name COLLATE "C", j.queue LIMIT 1) AS n
), ready_kinds AS (
    (SELECT j.name, j.queue FROM koyojobs_jobs AS j
      WHERE j.status = 'ready' AND 'ready' = ANY ($1::text[])
      ORDER BY j.name COLLATE "C", j.queue LIMIT 1)
    UNION ALL
    SELECT n.name, n.queue
      FROM ready_kinds AS k
     CROSS JOIN LATERAL (
           SELECT j.name, j.queue FROM koyojobs_jobs AS j
            WHERE j.status = 'ready'
              AND (j.name COLLATE "C", j.queue) > (k.name COLLATE "C", k.queue)
            ORDER BY j.name COLLATE "C", j.queue LIMIT 1) AS n
), kinds AS (
    SELECT status, name, queue FROM finished_kinds
     WHERE status = ANY ($1::text[])
    UNION ALL
    SELECT 'ready', name, queue FROM ready_kinds
), matching AS (
    SELECT status, name, queue FROM kinds
     WHERE ($2::text IS NULL OR queue = $2)
       AND ($3::text IS NULL OR starts_with(name, $3))
       AND ($4::text[] IS NULL OR name = ANY ($4::text[]))
), found AS (
    SELECT x.id
      FROM matching AS m
     CROSS JOIN LATERAL (
           SELECT j.id FROM koyojobs_jobs AS j
            WHERE m.status <> 'ready' AND j.status = m.status
              AND j.status IN ('done', 'failed', 'cancelled')
              AND (j.name COLLATE "C") = m.name AND j.queue = m.queue AND j.id < $5
            ORDER BY j.status DESC, (j.name COLLATE "C") DESC, j.queue DESC, j.id DESC
            LIMIT $6) AS x
    UNION ALL
    SELECT x.id
      FROM matching AS m
     CROSS JOIN LATERAL (
           SELECT j.id FROM koyojobs_jobs AS j
            WHERE m.status = 'ready' AND j.status = 'ready'
              AND (j.name COLLATE "C") = m.name AND j.queue = m.queue AND j.id < $5
            ORDER BY (j.name COLLATE "C") DESC, j.queue DESC, j.id DESC LIMIT $6) AS x
    UNION ALL
    SELECT j.id FROM koyojobs_jobs AS j
     WHERE j.status = 'running' AND 'running' = ANY ($1::text[]) AND j.id < $5
       AND ($2::text IS NULL OR j.queue = $2)
       AND ($3::text IS NULL OR starts_with(j.name, $3))
       AND ($4::text[] IS NULL OR j.name = ANY ($4::text[]))
), page AS (
    SELECT id FROM found ORDER BY id DESC LIMIT $6
)
SELECT j.id, j.name, j.queue, j.priority, j.status, j.attempts, j.max_attempts,
       j.scheduled_at, j.created_at, j.finished_at, j.last_error, j.progress, j.progress_message
  FROM page
  JOIN koyojobs_jobs AS j ON j.id = page.id
 ORDER BY j.id DESC;

-- name: bulk_picked
-- One batch of a bulk action: the newest jobs below id $7 whose status is among
-- $1, of queue $2, named $3, with a name starting with $4, among the names $5
-- and the ids $6 (each NULL: any), at most $8 of them, locked; rows another
-- transaction holds (a worker claiming or renewing) are skipped, never waited
-- for. A CTE of bulk_retry, bulk_cancel and bulk_delete.
picked AS (
    SELECT id FROM koyojobs_jobs
     WHERE status = ANY ($1::text[])
       AND ($2::text IS NULL OR queue = $2)
       AND ($3::text IS NULL OR name = $3)
       AND ($4::text IS NULL OR starts_with(name, $4))
       AND ($5::text[] IS NULL OR name = ANY ($5::text[]))
       AND ($6::bigint[] IS NULL OR id = ANY ($6::bigint[]))
       AND id < $7
     ORDER BY id DESC
     LIMIT $8
       FOR UPDATE SKIP LOCKED
)

-- name: bulk_retry
-- A batch of Broker.retry_many: finished jobs run again with fresh attempts,
-- as retry_job does (a step still waiting for upstream steps is not retried;
-- its retried upstream step revives it). Of the jobs sharing a unique key, the newest picked one
-- is retried, and none while another job holds the key, pending included ($9 false: no job with
-- a unique key, after a race with an enqueue took one). Returns where the
-- batch ended (the next batch starts below), how many it picked and retried,
-- and the queues to wake.
WITH
-- include: bulk_picked
, changed AS (
    UPDATE koyojobs_jobs AS j
       SET status = 'ready', scheduled_at = now(), attempts = 0, finished_at = NULL,
           result = NULL, lease_expires_at = NULL, worker_id = NULL
      FROM picked
     WHERE j.id = picked.id AND j.status IN ('done', 'failed', 'cancelled')
       AND coalesce(j.upstream_left, 0) <= 0
       AND (j.unique_key IS NULL
            OR ($9 AND j.id = (SELECT max(p.id) FROM picked AS p
                                 JOIN koyojobs_jobs AS s ON s.id = p.id
                                WHERE s.unique_key = j.unique_key)
                   AND NOT EXISTS (SELECT FROM koyojobs_jobs AS k
                                    WHERE k.unique_key = j.unique_key
                                      AND k.status IN ('pending', 'ready', 'running'))))
    RETURNING j.id, j.queue, j.workflow_id
), retried AS (
    SELECT id, workflow_id FROM changed
)
-- include: revive_dependents
SELECT (SELECT min(id) FROM picked) AS floor,
       (SELECT count(*) FROM picked) AS picked,
       (SELECT count(*) FROM changed) AS changed,
       (SELECT coalesce(array_agg(DISTINCT queue), '{}') FROM changed) AS queues;

-- name: bulk_cancel
-- A batch of Broker.cancel_many: pending, ready and running jobs cancelled,
-- as cancel_job does (a running one's worker stops it at its next renewal;
-- a step's dependents are cancelled with it, its "always" ones released).
WITH
-- include: bulk_picked
, changed AS (
    UPDATE koyojobs_jobs AS j
       SET status = 'cancelled', finished_at = now(), lease_expires_at = NULL, worker_id = NULL
      FROM picked
     WHERE j.id = picked.id AND j.status IN ('pending', 'ready', 'running') AND $9
    RETURNING j.id, j.queue, j.status, j.step, j.workflow_id
), ended AS (
    SELECT id, status, step FROM changed WHERE workflow_id IS NOT NULL
)
-- include: release_dependents
SELECT (SELECT min(id) FROM picked) AS floor,
       (SELECT count(*) FROM picked) AS picked,
       (SELECT count(*) FROM changed) AS changed,
       (SELECT coalesce(array_agg(DISTINCT queue), '{}') FROM changed) AS queues;

-- name: bulk_delete
-- A batch of Broker.delete_many: pending, ready or finished jobs deleted,
-- never a running one (its worker holds it). A step deleted before it ended
-- cancels its dependents, as a cancel would: none waits for it for good.
WITH
-- include: bulk_picked
, changed AS (
    DELETE FROM koyojobs_jobs AS j
     USING picked
     WHERE j.id = picked.id AND j.status <> 'running' AND $9
    RETURNING j.id, j.queue, j.status, j.step, j.workflow_id
-- A step deleted before it ended ends for its dependents as a cancelled one.
), ended AS (
    SELECT id, 'cancelled'::text AS status, step FROM changed
     WHERE workflow_id IS NOT NULL AND status IN ('pending', 'ready')
)
-- include: release_dependents
SELECT (SELECT min(id) FROM picked) AS floor,
       (SELECT count(*) FROM picked) AS picked,
       (SELECT count(*) FROM changed) AS changed,
       (SELECT coalesce(array_agg(DISTINCT queue), '{}') FROM changed) AS queues;

-- name: bulk_count
-- How many jobs a bulk action's filter matches now (bulk_picked's filter), for
-- the confirmation; counted up to $7.
SELECT count(*) FROM (
    SELECT FROM koyojobs_jobs
     WHERE status = ANY ($1::text[])
       AND ($2::text IS NULL OR queue = $2)
       AND ($3::text IS NULL OR name = $3)
       AND ($4::text IS NULL OR starts_with(name, $4))
       AND ($5::text[] IS NULL OR name = ANY ($5::text[]))
       AND ($6::bigint[] IS NULL OR id = ANY ($6::bigint[]))
     LIMIT $7) AS bounded;

-- name: notify_finished
-- Wakes Broker.wait callers after a bulk cancel or delete.
SELECT pg_notify('koyojobs_finished', '');

-- name: worker_beat
-- A worker process's heartbeat: its row written (or written again, after an
-- outage that let others think it gone), and the rows of processes not seen
-- for three of their own heartbeats deleted.
WITH beat AS (
    INSERT INTO koyojobs_workers AS w
           (id, host, pid, queues, concurrency, running, started_at, last_seen, interval_s)
    VALUES ($1, $2, $3, $4::text[], $5, $6, $7, now(), $8)
    ON CONFLICT (id) DO UPDATE
       SET queues = excluded.queues, concurrency = excluded.concurrency,
           running = excluded.running, last_seen = now(), interval_s = excluded.interval_s
)
DELETE FROM koyojobs_workers
 WHERE last_seen < now() - make_interval(secs => 3 * interval_s) AND id <> $1;

-- name: worker_gone
-- A worker process stopping: its row goes at once.
DELETE FROM koyojobs_workers WHERE id = $1;

-- name: live_workers
-- Every worker process seen within three of its heartbeats.
SELECT id, host, pid, queues, concurrency, running, started_at, last_seen,
       extract(epoch FROM now() - last_seen)::float8 AS seen_ago
  FROM koyojobs_workers
 WHERE last_seen >= now() - make_interval(secs => 3 * interval_s)
 ORDER BY host, pid, started_at;

-- name: rollup_claim
-- The rollup's one row, locked for this transaction unless another process
-- rolls up now (then no row: this one leaves it). Returns the span to roll:
-- from where the last rollup ended (at most two days back) to the end of the
-- minute before the last, an hour at most per call.
SELECT lo, least(lo + interval '1 hour', date_trunc('minute', now()) - interval '1 minute') AS hi
  FROM (SELECT greatest(rolled_until, date_trunc('minute', now()) - interval '2 days') AS lo
          FROM koyojobs_rollup
           FOR UPDATE SKIP LOCKED) AS s;

-- name: finished_in_span
-- The jobs that finished done or failed in [$1, $2), with their queue, minute
-- and the time they waited from due to start, read through 0006's index of
-- finished rows by queue (a probe per queue, then each queue's range of the
-- span): CTEs of rollup_minutes and chart_tail, after WITH RECURSIVE.
queues(queue) AS (
    (SELECT queue FROM koyojobs_jobs
      WHERE status IN ('done', 'failed', 'cancelled') ORDER BY queue LIMIT 1)
    UNION ALL
    SELECT (SELECT j.queue FROM koyojobs_jobs AS j
             WHERE j.status IN ('done', 'failed', 'cancelled') AND j.queue > q.queue
             ORDER BY j.queue LIMIT 1)
      FROM queues AS q
     WHERE q.queue IS NOT NULL
), finished AS (
    SELECT q.queue, date_trunc('minute', j.finished_at) AS minute, j.status,
           greatest(extract(epoch FROM j.started_at - j.scheduled_at), 0)::float8 AS waited
      FROM queues AS q
     CROSS JOIN LATERAL (
           SELECT j.finished_at, j.status, j.started_at, j.scheduled_at
             FROM koyojobs_jobs AS j
            WHERE j.queue = q.queue AND j.status IN ('done', 'failed')
              AND j.finished_at >= $1 AND j.finished_at < $2) AS j
     WHERE q.queue IS NOT NULL
), per_minute AS (
    SELECT minute, queue,
           count(*) FILTER (WHERE status = 'done') AS done,
           count(*) FILTER (WHERE status = 'failed') AS failed,
           coalesce(sum(waited), 0) AS waited_sum, count(waited) AS waited_count,
           coalesce(max(waited), 0) AS waited_max
      FROM finished
     GROUP BY minute, queue
)

-- name: rollup_minutes
-- The minutes of [$1, $2) per queue, written over whatever they held.
WITH RECURSIVE
-- include: finished_in_span
INSERT INTO koyojobs_minutes AS m
       (minute, queue, done, failed, waited_sum, waited_count, waited_max)
SELECT * FROM per_minute
ON CONFLICT (minute, queue) DO UPDATE
   SET done = excluded.done, failed = excluded.failed, waited_sum = excluded.waited_sum,
       waited_count = excluded.waited_count, waited_max = excluded.waited_max;

-- name: chart_mark
-- Where the rolled-up minutes end, and the database's clock.
SELECT rolled_until, now() AS now FROM koyojobs_rollup;

-- name: chart_rolled
-- The rolled-up minutes from $1 until $2, every queue (the primary key's
-- range), summed into bars of $3 from $1.
SELECT date_bin($3::interval, minute, $1) AS minute, queue,
       sum(done) AS done, sum(failed) AS failed, sum(waited_sum) AS waited_sum,
       sum(waited_count) AS waited_count, max(waited_max) AS waited_max
  FROM koyojobs_minutes
 WHERE minute >= $1 AND minute < $2
 GROUP BY 1, 2;

-- name: chart_tail
-- The minutes of [$1, $2) not rolled up yet, read from the jobs table.
WITH RECURSIVE
-- include: finished_in_span
SELECT * FROM per_minute;

-- name: rollup_done
-- Where the next rollup starts; minutes older than two days are dropped.
WITH moved AS (UPDATE koyojobs_rollup SET rolled_until = $1)
DELETE FROM koyojobs_minutes WHERE minute < now() - interval '2 days';
