-- The claim loop: outcomes written and jobs claimed in one statement, and when the next job is due.
-- Blocks start with "-- name: NAME"; Python asks for them by that name.

-- name: finished_outcomes
-- The outcomes of finished attempts, written: the first CTE of finish_and_claim
-- and finish_and_claim_limited ($5..$11, and the progress the runs reported,
-- $12 and $13, NULL where none did). An outcome that arrives after the
-- rescue put its job back (its lease lapsed in an outage) is still kept while
-- no later attempt has started: a success is stored as done, not left failed
-- with "lease lapsed". Once: writing it clears lapsed_attempt.
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
           worker_id = NULL,
           lapsed_attempt = NULL,
           progress = coalesce(u.progress, j.progress),
           progress_message = CASE WHEN u.progress IS NULL THEN j.progress_message
                                   ELSE u.progress_message END
      FROM unnest($5::bigint[], $6::integer[], $7::text[], $8::bytea[], $9::text[],
                  $10::text[], $11::float8[], $12::real[], $13::text[])
           AS u(id, attempt, status, result, error, traceback, delay, progress, progress_message)
     WHERE j.id = u.id
       -- The attempt that holds the job, or the one whose lease lapsed while
       -- its outcome was on the way, as long as no later attempt has begun.
       -- Not a workflow step the rescue failed: its dependents were already
       -- cancelled for it.
       AND CASE WHEN j.status = 'running' THEN j.attempts = u.attempt
                WHEN j.status = 'ready' OR (j.status = 'failed' AND j.workflow_id IS NULL)
                THEN j.lapsed_attempt = u.attempt AND j.attempts = u.attempt
                ELSE false END
    RETURNING j.id, j.status, j.step, j.workflow_id,
              CASE WHEN j.waited AND u.status NOT IN ('ready', 'snoozed')
                   THEN pg_notify('koyojobs_finished', '') END
)

-- name: finished_steps
-- The workflow steps that finished_outcomes ended, and what that releases or
-- cancels (koyojobs.workflows), in the same statement. A batch of plain jobs
-- ends no step, and calls nothing.
, ended AS (
    SELECT id, status, step FROM finished
     WHERE workflow_id IS NOT NULL AND status IN ('done', 'failed')
)
-- include: release_dependents

-- name: claim_picked
-- The claim of the rows a CTE "picked" holds, shared by finish_and_claim and
-- finish_and_claim_limited. The attempt counter goes up, so a run lost with its
-- worker still counts. started_at is the wall clock: for limited jobs, after
-- the keys' locks, as the rate windows count it.
UPDATE koyojobs_jobs AS j
   SET status = 'running',
       attempts = j.attempts + 1,
       started_at = clock_timestamp(),
       lease_expires_at = now() + make_interval(secs => $3),
       worker_id = $4,
       lapsed_attempt = NULL
 -- An array, not a join: a generic plan guesses LIMIT $2 at a tenth of the
 -- table and would hash-join it; an array of ids always takes the primary key.
 WHERE j.id = ANY (ARRAY(SELECT id FROM picked))
RETURNING j.id, j.name, j.queue, j.priority, j.args, j.attempts, j.max_attempts, j.scheduled_at,
          j.trace_context, j.limit_key, j.workflow_id

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
-- include: finished_steps
, picked AS (
    SELECT id
      FROM koyojobs_jobs
     WHERE queue = $1 AND status = 'ready' AND scheduled_at <= now()
       AND NOT EXISTS (SELECT FROM koyojobs_queues WHERE queue = $1)
     ORDER BY priority, scheduled_at, id
     LIMIT $2
       FOR UPDATE SKIP LOCKED
)
-- include: claim_picked
;

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
-- include: finished_steps
, taken AS (
    SELECT koyojobs_limited_take($1, $2, (SELECT count(*) FROM finished)) AS ids
), picked AS (
    SELECT id
      FROM koyojobs_jobs
     WHERE id = ANY ((SELECT ids FROM taken)::bigint[]) AND status = 'ready'
       FOR UPDATE SKIP LOCKED
), claimed AS (
-- include: claim_picked
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
SELECT id, name, queue, priority, args, attempts, max_attempts, scheduled_at, trace_context,
       workflow_id
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
