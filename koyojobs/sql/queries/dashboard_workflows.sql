-- The dashboard's workflow page (koyojobs.dashboard.workflow_page).
-- Blocks start with "-- name: NAME"; Python asks for them by that name.

-- name: dashboard_workflow
-- A workflow and how many of its steps have each status.
SELECT w.id, w.name, w.created_at,
       coalesce((SELECT jsonb_object_agg(c.status, c.steps)
                   FROM (SELECT status, count(*) AS steps FROM koyojobs_jobs
                          WHERE workflow_id = w.id GROUP BY status) AS c), '{}') AS counts
  FROM koyojobs_workflows AS w
 WHERE w.id = $1;

-- name: dashboard_workflow_steps
-- The first $2 steps of workflow $1, in the order they were added, each with
-- the steps it waits for (all, and those not yet ended). No payloads: the
-- page never unpickles.
SELECT j.id, j.step, j.name, j.queue, j.status, j.attempts, j.max_attempts, j.started_at,
       j.finished_at, j.last_error, j.progress, j.progress_message,
       ARRAY(SELECT u.step
               FROM koyojobs_job_edges AS e
               JOIN koyojobs_jobs AS u ON u.id = e.upstream_id
              WHERE e.job_id = j.id
              ORDER BY u.id) AS after,
       ARRAY(SELECT u.step
               FROM koyojobs_job_edges AS e
               JOIN koyojobs_jobs AS u ON u.id = e.upstream_id
              WHERE e.job_id = j.id AND u.status IN ('pending', 'ready', 'running')
              ORDER BY u.id) AS waiting_for,
       coalesce((SELECT bool_and(e.always) FROM koyojobs_job_edges AS e WHERE e.job_id = j.id),
                false) AS always
  FROM koyojobs_jobs AS j
 WHERE j.workflow_id = $1
 ORDER BY j.id
 LIMIT $2;
