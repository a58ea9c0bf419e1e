-- Inserting jobs: one, many, unique; and the NOTIFY that wakes a queue.
-- Blocks start with "-- name: NAME"; Python asks for them by that name.
-- $8 of every insert is the trace context: NULL unless OpenTelemetry is on.

-- name: insert_job
-- One job, the common case of a web request: a plain VALUES insert plans and
-- runs faster than unnesting arrays of one. The statement trigger notifies.
INSERT INTO koyojobs_jobs (name, queue, priority, max_attempts, args, scheduled_at,
                           limit_key, trace_context)
VALUES ($1, $2, $3, $4, $5, coalesce($6, now()), $7, $8)
RETURNING id;

-- name: insert_jobs
-- Many jobs in one statement; the statement trigger sends one NOTIFY per queue.
-- A NULL scheduled_at means "now" by the database's clock.
INSERT INTO koyojobs_jobs (name, queue, priority, max_attempts, args, scheduled_at,
                           limit_key, trace_context)
SELECT u.name, u.queue, u.priority, u.max_attempts, u.args, coalesce(u.scheduled_at, now()),
       u.limit_key, $8
  FROM unnest($1::text[], $2::text[], $3::integer[], $4::integer[], $5::bytea[], $6::timestamptz[],
              $7::text[])
       WITH ORDINALITY AS u(name, queue, priority, max_attempts, args, scheduled_at, limit_key, ord)
 ORDER BY u.ord
RETURNING id;

-- name: insert_jobs_unique
-- Jobs some of which are unique ($9 keys): see koyojobs_insert_unique.
SELECT id, unique_key
  FROM koyojobs_insert_unique($1::text[], $2::text[], $3::integer[], $4::integer[], $5::bytea[],
                              $6::timestamptz[], $7::text[], $9::uuid[], $8::text);

-- name: notify_queue
SELECT pg_notify('koyojobs', $1);

-- name: copy_jobs_begin
-- Before a bulk enqueue by COPY (koyojobs/bulk.py): the transaction's now()
-- for the rows scheduled "now", and a value of the id sequence drawn before
-- the rows' own (COPY draws theirs as an INSERT would, in the rows' order).
SELECT now() AS now, nextval('koyojobs_jobs_id_seq'::regclass) AS before;

-- name: copy_jobs_end
-- After it: the last id this session drew.
SELECT currval('koyojobs_jobs_id_seq'::regclass);

-- name: copy_jobs_ids
-- When another session drew ids in between: this transaction's rows in the
-- range it drew from, in id order.
SELECT id
  FROM koyojobs_jobs
 WHERE id > $1 AND id <= $2
   -- xmin is the 32-bit transaction id (its form of PostgreSQL 14 has no cast).
   AND xmin::text::bigint = pg_current_xact_id()::text::bigint % 4294967296
 ORDER BY id;
