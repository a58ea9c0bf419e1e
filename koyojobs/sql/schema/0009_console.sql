-- The console (koyojobs.dashboard as operators' tool): exact filters, live
-- workers, and per-minute counts for its charts.
--
-- Filters. The jobs page lists the newest jobs of a status, a queue, and a
-- name or label prefix, exactly, at any table size. Each page walks, for every
-- (status, name, queue) that matches, the newest ids below its cursor: a probe
-- per combination (there are dozens, not millions) through these indexes.
-- Both are partial on statuses whose rows do not change while in them: a
-- finished row enters the first once, when it finishes (a step that already
-- writes every index, since its status changes); a ready row enters the
-- second when it is enqueued or retried, and leaves by its claim. Running
-- rows, as many as the workers run at once, are read from their own index.
-- Names in C collation: a prefix is then one range of the index.
--
-- As in 0006, a plain CREATE INDEX blocks writes for as long as it builds and a
-- migration runs in a transaction, where CONCURRENTLY is not allowed: this
-- step builds them only on a table of at most 100,000 rows; on a bigger one it
-- warns, and `koyojobs migrate` then builds them CONCURRENTLY (after the
-- migrations, outside their transaction). The dashboard works without them,
-- with a notice and without name filters.
DO $$
BEGIN
    IF (SELECT count(*) FROM (SELECT 1 FROM koyojobs_jobs LIMIT 100001) AS bounded) <= 100000 THEN
        CREATE INDEX IF NOT EXISTS koyojobs_jobs_finished_filter_idx
            ON koyojobs_jobs (status, name COLLATE "C", queue, id)
            WHERE status IN ('done', 'failed', 'cancelled');
        CREATE INDEX IF NOT EXISTS koyojobs_jobs_ready_filter_idx
            ON koyojobs_jobs (name COLLATE "C", queue, id)
            WHERE status = 'ready';
    ELSE
        RAISE WARNING 'koyojobs: the jobs table is big; `koyojobs migrate` builds the '
                      'console''s indexes CONCURRENTLY (see the Dashboard page of the docs)';
    END IF;
END
$$;

-- Workers: one row per worker process, written by its heartbeat (every few
-- seconds: koyojobs.heartbeat). A row not written for several heartbeats is a
-- process that is gone; the next heartbeat of any worker deletes it.
CREATE TABLE koyojobs_workers (
    id          text PRIMARY KEY,
    host        text NOT NULL,
    pid         integer NOT NULL,
    queues      text[] NOT NULL,
    concurrency integer NOT NULL,
    running     integer NOT NULL DEFAULT 0,
    started_at  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now(),
    interval_s  float8 NOT NULL
);

-- Charts: jobs finished and failed per queue and minute, and the time they
-- waited from due to start, rolled up by the workers' heartbeats a minute
-- after the minute ends (one process at a time: the lock on the single row
-- of koyojobs_rollup). A chart of a day reads 1,440 rows per queue, however
-- many jobs the table holds; kept two days.
CREATE TABLE koyojobs_minutes (
    minute       timestamptz NOT NULL,
    queue        text NOT NULL,
    done         integer NOT NULL DEFAULT 0,
    failed       integer NOT NULL DEFAULT 0,
    waited_sum   float8 NOT NULL DEFAULT 0,
    waited_count integer NOT NULL DEFAULT 0,
    waited_max   float8 NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, queue)
);

CREATE TABLE koyojobs_rollup (
    only_row     boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    rolled_until timestamptz NOT NULL
);
INSERT INTO koyojobs_rollup (rolled_until) VALUES (date_trunc('minute', now()) - interval '1 day');
