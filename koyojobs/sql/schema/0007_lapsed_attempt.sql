-- The rescue records which attempt's lease lapsed: that attempt's outcome, if
-- its worker still writes it, is kept while no later attempt has started (a
-- success is not lost to an outage), and only once. NULL for every other row:
-- no table rewrite.
ALTER TABLE koyojobs_jobs ADD COLUMN lapsed_attempt integer;
