-- Flow control: declared limits, paused queues.
-- Blocks start with "-- name: NAME"; Python asks for them by that name.

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
