-- Retention: workers delete finished jobs once they are old enough
-- (koyojobs.retention). This index lets each of their small batches find the
-- oldest finished rows without reading the table; it holds finished rows
-- only, so claims and running jobs never touch it.
CREATE INDEX koyojobs_jobs_finished_idx
    ON koyojobs_jobs (finished_at)
    WHERE status IN ('done', 'failed', 'cancelled');

-- Broker.wait marks the job it waits for: only a batch that ends a marked job
-- notifies koyojobs_finished, so a drain nobody waits on sends no NOTIFY (each
-- costs the committing transaction a cluster-wide lock). A constant default:
-- no table rewrite.
ALTER TABLE koyojobs_jobs ADD COLUMN waited boolean NOT NULL DEFAULT false;
