-- Periodic jobs: declared schedules and their ticks.
-- Blocks start with "-- name: NAME"; Python asks for them by that name.

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

-- name: schedules
-- What `koyojobs schedules` shows of each periodic job the database knows.
SELECT name, last_tick, last_enqueued_tick, last_skipped, last_job_id
  FROM koyojobs_schedules
 WHERE name = ANY($1::text[]);
