-- Periodic jobs: one row per periodic job, holding its last tick. A tick is
-- enqueued only by the statement that moves last_tick forward under the
-- row's lock, so it happens once however many workers race for it.
CREATE TABLE koyojobs_schedules (
    name               text PRIMARY KEY,
    last_tick          timestamptz NOT NULL,
    last_enqueued_tick timestamptz,
    last_job_id        bigint,
    last_skipped       boolean     NOT NULL DEFAULT false,
    created_at         timestamptz NOT NULL DEFAULT now()
);
