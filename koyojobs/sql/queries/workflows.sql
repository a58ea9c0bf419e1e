-- Workflows (koyojobs.workflows): enqueueing one, releasing and cancelling
-- the steps that wait for an ended one, reading and cancelling a workflow.
-- Blocks start with "-- name: NAME"; Python asks for them by that name.

-- name: insert_workflow
-- A workflow and all its steps in one statement: rolled back, none of it
-- existed. $1 the workflow's name; $2..$8 the steps' columns as insert_jobs
-- takes them, $9 the trace context; $10 each step's name and $11 how many
-- upstream steps (or shards of them) it waits for (a step with none is ready
-- at once); $12..$15 the edges (the step's position from 1, its upstream
-- step's, always, the shard it counts down or NULL: the step's own row);
-- $16..$18 the shards of the steps that count in shards (step, shard, count);
-- $19 each step's unique key (NULL: none). A unique step holds its key from
-- now on, pending too (schema 0011). If an unfinished job holds a step's key
-- already, or 0011's unique index is not built yet, nothing is inserted: the
-- rows returned then have no workflow id, and name each such step and its
-- key's holder (NULL: the index is missing). Both looks are skipped (a
-- one-time filter) when no step is unique.
WITH keyed AS (
    SELECT k.key, k.step
      FROM unnest($19::uuid[], $10::text[]) AS k(key, step)
     WHERE k.key IS NOT NULL
), indexed AS (
    SELECT EXISTS (SELECT FROM pg_index AS i
                    WHERE i.indexrelid = to_regclass('koyojobs_jobs_unique_held_idx')
                      AND i.indisvalid) AS ok
     WHERE EXISTS (SELECT FROM keyed)
), refused AS (
    SELECT NULL::bigint AS holder, NULL::text AS step
      FROM indexed
     WHERE NOT indexed.ok
    UNION ALL
    SELECT h.id, k.step
      FROM keyed AS k
      JOIN LATERAL (SELECT j.id
                      FROM koyojobs_jobs AS j
                     WHERE j.unique_key = k.key AND j.unique_key IS NOT NULL
                       AND j.status IN ('pending', 'ready', 'running')
                     LIMIT 1) AS h ON true
     WHERE (SELECT ok FROM indexed)
), workflow AS (
    INSERT INTO koyojobs_workflows (name)
    SELECT $1
     WHERE NOT EXISTS (SELECT FROM refused)
    RETURNING id
), steps AS (
    INSERT INTO koyojobs_jobs (name, queue, priority, max_attempts, args, scheduled_at,
                               limit_key, unique_key, trace_context, workflow_id, step,
                               upstream_left, status)
    SELECT u.name, u.queue, u.priority, u.max_attempts, u.args, coalesce(u.scheduled_at, now()),
           u.limit_key, u.unique_key, $9, w.id, u.step, u.upstream_left,
           CASE WHEN u.upstream_left > 0 THEN 'pending' ELSE 'ready' END
      FROM workflow AS w,
           unnest($2::text[], $3::text[], $4::integer[], $5::integer[], $6::bytea[],
                  $7::timestamptz[], $8::text[], $10::text[], $11::integer[], $19::uuid[])
           WITH ORDINALITY AS u(name, queue, priority, max_attempts, args, scheduled_at,
                                limit_key, step, upstream_left, unique_key, ord)
     ORDER BY u.ord
    RETURNING id, step
-- Identity values are drawn in insertion order, which follows the input: the
-- n-th step's id is the n-th smallest. Edges name steps by that position (a
-- join on the step names would compare every pair).
), ordered AS (
    SELECT array_agg(id ORDER BY id) AS ids FROM steps HAVING count(*) > 0
), edges AS (
    INSERT INTO koyojobs_job_edges (job_id, upstream_id, always, shard)
    SELECT o.ids[e.step], o.ids[e.upstream], e.always, e.shard
      FROM ordered AS o,
           unnest($12::integer[], $13::integer[], $14::boolean[], $15::smallint[])
           AS e(step, upstream, always, shard)
), counts AS (
    INSERT INTO koyojobs_step_counts (job_id, shard, upstream_left)
    SELECT o.ids[c.step], c.shard, c.n
      FROM ordered AS o,
           unnest($16::integer[], $17::smallint[], $18::integer[]) AS c(step, shard, n)
)
SELECT (SELECT id FROM workflow) AS workflow_id, s.id, s.step FROM steps AS s
UNION ALL
SELECT NULL, r.holder, r.step FROM refused AS r;

-- name: release_dependents
-- Included after a CTE "ended" (id, status, step) of the workflow steps the
-- statement ended (done, failed or cancelled): koyojobs_release_dependents
-- releases or cancels their dependents in the same transaction, so no crash
-- can leave one pending. Called only when a step ended. An INSERT that never
-- inserts (the function counts, never below zero), because PostgreSQL runs
-- a data-modifying CTE to its end whoever reads it: a SELECT here would run
-- only if read, and a read from a subquery runs only when a plan gets to it.
, released AS (
    INSERT INTO koyojobs_workflows (name)
    SELECT NULL
      FROM (SELECT koyojobs_release_dependents(array_agg(id), array_agg(status),
                                               array_agg(step)) AS changed
              FROM ended
            HAVING count(*) > 0) AS r
     WHERE r.changed < 0
)

-- name: revive_dependents
-- Included after a CTE "retried" (id, workflow_id) of the jobs an operator's
-- retry made ready again: koyojobs_revive_dependents (schema 0010) makes the
-- steps downstream of the retried steps wait for them again. Called only
-- when a step was retried; an INSERT that never inserts, as release_dependents.
, revived AS (
    INSERT INTO koyojobs_workflows (name)
    SELECT NULL
      FROM (SELECT koyojobs_revive_dependents(array_agg(id)) AS changed
              FROM retried
             WHERE workflow_id IS NOT NULL
            HAVING count(*) > 0) AS r
     WHERE r.changed < 0
)

-- name: cancel_workflow
-- Every unfinished step of workflow $1, cancelled; a running one's worker
-- stops it at its next lease renewal. Nothing is left to release. Locked in
-- id order first, as every statement changing waiting steps does (0010).
WITH locked AS (
    SELECT id
      FROM koyojobs_jobs
     WHERE workflow_id = $1 AND status IN ('pending', 'ready', 'running')
     ORDER BY id
       FOR UPDATE
)
UPDATE koyojobs_jobs AS j
   SET status = 'cancelled', finished_at = now(), lease_expires_at = NULL, worker_id = NULL,
       last_error = 'workflow cancelled'
 WHERE j.id = ANY (ARRAY(SELECT id FROM locked)) AND j.status IN ('pending', 'ready', 'running')
RETURNING j.id, CASE WHEN j.waited THEN pg_notify('koyojobs_finished', '') END;

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
