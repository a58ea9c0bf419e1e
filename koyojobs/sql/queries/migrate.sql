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
