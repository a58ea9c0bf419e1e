-- Every statement koyojobs sends, by name. Loaded once by koyojobs.sql.
-- Blocks start with "-- name: NAME"; Python asks for them by that name.

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS koyojobs_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: migration_lock
-- Held until the migrating transaction ends, so concurrent starts migrate once.
SELECT pg_advisory_xact_lock(hashtextextended('koyojobs.migrate', 0));

-- name: applied_migrations
SELECT version FROM koyojobs_migrations ORDER BY version;

-- name: record_migration
INSERT INTO koyojobs_migrations (version, name) VALUES ($1, $2);

-- name: insert_job
-- One job, the common case of a web request: a plain VALUES insert plans and
-- runs faster than unnesting arrays of one. The same trigger notifies.
INSERT INTO koyojobs_jobs (name, queue, priority, max_attempts, args, scheduled_at, limit_key)
VALUES ($1, $2, $3, $4, $5, coalesce($6, now()), $7)
RETURNING id;

-- name: insert_jobs
-- Many jobs in one statement; the statement trigger sends one NOTIFY per queue.
-- A NULL scheduled_at means "now" by the database's clock.
INSERT INTO koyojobs_jobs (name, queue, priority, max_attempts, args, scheduled_at, limit_key)
SELECT u.name, u.queue, u.priority, u.max_attempts, u.args, coalesce(u.scheduled_at, now()),
       u.limit_key
  FROM unnest($1::text[], $2::text[], $3::integer[], $4::integer[], $5::bytea[], $6::timestamptz[],
              $7::text[])
       WITH ORDINALITY AS u(name, queue, priority, max_attempts, args, scheduled_at, limit_key, ord)
 ORDER BY u.ord
RETURNING id;

-- name: insert_job_traced
-- insert_job while OpenTelemetry instrumentation is on: with the trace context.
INSERT INTO koyojobs_jobs (name, queue, priority, max_attempts, args, scheduled_at,
                           limit_key, trace_context)
VALUES ($1, $2, $3, $4, $5, coalesce($6, now()), $7, $8)
RETURNING id;

-- name: insert_jobs_traced
-- insert_jobs while OpenTelemetry instrumentation is on: one trace context for all.
INSERT INTO koyojobs_jobs (name, queue, priority, max_attempts, args, scheduled_at,
                           limit_key, trace_context)
SELECT u.name, u.queue, u.priority, u.max_attempts, u.args, coalesce(u.scheduled_at, now()),
       u.limit_key, $8
  FROM unnest($1::text[], $2::text[], $3::integer[], $4::integer[], $5::bytea[], $6::timestamptz[],
              $7::text[])
       WITH ORDINALITY AS u(name, queue, priority, max_attempts, args, scheduled_at, limit_key, ord)
 ORDER BY u.ord
RETURNING id;

-- name: insert_jobs_unique
-- Jobs some of which are unique ($8 keys): see koyojobs_insert_unique. $9 is
-- the trace context (NULL without OpenTelemetry).
SELECT id, unique_key
  FROM koyojobs_insert_unique($1::text[], $2::text[], $3::integer[], $4::integer[], $5::bytea[],
                              $6::timestamptz[], $7::text[], $8::uuid[], $9::text);

-- name: finished_outcomes
-- The outcomes of finished attempts, written: the first CTE of finish_and_claim
-- and finish_and_claim_limited ($5..$11).
finished AS (
    UPDATE koyojobs_jobs AS j
       SET status = CASE WHEN u.status = 'snoozed' THEN 'ready' ELSE u.status END,
           attempts = j.attempts - (u.status = 'snoozed')::integer,
           snoozes = j.snoozes + (u.status = 'snoozed')::integer,
           result = u.result,
           last_error = coalesce(u.error, j.last_error),
           last_traceback = coalesce(u.traceback, j.last_traceback),
           scheduled_at = CASE WHEN u.status IN ('ready', 'snoozed')
                               THEN now() + make_interval(secs => u.delay)
                               ELSE j.scheduled_at END,
           finished_at = CASE WHEN u.status IN ('ready', 'snoozed') THEN NULL ELSE now() END,
           lease_expires_at = NULL,
           worker_id = NULL
      FROM unnest($5::bigint[], $6::integer[], $7::text[], $8::bytea[], $9::text[],
                  $10::text[], $11::float8[])
           AS u(id, attempt, status, result, error, traceback, delay)
     WHERE j.id = u.id
       AND CASE WHEN j.status = 'running' THEN j.attempts = u.attempt ELSE false END
    RETURNING CASE WHEN j.waited AND u.status NOT IN ('ready', 'snoozed')
                   THEN pg_notify('koyojobs_finished', '') END
)

-- name: finish_and_claim
-- One round trip per batch: records the outcomes of finished attempts ($5..$11,
-- possibly none) and claims up to $2 due jobs of queue $1 (possibly none).
-- Only the attempt that still holds a job may write its outcome: a rescued,
-- re-claimed or cancelled job is left alone (the guard on attempts and status).
-- The guard sits in a CASE so that the planner neither estimates it from
-- statistics (stale after a bulk insert: "running" looks empty, and it picks a
-- scan of every running row) nor matches the partial index of running rows: it
-- joins the batch to the primary key. The claim increments the attempt counter,
-- so a run lost with its worker still counts. Both parts see one snapshot, in
-- which the finished rows are still running: none of them is claimed again here.
-- A batch that ends jobs someone waits for (Broker.wait marks them "waited")
-- notifies koyojobs_finished ONCE: pg_notify is called per such row, but
-- PostgreSQL delivers identical notifications of one transaction once. A
-- round that ends no waited job sends none: a NOTIFY costs its transaction a
-- cluster-wide lock at commit, which slowed a drain by a sixth. A "snoozed"
-- outcome is ready again with the attempt given back. A paused queue (a row
-- in koyojobs_queues) claims nothing.
WITH
-- include: finished_outcomes
, picked AS (
    SELECT id
      FROM koyojobs_jobs
     WHERE queue = $1 AND status = 'ready' AND scheduled_at <= now()
       AND NOT EXISTS (SELECT FROM koyojobs_queues WHERE queue = $1)
     ORDER BY priority, scheduled_at, id
     LIMIT $2
       FOR UPDATE SKIP LOCKED
)
UPDATE koyojobs_jobs AS j
   SET status = 'running',
       attempts = j.attempts + 1,
       started_at = now(),
       lease_expires_at = now() + make_interval(secs => $3),
       worker_id = $4
 -- An array, not a join: a generic plan guesses LIMIT $2 at a tenth of the
 -- table and would hash-join it; an array of ids always takes the primary key.
 WHERE j.id = ANY (ARRAY(SELECT id FROM picked))
RETURNING j.id, j.name, j.queue, j.priority, j.args, j.attempts, j.max_attempts, j.scheduled_at,
          j.trace_context;

-- name: next_due
-- Seconds until the earliest ready job of a queue is due (negative: overdue);
-- NULL while the queue is paused.
SELECT extract(epoch FROM min(scheduled_at) - now())::float8
  FROM koyojobs_jobs
 WHERE queue = $1 AND status = 'ready'
   AND NOT EXISTS (SELECT FROM koyojobs_queues WHERE queue = $1);

-- name: finish_and_claim_limited
-- finish_and_claim for a queue whose jobs have limits (koyojobs.limits):
-- koyojobs_limited_take picks the jobs under the keys' locks (after the
-- outcomes are written: it takes their count), and this statement locks and
-- claims them as finish_and_claim does. A job taken since this statement's
-- snapshot fails the re-check of FOR UPDATE and is passed over. The starts of
-- rate-limited keys are added to their windows: ON CONFLICT reads a window's
-- latest row, whatever this statement's snapshot holds.
WITH
-- include: finished_outcomes
, taken AS (
    SELECT koyojobs_limited_take($1, $2, (SELECT count(*) FROM finished)) AS ids
), picked AS (
    SELECT id
      FROM koyojobs_jobs
     WHERE id = ANY ((SELECT ids FROM taken)::bigint[]) AND status = 'ready'
       FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE koyojobs_jobs AS j
       SET status = 'running',
           attempts = j.attempts + 1,
           -- The wall clock, as the rate windows: after the keys' locks.
           started_at = clock_timestamp(),
           lease_expires_at = now() + make_interval(secs => $3),
           worker_id = $4
     WHERE j.id = ANY (ARRAY(SELECT id FROM picked))
    RETURNING j.id, j.name, j.queue, j.priority, j.args, j.attempts, j.max_attempts,
              j.scheduled_at, j.trace_context, j.limit_key
), started AS (
    SELECT c.limit_key, d.rate_count, d.rate_seconds,
           koyojobs_window(array_fill(clock_timestamp(), ARRAY[count(*)::integer]),
                           d.rate_count, d.rate_seconds) AS starts
      FROM claimed AS c
      JOIN koyojobs_limited_jobs AS d ON d.name = c.name AND d.rate_count IS NOT NULL
     WHERE c.limit_key IS NOT NULL
     GROUP BY c.limit_key, d.rate_count, d.rate_seconds
), recorded AS (
    INSERT INTO koyojobs_rate_windows AS w (limit_key, starts, blocked_until, rate_count,
                                            rate_seconds)
    SELECT limit_key, starts, koyojobs_window_blocks_until(starts, rate_count, rate_seconds),
           rate_count, rate_seconds
      FROM started
    ON CONFLICT (limit_key) DO UPDATE
       SET starts = koyojobs_window(w.starts || excluded.starts, excluded.rate_count,
                                    excluded.rate_seconds),
           blocked_until = koyojobs_window_blocks_until(
               koyojobs_window(w.starts || excluded.starts, excluded.rate_count,
                               excluded.rate_seconds),
               excluded.rate_count, excluded.rate_seconds),
           rate_count = excluded.rate_count,
           rate_seconds = excluded.rate_seconds
)
SELECT id, name, queue, priority, args, attempts, max_attempts, scheduled_at, trace_context
  FROM claimed;

-- name: next_due_limited
-- next_due for a queue with limits: jobs held back by a full key do not count
-- (they would wake the worker for nothing), but the moment a full rate
-- window of one of its jobs ($2, their names) frees does.
SELECT CASE WHEN NOT EXISTS (SELECT FROM koyojobs_queues WHERE queue = $1) THEN
       extract(epoch FROM least(
           (SELECT min(scheduled_at)
              FROM koyojobs_jobs
             WHERE queue = $1 AND status = 'ready'
               AND (limit_key IS NULL
                    OR limit_key NOT IN (SELECT k FROM koyojobs_full_keys() AS k))),
           (SELECT min(blocked_until) FROM koyojobs_rate_windows
             WHERE blocked_until > now() AND split_part(limit_key, chr(31), 1) = ANY ($2::text[]))
       ) - now())::float8
       END;

-- name: register_limits
-- A worker declares the limits of the jobs it runs ($1..$4); the jobs it runs
-- without limits ($5) lose theirs. The rate windows of a job whose rate
-- limit changed are measured again by the new one (when a full window frees
-- its key depends on it), and go with the limit.
WITH declared AS (
    INSERT INTO koyojobs_limited_jobs AS d (name, concurrency, rate_count, rate_seconds)
    SELECT * FROM unnest($1::text[], $2::integer[], $3::integer[], $4::float8[])
    ON CONFLICT (name) DO UPDATE
       SET concurrency = excluded.concurrency,
           rate_count = excluded.rate_count,
           rate_seconds = excluded.rate_seconds,
           declared_at = now()
     WHERE (d.concurrency, d.rate_count, d.rate_seconds)
           IS DISTINCT FROM (excluded.concurrency, excluded.rate_count, excluded.rate_seconds)
    RETURNING d.name, d.rate_count, d.rate_seconds
), remeasured AS (
    UPDATE koyojobs_rate_windows AS w
       SET starts = koyojobs_window(w.starts, d.rate_count, d.rate_seconds),
           blocked_until = koyojobs_window_blocks_until(
               koyojobs_window(w.starts, d.rate_count, d.rate_seconds),
               d.rate_count, d.rate_seconds),
           rate_count = d.rate_count,
           rate_seconds = d.rate_seconds
      FROM declared AS d
     WHERE d.rate_count IS NOT NULL AND split_part(w.limit_key, chr(31), 1) = d.name
), unrated AS (
    DELETE FROM koyojobs_rate_windows AS w
     WHERE split_part(w.limit_key, chr(31), 1)
           IN (SELECT name FROM declared WHERE rate_count IS NULL UNION ALL SELECT unnest($5::text[]))
)
DELETE FROM koyojobs_limited_jobs WHERE name = ANY ($5::text[]);

-- name: pause_queue
-- A paused queue claims nothing from this commit on (the claims read the row).
INSERT INTO koyojobs_queues (queue) VALUES ($1) ON CONFLICT (queue) DO NOTHING;

-- name: resume_queue
-- The notification wakes the queue's workers at once.
WITH resumed AS (DELETE FROM koyojobs_queues WHERE queue = $1 RETURNING queue)
SELECT pg_notify('koyojobs', queue) FROM resumed;

-- name: paused_queues
SELECT queue, paused_at FROM koyojobs_queues ORDER BY queue;

-- name: renew_leases
-- Returns the jobs this worker still holds; a job missing from the answer was
-- cancelled or rescued, and its run must stop.
UPDATE koyojobs_jobs
   SET lease_expires_at = now() + make_interval(secs => $3)
 WHERE id = ANY($1::bigint[]) AND worker_id = $2 AND status = 'running'
RETURNING id;

-- name: release_jobs
-- Graceful stop: unfinished runs go back to ready and do not count as attempts.
UPDATE koyojobs_jobs
   SET status = 'ready',
       attempts = attempts - 1,
       lease_expires_at = NULL,
       worker_id = NULL
 WHERE id = ANY($1::bigint[]) AND worker_id = $2 AND status = 'running'
RETURNING id, queue;

-- name: release_unbegun
-- A claim whose lease lapsed before its run began: back to ready, and the run
-- that never was does not count as an attempt. Only while this very claim
-- ($2 the attempt, $3 the claimer) still holds the job: it may have been
-- rescued, or claimed again since.
UPDATE koyojobs_jobs
   SET status = 'ready',
       attempts = attempts - 1,
       lease_expires_at = NULL,
       worker_id = NULL
 WHERE id = $1 AND attempts = $2 AND worker_id = $3 AND status = 'running'
RETURNING queue;

-- name: rescue_lapsed
-- Puts back the jobs whose worker stopped renewing its lease. The lost run
-- counted as an attempt when it was claimed, so a job that kills its worker
-- every time ends failed instead of looping.
WITH lapsed AS (
    SELECT id
      FROM koyojobs_jobs
     WHERE status = 'running' AND lease_expires_at < now()
       FOR UPDATE SKIP LOCKED
), rescued AS (
    UPDATE koyojobs_jobs AS j
       SET status = CASE WHEN j.attempts >= j.max_attempts THEN 'failed' ELSE 'ready' END,
           finished_at = CASE WHEN j.attempts >= j.max_attempts THEN now() END,
           last_error = 'lease lapsed',
           last_traceback = NULL,
           lease_expires_at = NULL,
           worker_id = NULL
      FROM lapsed
     WHERE j.id = lapsed.id
    RETURNING j.id, j.queue, j.status,
              CASE WHEN j.status = 'failed' THEN pg_notify('koyojobs_finished', '') END
)
SELECT id, queue, status FROM rescued;

-- name: notify_queue
SELECT pg_notify('koyojobs', $1);

-- name: get_job
SELECT id, name, queue, priority, status, attempts, max_attempts, scheduled_at,
       created_at, started_at, finished_at, last_error, last_traceback, result, snoozes
  FROM koyojobs_jobs
 WHERE id = $1;

-- name: get_task
-- get_job for koyojobs.contrib.django.tasks (a Django TaskResult): with the
-- arguments it shows and the worker running the job, if one is.
SELECT id, name, queue, priority, status, attempts, max_attempts, scheduled_at,
       created_at, started_at, finished_at, last_error, last_traceback, result, snoozes,
       args, worker_id
  FROM koyojobs_jobs
 WHERE id = $1;

-- name: cancel_job
-- A running job's worker notices at its next lease renewal and stops it.
UPDATE koyojobs_jobs
   SET status = 'cancelled', finished_at = now(), lease_expires_at = NULL, worker_id = NULL
 WHERE id = $1 AND status IN ('ready', 'running')
RETURNING id, pg_notify('koyojobs_finished', '');

-- name: mark_waited
-- Broker.wait: from now on, the statement that ends job $1 notifies.
UPDATE koyojobs_jobs SET waited = true
 WHERE id = $1 AND NOT waited AND status IN ('ready', 'running');

-- name: finished_among
-- Which of the jobs $1 (those Broker.wait waits for) have finished.
SELECT id FROM koyojobs_jobs
 WHERE id = ANY ($1::bigint[]) AND status IN ('done', 'failed', 'cancelled');

-- name: retry_job
-- Operator's retry: a finished job runs again with a fresh attempt budget,
-- unless another job holds its unique key now.
UPDATE koyojobs_jobs AS j
   SET status = 'ready', scheduled_at = now(), attempts = 0, finished_at = NULL,
       result = NULL, lease_expires_at = NULL, worker_id = NULL
 WHERE id = $1 AND status IN ('failed', 'cancelled', 'done')
   AND NOT EXISTS (SELECT FROM koyojobs_jobs AS k
                    WHERE k.unique_key = j.unique_key AND k.status IN ('ready', 'running'))
RETURNING id, queue;

-- name: unique_holder
-- The ready or running job that holds job $1's unique key, if another does.
SELECT k.id
  FROM koyojobs_jobs AS j
  JOIN koyojobs_jobs AS k ON k.unique_key = j.unique_key AND k.status IN ('ready', 'running')
 WHERE j.id = $1 AND k.id <> j.id;

-- name: prune_jobs
-- Retention: deletes jobs finished (done, failed or cancelled) more than $1
-- seconds ago. Running and ready jobs are never touched.
DELETE FROM koyojobs_jobs
 WHERE status IN ('done', 'failed', 'cancelled')
   AND finished_at < now() - make_interval(secs => $1);

-- name: prune_expired
-- Automatic retention (koyojobs.retention): deletes at most $5 finished jobs
-- older than their status's age: $2 seconds for done, $3 failed, $4 cancelled
-- (NULL: kept); $1 is the least of those, so the scan takes the index of
-- finished rows. One pruner at a time across processes: a pruner that does not
-- get the lock (held to the statement's end) deletes nothing this time. Rows
-- another transaction holds are skipped, not waited for. Never ready or running.
DELETE FROM koyojobs_jobs
 WHERE id IN (
    SELECT id
      FROM koyojobs_jobs
     WHERE (SELECT pg_try_advisory_xact_lock(hashtextextended('koyojobs.retention', 0)))
       AND status IN ('done', 'failed', 'cancelled')
       AND finished_at < now() - make_interval(secs => $1)
       AND finished_at < now() - make_interval(secs => CASE status
                                                           WHEN 'done' THEN $2::float8
                                                           WHEN 'failed' THEN $3::float8
                                                           ELSE $4::float8 END)
     LIMIT $5
       FOR UPDATE SKIP LOCKED
 );

-- name: prune_rate_windows
-- Rate windows none of whose starts counts any more: deleting them changes no
-- key's room, and keeps the table at the keys started within their window.
DELETE FROM koyojobs_rate_windows
 WHERE starts[cardinality(starts)] <= now() - make_interval(secs => rate_seconds);

-- name: count_prunable
-- What prune_jobs would delete now, per status (koyojobs prune --dry-run).
SELECT status, count(*)::bigint AS jobs
  FROM koyojobs_jobs
 WHERE status IN ('done', 'failed', 'cancelled')
   AND finished_at < now() - make_interval(secs => $1)
 GROUP BY status;

-- name: job_status
-- Why an operator's retry or cancel did nothing: NULL for an unknown job.
SELECT status FROM koyojobs_jobs WHERE id = $1;

-- name: queue_status
-- Counts per queue and status, how long the oldest due job has waited, and
-- whether the queue is paused (a paused queue shows even with no jobs).
WITH counts AS (
    SELECT queue,
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
       p.queue IS NOT NULL AS paused
  FROM counts AS c
  FULL JOIN koyojobs_queues AS p ON p.queue = c.queue
 ORDER BY 1;

-- name: job_waiting
-- Why the job j, due but not running, waits, if anything but a free worker
-- holds it back: a column of list_jobs and dashboard_job.
       CASE WHEN j.status = 'ready' AND j.scheduled_at <= now() THEN
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
       j.last_traceback, j.result, j.snoozes,
-- include: job_waiting
  FROM koyojobs_jobs AS j
 WHERE ($1::text IS NULL OR j.status = $1) AND ($2::text IS NULL OR j.queue = $2)
 ORDER BY j.id DESC
 LIMIT $3;

-- name: ready_jobs_named
-- What koyojobs.testing inspects: ready jobs of one name, oldest first.
SELECT id, args FROM koyojobs_jobs WHERE name = $1 AND status = 'ready' ORDER BY id;

-- name: ping
SELECT 1;

-- name: set_session
-- Session settings as a statement, not as startup parameters, which
-- connection poolers reject (PgBouncer: "unsupported startup parameter").
SELECT set_config(s.name, s.value, false) FROM unnest($1::text[], $2::text[]) AS s(name, value);

-- name: probe_listener
-- A listener notifies itself through another connection: if the notification
-- never comes back, its LISTEN is deaf (behind a transaction pooler, say).
SELECT pg_notify($1, $2);

-- name: dead_rows
-- Dead row versions in the jobs table (as the statistics last heard), and
-- whether this role may VACUUM it: the table's owner, the database's owner
-- (both as members, which superusers are), and from PostgreSQL 17 a role
-- granted MAINTAIN. Anyone else's VACUUM is skipped with only a warning.
SELECT s.n_dead_tup,
       pg_has_role(c.relowner, 'USAGE')
       OR pg_has_role((SELECT datdba FROM pg_database WHERE datname = current_database()), 'USAGE')
       OR CASE WHEN current_setting('server_version_num')::integer >= 170000
               THEN has_table_privilege(c.oid, 'MAINTAIN')
               ELSE false END AS may_vacuum
  FROM pg_stat_user_tables AS s
  JOIN pg_class AS c ON c.oid = s.relid
 WHERE s.relid = 'koyojobs_jobs'::regclass;

-- name: vacuum_jobs
-- SKIP_LOCKED: when another VACUUM (a worker's or autovacuum's) is on the
-- table, this one returns at once instead of queueing behind it.
VACUUM (SKIP_LOCKED) koyojobs_jobs;

-- name: register_schedules
-- Periodic jobs seen for the first time start from their latest tick (not
-- enqueued); a job already known keeps its row, so a restart catches up.
-- created_at is the moment ($3) the ticker computed that latest tick from.
WITH added AS (
    INSERT INTO koyojobs_schedules (name, last_tick, created_at)
    SELECT name, tick, $3 FROM unnest($1::text[], $2::timestamptz[]) AS u(name, tick)
    ON CONFLICT (name) DO NOTHING
    RETURNING 1
)
SELECT clock_timestamp() AS now, (SELECT count(*) FROM added) AS added;

-- name: enqueue_ticks
-- The ticks now due ($1 names, $2 ticks, with each job's columns): a tick is
-- taken only by moving its job's last_tick forward under the row's lock. A
-- racing ticker blocks on the lock, then sees the moved tick and takes
-- nothing. A job whose previous run is still ready or running skips the tick
-- when asked to ($7). A tick that is not yet due by the database's clock is
-- left for the next round. Every name comes back with the tick the database
-- now holds for it (NULL: its row is gone).
WITH due AS (
    SELECT *
      FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::integer[], $5::integer[],
                  $6::bytea[], $7::boolean[], $8::text[])
           AS d(name, tick, queue, priority, max_attempts, args, skip_if_running, limit_key)
), won AS MATERIALIZED (
    SELECT s.name, d.tick, d.queue, d.priority, d.max_attempts, d.args, d.limit_key,
           d.skip_if_running AND EXISTS (
               SELECT 1 FROM koyojobs_jobs AS j
                WHERE j.id = s.last_job_id AND j.status IN ('ready', 'running')
           ) AS busy
      FROM koyojobs_schedules AS s
      JOIN due AS d ON d.name = s.name
     WHERE s.last_tick < d.tick
       AND d.tick <= clock_timestamp()
       FOR UPDATE OF s
), enqueued AS (
    INSERT INTO koyojobs_jobs (name, queue, priority, max_attempts, args, scheduled_at, limit_key)
    SELECT name, queue, priority, max_attempts, args, tick, limit_key FROM won WHERE NOT busy
    RETURNING id, name
), moved AS (
    UPDATE koyojobs_schedules AS s
       SET last_tick = w.tick,
           last_skipped = w.busy,
           last_job_id = coalesce(e.id, s.last_job_id),
           last_enqueued_tick = CASE WHEN w.busy THEN s.last_enqueued_tick ELSE w.tick END
      FROM won AS w
      LEFT JOIN enqueued AS e ON e.name = w.name
     WHERE s.name = w.name
    RETURNING s.name, s.last_tick, w.busy
)
SELECT d.name,
       coalesce(m.last_tick, s.last_tick) AS last_tick,
       m.name IS NOT NULL AND NOT m.busy AS enqueued,
       coalesce(m.busy, false) AS skipped,
       clock_timestamp() AS now
  FROM due AS d
  LEFT JOIN moved AS m ON m.name = d.name
  LEFT JOIN koyojobs_schedules AS s ON s.name = d.name;

-- name: run_schedule_now
-- A periodic job run now, outside its schedule (the dashboard's "Run now"),
-- with a tick's columns ($1..$6). When asked to ($7, skip_if_running),
-- nothing is enqueued while a run of the job is ready or running (the
-- schedule's last one, or one run now before). The run enqueued becomes the
-- one the next tick looks at; the tick itself stays: the schedule goes on.
WITH busy AS (
    SELECT $7::boolean AND EXISTS (
               SELECT FROM koyojobs_jobs AS j
                WHERE j.queue = $2 AND j.name = $1 AND j.status IN ('ready', 'running'))
           AS busy
), enqueued AS (
    INSERT INTO koyojobs_jobs (name, queue, priority, max_attempts, args, limit_key)
    SELECT $1, $2, $3, $4, $5, $6 FROM busy WHERE NOT busy.busy
    RETURNING id
), recorded AS (
    UPDATE koyojobs_schedules AS s SET last_job_id = e.id
      FROM enqueued AS e
     WHERE s.name = $1
)
SELECT id FROM enqueued;

-- name: database_now
SELECT clock_timestamp();

-- name: schedules
-- What `koyojobs schedules` shows of each periodic job the database knows.
SELECT name, last_tick, last_enqueued_tick, last_skipped, last_job_id
  FROM koyojobs_schedules
 WHERE name = ANY($1::text[]);

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
             j.scheduled_at, j.created_at, j.finished_at, j.last_error
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
-- Every column of one job, for the dashboard's job page (new columns too),
-- and why it waits (job_waiting).
SELECT j.*,
-- include: job_waiting
  FROM koyojobs_jobs AS j
 WHERE j.id = $1;

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
