-- The jobs table. One row per job, kept until pruned.
-- fillfactor leaves room on each page so that claim and finish updates stay HOT
-- (the indexed columns of the partial indexes change, but the heap tuple can
-- often stay on its page).
CREATE TABLE koyojobs_jobs (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name             text        NOT NULL,
    queue            text        NOT NULL,
    priority         integer     NOT NULL DEFAULT 50 CHECK (priority >= 0),
    status           text        NOT NULL DEFAULT 'ready'
                     CHECK (status IN ('ready', 'running', 'done', 'failed', 'cancelled')),
    args             bytea       NOT NULL,
    result           bytea,
    attempts         integer     NOT NULL DEFAULT 0,
    max_attempts     integer     NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    scheduled_at     timestamptz NOT NULL DEFAULT now(),
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    lease_expires_at timestamptz,
    worker_id        text,
    last_error       text,
    last_traceback   text
) WITH (fillfactor = 80);

-- Matches the claim query's WHERE and ORDER BY exactly, and only holds ready
-- rows, so it stays small however many finished jobs the table keeps.
CREATE INDEX koyojobs_jobs_ready_idx
    ON koyojobs_jobs (queue, priority, scheduled_at, id)
    WHERE status = 'ready';

-- For the rescue of lapsed leases.
CREATE INDEX koyojobs_jobs_running_idx
    ON koyojobs_jobs (lease_expires_at)
    WHERE status = 'running';

-- One NOTIFY per statement and queue, whoever inserts: workers listen on one
-- channel and the broker fans the payload (the queue name) out.
CREATE FUNCTION koyojobs_notify_inserted() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('koyojobs', q.queue)
       FROM (SELECT DISTINCT queue FROM inserted) AS q;
    RETURN NULL;
END;
$$;

CREATE TRIGGER koyojobs_jobs_notify
    AFTER INSERT ON koyojobs_jobs
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION koyojobs_notify_inserted();
