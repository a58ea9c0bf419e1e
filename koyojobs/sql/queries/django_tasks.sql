-- Django's Tasks framework (koyojobs.contrib.django.tasks).
-- Blocks start with "-- name: NAME"; Python asks for them by that name.

-- name: get_task
-- get_job for a Django TaskResult: with the arguments it shows and the worker
-- running the job, if one is.
SELECT id, name, queue, priority, status, attempts, max_attempts, scheduled_at,
       created_at, started_at, finished_at, last_error, last_traceback, result, snoozes,
       args, worker_id
  FROM koyojobs_jobs
 WHERE id = $1;
