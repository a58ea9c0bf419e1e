-- Retention (koyojobs.retention) adds no index here: CREATE INDEX in this
-- transaction would block every claim and outcome write of a big table for
-- as long as the build takes, during a rolling upgrade. The Operations page
-- gives the index to build CONCURRENTLY, for tables where a pruning look
-- that scans is too slow.

-- Broker.wait marks the job it waits for: only a batch that ends a marked job
-- notifies koyojobs_finished, so a drain nobody waits on sends no NOTIFY (each
-- costs the committing transaction a cluster-wide lock). A constant default:
-- no table rewrite.
ALTER TABLE koyojobs_jobs ADD COLUMN waited boolean NOT NULL DEFAULT false;
