-- Leases: renewal, putting jobs back at a graceful stop, and the rescue of lapsed leases.
-- Blocks start with "-- name: NAME"; Python asks for them by that name.

-- name: renew_leases
-- Returns the jobs this worker still holds; a job missing from the answer was
-- cancelled or rescued, and its run must stop.
UPDATE koyojobs_jobs
   SET lease_expires_at = now() + make_interval(secs => $3)
 WHERE id = ANY($1::bigint[]) AND worker_id = $2 AND status = 'running'
RETURNING id;

-- name: renew_leases_progress
-- renew_leases that also writes the progress some runs reported since the
-- last renewal ($4, $5 per id; NULL where a run reported none): no round
-- trip of its own.
UPDATE koyojobs_jobs AS j
   SET lease_expires_at = now() + make_interval(secs => $3),
       progress = coalesce(p.progress, j.progress),
       progress_message = CASE WHEN p.progress IS NULL THEN j.progress_message
                               ELSE p.message END
  FROM unnest($1::bigint[], $4::real[], $5::text[]) AS p(id, progress, message)
 WHERE j.id = p.id AND j.worker_id = $2 AND j.status = 'running'
RETURNING j.id;

-- name: release_jobs
-- Graceful stop: unfinished runs go back to ready and do not count as attempts.
-- A run whose thread may still run ($3) cannot be stopped: its job stays
-- running, renewed by no one, for $4 more seconds, so that no worker starts
-- it and it keeps its concurrency slot until the stopping process has exited
-- and taken the thread with it; then the rescue puts it back. worker_id NULL
-- tells the rescue that the lapse is a stop's, not a lost run's.
UPDATE koyojobs_jobs
   SET status = CASE WHEN id = ANY($3::bigint[]) THEN 'running' ELSE 'ready' END,
       attempts = attempts - 1,
       lease_expires_at = CASE WHEN id = ANY($3::bigint[])
                               THEN now() + make_interval(secs => $4) END,
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
-- every time ends failed instead of looping. A workflow step failed so
-- cancels its dependents, or releases its "always" ones, in this statement.
WITH lapsed AS (
    SELECT id
      FROM koyojobs_jobs
     WHERE status = 'running' AND lease_expires_at < now()
       FOR UPDATE SKIP LOCKED
), rescued AS (
    UPDATE koyojobs_jobs AS j
       SET status = CASE WHEN j.attempts >= j.max_attempts THEN 'failed' ELSE 'ready' END,
           finished_at = CASE WHEN j.attempts >= j.max_attempts THEN now() END,
           -- A run cut short by a graceful stop (worker_id NULL) was not lost.
           last_error = CASE WHEN j.worker_id IS NULL THEN j.last_error ELSE 'lease lapsed' END,
           last_traceback = NULL,
           lease_expires_at = NULL,
           worker_id = NULL,
           lapsed_attempt = j.attempts
      FROM lapsed
     WHERE j.id = lapsed.id
    RETURNING j.id, j.queue, j.status, j.step, j.workflow_id,
              CASE WHEN j.status = 'failed' THEN pg_notify('koyojobs_finished', '') END
), ended AS (
    SELECT id, status, step FROM rescued WHERE workflow_id IS NOT NULL AND status = 'failed'
)
-- include: release_dependents
SELECT id, queue, status FROM rescued;
