-- Connections and upkeep: ping, session settings, the listener probe, VACUUM.
-- Blocks start with "-- name: NAME"; Python asks for them by that name.

-- name: ping
SELECT 1;

-- name: set_session
-- Session settings as a statement, not as startup parameters, which
-- connection poolers reject (PgBouncer: "unsupported startup parameter").
SELECT set_config(s.name, s.value, false) FROM unnest($1::text[], $2::text[]) AS s(name, value);

-- name: probe_listener
-- A listener notifies itself through another connection: if the notification
-- never comes back, its LISTEN is deaf (behind a transaction pooler, say).
SELECT pg_notify($1, $2);

-- name: dead_rows
-- Dead row versions in the jobs table (as the statistics last heard), and
-- whether this role may VACUUM it: the table's owner, the database's owner
-- (both as members, which superusers are), and from PostgreSQL 17 a role
-- granted MAINTAIN. Anyone else's VACUUM is skipped with only a warning.
SELECT s.n_dead_tup,
       pg_has_role(c.relowner, 'USAGE')
       OR pg_has_role((SELECT datdba FROM pg_database WHERE datname = current_database()), 'USAGE')
       OR CASE WHEN current_setting('server_version_num')::integer >= 170000
               THEN has_table_privilege(c.oid, 'MAINTAIN')
               ELSE false END AS may_vacuum
  FROM pg_stat_user_tables AS s
  JOIN pg_class AS c ON c.oid = s.relid
 WHERE s.relid = 'koyojobs_jobs'::regclass;

-- name: vacuum_jobs
-- SKIP_LOCKED: when another VACUUM (a worker's or autovacuum's) is on the
-- table, this one returns at once instead of queueing behind it.
VACUUM (SKIP_LOCKED) koyojobs_jobs;
