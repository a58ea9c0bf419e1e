-- Retention: workers delete finished jobs once they are old enough
-- (koyojobs.retention). This index lets each of their small batches find the
-- oldest finished rows without reading the table; it holds finished rows
-- only, so claims and running jobs never touch it.
CREATE INDEX koyojobs_jobs_finished_idx
    ON koyojobs_jobs (finished_at)
    WHERE status IN ('done', 'failed', 'cancelled');
