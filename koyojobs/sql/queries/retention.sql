-- Retention: deleting finished jobs, by hand and automatically.
-- Blocks start with "-- name: NAME"; Python asks for them by that name.

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
