-- Schema migrations: the table of applied versions and the lock that makes concurrent starts migrate once.
-- Blocks start with "-- name: NAME"; Python asks for them by that name.

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS koyojobs_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: migration_lock
-- Held until the migrating transaction ends, so concurrent starts migrate once.
SELECT pg_advisory_xact_lock(hashtextextended('koyojobs.migrate', 0));

-- name: applied_migrations
SELECT version FROM koyojobs_migrations ORDER BY version;

-- name: record_migration
INSERT INTO koyojobs_migrations (version, name) VALUES ($1, $2);

-- name: migrations_table_exists
-- Whether koyojobs_migrations exists, read without touching it (a read-only
-- command must not create it).
SELECT to_regclass('koyojobs_migrations') IS NOT NULL;

-- name: build_unique_held_idx
-- The unique index of 0011 (pending steps hold their keys too), built without
-- blocking writes when the migration left it out on a big table; then the
-- old one is dropped (drop_unique_idx), never leaving the table without one.
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS koyojobs_jobs_unique_held_idx
    ON koyojobs_jobs (unique_key)
    WHERE unique_key IS NOT NULL AND status IN ('pending', 'ready', 'running');

-- name: drop_unique_held_idx
DROP INDEX CONCURRENTLY IF EXISTS koyojobs_jobs_unique_held_idx;

-- name: drop_unique_idx
-- 0005's unique index (ready and running rows only), once 0011's is valid.
DROP INDEX CONCURRENTLY IF EXISTS koyojobs_jobs_unique_idx;
