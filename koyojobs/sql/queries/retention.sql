-- Retention: deleting finished jobs, by hand and automatically.
-- Blocks start with "-- name: NAME"; Python asks for them by that name.

-- name: prune_jobs
-- Retention: deletes jobs finished (done, failed or cancelled) more than $1
-- seconds ago. Running and ready jobs are never touched, nor any step of a
-- workflow with a step still pending, ready or running; the edges of deleted
-- steps go with them, and a workflow once its last step went. Returns the
-- count.
WITH deleted AS (
    DELETE FROM koyojobs_jobs AS j
     WHERE status IN ('done', 'failed', 'cancelled')
       AND finished_at < now() - make_interval(secs => $1)
-- include: workflow_finished
    RETURNING j.id, j.workflow_id
)
-- include: prune_steps
SELECT count(*) FROM deleted;

-- name: workflow_finished
-- A job that is no step, or whose workflow has no unfinished step (the
-- partial index of steps finds them): what retention may delete.
       AND (j.workflow_id IS NULL
            OR NOT EXISTS (SELECT FROM koyojobs_jobs AS s
                            WHERE s.workflow_id = j.workflow_id
                              AND s.status IN ('pending', 'ready', 'running')))

-- name: prune_steps
-- The edges, shard counts and workflows of the steps a CTE "deleted" (id, workflow_id) holds.
, edges_gone AS (
    DELETE FROM koyojobs_job_edges
     WHERE job_id = ANY (ARRAY(SELECT id FROM deleted WHERE workflow_id IS NOT NULL))
), counts_gone AS (
    DELETE FROM koyojobs_step_counts
     WHERE job_id = ANY (ARRAY(SELECT id FROM deleted WHERE workflow_id IS NOT NULL))
), workflows_gone AS (
    DELETE FROM koyojobs_workflows AS w
     WHERE w.id = ANY (ARRAY(SELECT DISTINCT workflow_id FROM deleted
                              WHERE workflow_id IS NOT NULL))
       AND NOT EXISTS (SELECT FROM koyojobs_jobs AS s
                        WHERE s.workflow_id = w.id
                          AND s.id <> ALL (ARRAY(SELECT id FROM deleted)))
)

-- name: prune_expired
-- Automatic retention (koyojobs.retention): deletes at most $5 finished jobs
-- older than their status's age: $2 seconds for done, $3 failed, $4 cancelled
-- (NULL: kept); $1 is the least of those, so the scan takes the index of
-- finished rows. One pruner at a time across processes: a pruner that does not
-- get the lock (held to the statement's end) deletes nothing this time. Rows
-- another transaction holds are skipped, not waited for. Never ready or
-- running jobs, nor steps of an unfinished workflow. Returns the count.
WITH deleted AS (
    DELETE FROM koyojobs_jobs
     WHERE id IN (
        SELECT id
          FROM koyojobs_jobs AS j
         WHERE (SELECT pg_try_advisory_xact_lock(hashtextextended('koyojobs.retention', 0)))
           AND status IN ('done', 'failed', 'cancelled')
           AND finished_at < now() - make_interval(secs => $1)
           AND finished_at < now() - make_interval(secs => CASE status
                                                               WHEN 'done' THEN $2::float8
                                                               WHEN 'failed' THEN $3::float8
                                                               ELSE $4::float8 END)
-- include: workflow_finished
         LIMIT $5
           FOR UPDATE SKIP LOCKED
     )
    RETURNING id, workflow_id
)
-- include: prune_steps
SELECT count(*) FROM deleted;

-- name: prune_rate_windows
-- Rate windows none of whose starts counts any more: deleting them changes no
-- key's room, and keeps the table at the keys started within their window.
DELETE FROM koyojobs_rate_windows
 WHERE starts[cardinality(starts)] <= now() - make_interval(secs => rate_seconds);

-- name: count_prunable
-- What prune_jobs would delete now, per status (koyojobs prune --dry-run).
SELECT status, count(*)::bigint AS jobs
  FROM koyojobs_jobs AS j
 WHERE status IN ('done', 'failed', 'cancelled')
   AND finished_at < now() - make_interval(secs => $1)
-- include: workflow_finished
 GROUP BY status;
