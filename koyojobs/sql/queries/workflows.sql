-- Workflows (koyojobs.workflows): enqueueing one, releasing and cancelling
-- the steps that wait for an ended one, reading and cancelling a workflow.
-- Blocks start with "-- name: NAME"; Python asks for them by that name.

-- name: insert_workflow
-- A workflow and all its steps in one statement: rolled back, none of it
-- existed. $1 the workflow's name; $2..$8 the steps' columns as insert_jobs
-- takes them, $9 the trace context; $10 each step's name and $11 how many
-- upstream steps it waits for (a step with none is ready at once); $12..$14
-- the edges (the step's position from 1, its upstream step's, always). Unique keys are not
-- stored: a step belongs to its workflow, never to another job of its key.
WITH workflow AS (
    INSERT INTO koyojobs_workflows (name) VALUES ($1) RETURNING id
), steps AS (
    INSERT INTO koyojobs_jobs (name, queue, priority, max_attempts, args, scheduled_at,
                               limit_key, trace_context, workflow_id, step, upstream_left, status)
    SELECT u.name, u.queue, u.priority, u.max_attempts, u.args, coalesce(u.scheduled_at, now()),
           u.limit_key, $9, (SELECT id FROM workflow), u.step, u.upstream_left,
           CASE WHEN u.upstream_left > 0 THEN 'pending' ELSE 'ready' END
      FROM unnest($2::text[], $3::text[], $4::integer[], $5::integer[], $6::bytea[],
                  $7::timestamptz[], $8::text[], $10::text[], $11::integer[])
           WITH ORDINALITY AS u(name, queue, priority, max_attempts, args, scheduled_at,
                                limit_key, step, upstream_left, ord)
     ORDER BY u.ord
    RETURNING id, step
-- Identity values are drawn in insertion order, which follows the input: the
-- n-th step's id is the n-th smallest. Edges name steps by that position (a
-- join on the step names would compare every pair).
), ordered AS (
    SELECT array_agg(id ORDER BY id) AS ids FROM steps
), edges AS (
    INSERT INTO koyojobs_job_edges (job_id, upstream_id, always)
    SELECT o.ids[e.step], o.ids[e.upstream], e.always
      FROM ordered AS o,
           unnest($12::integer[], $13::integer[], $14::boolean[]) AS e(step, upstream, always)
)
SELECT (SELECT id FROM workflow) AS workflow_id, s.id, s.step FROM steps AS s;

-- name: release_dependents
-- Included after a CTE "ended" (id, status, step) of the steps this statement
-- ended (done, failed or cancelled), in the statement that ends them: their
-- dependents are released or cancelled in the same transaction, so no crash
-- can leave one pending.
-- doomed: every step that a failed or cancelled one cancels, through any
-- depth, but for "always" steps (which wait for their upstream steps to end
-- in any way); its error names the step that ended badly. Walked by
-- koyojobs_doomed (a function, so that the planner prices the walk as one
-- row: priced as a recursive CTE, it made every round of a worker's claim
-- cost enough to be JIT-compiled, 600 ms a round), and only when one did.
, doomed AS (
    SELECT d.id, min(format('upstream step %L %s', en.step, en.status)) AS cause
      FROM (SELECT ARRAY(SELECT id FROM ended WHERE status <> 'done') AS roots) AS r,
           LATERAL koyojobs_doomed(r.roots) AS d,
           ended AS en
     WHERE cardinality(r.roots) > 0 AND en.id = d.root
     GROUP BY d.id
-- Found through the primary key (an array of ids, as the claim does): a join
-- would scan the table for pending rows, every round, steps or not.
), cascaded AS (
    UPDATE koyojobs_jobs AS j
       SET status = 'cancelled', finished_at = now(), last_error = d.cause
      FROM doomed AS d
     WHERE j.id = d.id AND j.status = 'pending'
       AND j.id = ANY (ARRAY(SELECT id FROM doomed))
    RETURNING j.id, CASE WHEN j.waited THEN pg_notify('koyojobs_finished', '') END
-- The count of upstream steps that ended here, per dependent step. A failed
-- or cancelled one never counts down a step that is not "always": its count
-- never reaches zero, whoever ends its other upstream steps.
), counted AS (
    SELECT e.job_id, count(*)::integer AS n, bool_or(t.bad) AS bad, bool_and(e.always) AS always
      FROM (SELECT id, status <> 'done' AS bad FROM ended
            UNION ALL
            SELECT id, true FROM cascaded) AS t
      JOIN koyojobs_job_edges AS e ON e.upstream_id = t.id
     WHERE NOT EXISTS (SELECT FROM doomed WHERE doomed.id = e.job_id)
     GROUP BY e.job_id
-- Locked in id order: two workers that end steps of one fan-in at once must
-- not take its dependents' rows in opposite orders.
), locked AS (
    SELECT j.id
      FROM koyojobs_jobs AS j
     WHERE j.id = ANY (ARRAY(SELECT job_id FROM counted WHERE always OR NOT bad))
       AND j.status = 'pending'
     ORDER BY j.id
       FOR UPDATE
-- The count is read from the row as it is now (a concurrent count-down is
-- waited for, then re-read): released at zero, woken by a NOTIFY to its
-- queue (the insert trigger only fires on INSERT).
), released AS (
    UPDATE koyojobs_jobs AS j
       SET upstream_left = j.upstream_left - c.n,
           status = CASE WHEN j.upstream_left - c.n <= 0 THEN 'ready' ELSE 'pending' END
      FROM counted AS c
     WHERE j.id = c.job_id AND j.status = 'pending' AND (c.always OR NOT c.bad)
       AND j.id = ANY (ARRAY(SELECT id FROM locked))
    RETURNING CASE WHEN j.status = 'ready' THEN pg_notify('koyojobs', j.queue) END
)

-- name: cancel_workflow
-- Every unfinished step of workflow $1, cancelled; a running one's worker
-- stops it at its next lease renewal. Nothing is left to release.
UPDATE koyojobs_jobs
   SET status = 'cancelled', finished_at = now(), lease_expires_at = NULL, worker_id = NULL,
       last_error = 'workflow cancelled'
 WHERE workflow_id = $1 AND status IN ('pending', 'ready', 'running')
RETURNING id, CASE WHEN waited THEN pg_notify('koyojobs_finished', '') END;

-- name: get_workflow
SELECT id, name, created_at FROM koyojobs_workflows WHERE id = $1;

-- name: workflow_steps
-- A workflow's steps in the order they were added, each with the names of
-- the steps it waits for.
SELECT j.id, j.name, j.queue, j.priority, j.status, j.attempts, j.max_attempts, j.scheduled_at,
       j.created_at, j.started_at, j.finished_at, j.last_error, j.last_traceback, j.result,
       j.snoozes, j.workflow_id, j.step, j.progress, j.progress_message,
       ARRAY(SELECT u.step
               FROM koyojobs_job_edges AS e
               JOIN koyojobs_jobs AS u ON u.id = e.upstream_id
              WHERE e.job_id = j.id
              ORDER BY u.id) AS after,
       coalesce((SELECT bool_and(e.always) FROM koyojobs_job_edges AS e WHERE e.job_id = j.id),
                false) AS always
  FROM koyojobs_jobs AS j
 WHERE j.workflow_id = $1
 ORDER BY j.id;

-- name: upstream_steps
-- The direct upstream steps of step $1 (upstream()).
SELECT j.id, j.name, j.queue, j.priority, j.status, j.attempts, j.max_attempts, j.scheduled_at,
       j.created_at, j.started_at, j.finished_at, j.last_error, j.last_traceback, j.result,
       j.snoozes, j.workflow_id, j.step, j.progress, j.progress_message
  FROM koyojobs_job_edges AS e
  JOIN koyojobs_jobs AS j ON j.id = e.upstream_id
 WHERE e.job_id = $1
 ORDER BY j.id;
