-- Flow control (koyojobs.limits): unique jobs, concurrency and rate limits,
-- paused queues, snoozes. Columns without defaults, or with constant ones:
-- no table rewrite. The indexes are partial over rows few tables hold yet,
-- but building them still reads the table once, blocking writes meanwhile.

-- A digest of the job's name and key (koyojobs.limits), NULL for a job that
-- is not unique: 16 bytes, so the unique index each unique insert maintains
-- stays small and compares fast (text keys, even byte by byte, cost a unique
-- bulk insert a quarter more).
ALTER TABLE koyojobs_jobs ADD COLUMN unique_key uuid;
-- The job's name and limit key; NULL for a job without a limit.
ALTER TABLE koyojobs_jobs ADD COLUMN limit_key text COLLATE "C";
-- How many times the job called snooze(): a job snoozing forever shows.
ALTER TABLE koyojobs_jobs ADD COLUMN snoozes integer NOT NULL DEFAULT 0;

-- Unique jobs, enforced here and only here: while one job of a key is ready
-- or running, an insert of another conflicts (ON CONFLICT DO NOTHING).
CREATE UNIQUE INDEX koyojobs_jobs_unique_idx
    ON koyojobs_jobs (unique_key)
    WHERE unique_key IS NOT NULL AND status IN ('ready', 'running');

-- Counting a key's running jobs, for concurrency limits.
CREATE INDEX koyojobs_jobs_limited_running_idx
    ON koyojobs_jobs (limit_key)
    WHERE limit_key IS NOT NULL AND status = 'running';

-- The limits of the limited jobs, as the workers that run them declared them
-- at start (the last to start wins); the claim and "why is it waiting" read it.
CREATE TABLE koyojobs_limited_jobs (
    name         text PRIMARY KEY,
    concurrency  integer CHECK (concurrency >= 1),
    rate_count   integer CHECK (rate_count >= 1),
    rate_seconds float8 CHECK (rate_seconds > 0),
    declared_at  timestamptz NOT NULL DEFAULT now()
);

-- A rate-limited key's latest starts (at most rate_count, oldest first, none
-- older than the window). blocked_until: while the window is full, when its
-- oldest start leaves it; the claim passes over the key until then.
CREATE TABLE koyojobs_rate_windows (
    limit_key     text COLLATE "C" PRIMARY KEY,
    starts        timestamptz[] NOT NULL,
    blocked_until timestamptz,
    -- The limit the latest starts were recorded under.
    rate_count    integer NOT NULL,
    rate_seconds  float8 NOT NULL
);

CREATE INDEX koyojobs_rate_windows_blocked_idx
    ON koyojobs_rate_windows (blocked_until)
    WHERE blocked_until IS NOT NULL;

-- A row per paused queue. Claims check it, so a pause holds in every process
-- from its commit on, whatever notifications were missed.
CREATE TABLE koyojobs_queues (
    queue     text PRIMARY KEY,
    paused_at timestamptz NOT NULL DEFAULT now()
);

-- The starts of a rate window that still count now: the latest p_count,
-- none older than p_seconds. On the wall clock (clock_timestamp), as the
-- starts are: a claim that waited for a key's lock starts when it got it,
-- not when its transaction began.
CREATE FUNCTION koyojobs_window(p_starts timestamptz[], p_count integer, p_seconds float8)
RETURNS timestamptz[]
LANGUAGE sql VOLATILE AS $$
    SELECT coalesce(array_agg(s ORDER BY s), '{}')
      FROM (SELECT s
              FROM unnest(p_starts) AS s
             WHERE s > clock_timestamp() - make_interval(secs => p_seconds)
             ORDER BY s DESC
             LIMIT p_count) AS latest
$$;

-- The limit keys at a limit now, by the caller's snapshot: running as many
-- jobs as their concurrency allows, or with a full rate window. The limited
-- claim passes over their jobs, and so does the worker's look for the next
-- due job (next_due_limited).
CREATE FUNCTION koyojobs_full_keys() RETURNS SETOF text
LANGUAGE sql STABLE AS $$
    SELECT r.limit_key
      FROM koyojobs_jobs AS r
      JOIN koyojobs_limited_jobs AS d ON d.name = r.name
     WHERE r.limit_key IS NOT NULL AND r.status = 'running' AND d.concurrency IS NOT NULL
     GROUP BY r.limit_key, d.concurrency
    HAVING count(*) >= d.concurrency
    UNION ALL
    SELECT w.limit_key FROM koyojobs_rate_windows AS w WHERE w.blocked_until > now()
$$;

-- Which due jobs of a queue with limited jobs the calling claim may take: up
-- to p_limit ids, limited or not, in the queue's order, none past its key's
-- limits. It takes the keys' locks (held until the claim's transaction ends)
-- and counts under them: a function, so that its statements each take a
-- fresh snapshot, with every claim committed before it. The claim itself
-- (finish_and_claim_limited) locks and updates the rows. p_finished, the
-- outcomes that statement wrote, is not used: taking it makes the statement
-- write them first, so the slots of the runs that just ended count as free.
CREATE FUNCTION koyojobs_limited_take(p_queue text, p_limit integer, p_finished bigint)
RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
    v_full text[];
    v_ids bigint[];
    v_keys text[];
    v_take bigint[];
    v_room_keys text[];
    v_rooms bigint[];
    v_roomy boolean;
    v_paused boolean;
    v_uncontended boolean := true;
    v_lock bigint;
BEGIN
    IF p_limit <= 0 THEN
        RETURN '{}';
    END IF;
    -- Whether the queue is paused, and the keys at a limit by this snapshot:
    -- their jobs are passed over, so a backlog held back by its limit never
    -- stands in front of other jobs. (One statement: each has a fixed cost.)
    SELECT EXISTS (SELECT FROM koyojobs_queues WHERE queue = p_queue),
           ARRAY(SELECT k FROM koyojobs_full_keys() AS k)
      INTO v_paused, v_full;
    IF v_paused THEN
        RETURN '{}';
    END IF;
    -- Two candidates per slot: several may share a key that has one slot
    -- left. Two statements, not one with "limit_key <> ALL (v_full)" whatever
    -- v_full holds: a generic plan of that one misjudges it and scans the table.
    IF cardinality(v_full) = 0 THEN
        SELECT coalesce(array_agg(c.id), '{}'), coalesce(array_agg(c.limit_key), '{}')
          INTO v_ids, v_keys
          FROM (SELECT j.id, j.limit_key
                  FROM koyojobs_jobs AS j
                 WHERE j.queue = p_queue AND j.status = 'ready' AND j.scheduled_at <= now()
                 ORDER BY j.priority, j.scheduled_at, j.id
                 LIMIT p_limit * 2) AS c;
    ELSE
        SELECT coalesce(array_agg(c.id), '{}'), coalesce(array_agg(c.limit_key), '{}')
          INTO v_ids, v_keys
          FROM (SELECT j.id, j.limit_key
                  FROM koyojobs_jobs AS j
                 WHERE j.queue = p_queue AND j.status = 'ready' AND j.scheduled_at <= now()
                   AND (j.limit_key IS NULL OR j.limit_key <> ALL (v_full))
                 ORDER BY j.priority, j.scheduled_at, j.id
                 LIMIT p_limit * 2) AS c;
    END IF;
    IF cardinality(v_ids) = 0 THEN
        RETURN '{}';
    END IF;
    -- One claimer of a key at a time, until this transaction ends. In the
    -- order of the lock numbers, so that two claimers cannot deadlock: each
    -- lock is tried, and once one is held by another claimer, that one and
    -- the rest are waited for.
    FOR v_lock IN
        SELECT DISTINCT hashtextextended('koyojobs.limit ' || k, 0)
          FROM unnest(v_keys) AS k
         WHERE k IS NOT NULL
         ORDER BY 1
    LOOP
        IF v_uncontended THEN
            v_uncontended := pg_try_advisory_xact_lock(v_lock);
        END IF;
        IF NOT v_uncontended THEN
            PERFORM pg_advisory_xact_lock(v_lock);
        END IF;
    END LOOP;
    IF NOT v_uncontended THEN
        -- The claimer waited for may have taken some candidates: look again,
        -- by a snapshot taken under the locks. Keys first seen now are not
        -- locked: their jobs wait for the next round.
        SELECT coalesce(array_agg(c.id), '{}'), coalesce(array_agg(c.limit_key), '{}')
          INTO v_ids, v_keys
          FROM (SELECT j.id, j.limit_key
                  FROM koyojobs_jobs AS j
                 WHERE j.queue = p_queue AND j.status = 'ready' AND j.scheduled_at <= now()
                   AND (j.limit_key IS NULL OR j.limit_key = ANY (v_keys))
                 ORDER BY j.priority, j.scheduled_at, j.id
                 LIMIT p_limit * 2) AS c;
    END IF;
    -- How many more of each key may start now, counted under its lock. A
    -- key is its job's name, then chr(31) and the limit_key= key if any.
    SELECT coalesce(array_agg(k.key), '{}'), coalesce(array_agg(k.room), '{}'),
           coalesce(bool_and(k.room >= p_limit), true)
      INTO v_room_keys, v_rooms, v_roomy
      FROM (SELECT k.key,
                   least(
                       CASE WHEN d.concurrency IS NULL THEN 2147483647
                            ELSE d.concurrency - (SELECT count(*) FROM koyojobs_jobs AS r
                                                   WHERE r.limit_key = k.key
                                                     AND r.status = 'running') END,
                       CASE WHEN d.rate_count IS NULL THEN 2147483647
                            ELSE d.rate_count - coalesce(
                                (SELECT cardinality(koyojobs_window(w.starts, d.rate_count,
                                                                   d.rate_seconds))
                                   FROM koyojobs_rate_windows AS w
                                  WHERE w.limit_key = k.key), 0) END) AS room
              FROM (SELECT DISTINCT key FROM unnest(v_keys) AS key WHERE key IS NOT NULL) AS k
              JOIN koyojobs_limited_jobs AS d ON d.name = split_part(k.key, chr(31), 1)) AS k;
    IF v_roomy THEN
        -- No key can run out of room this round (the usual case of a limit
        -- that does not bind): the first candidates.
        RETURN v_ids[1:p_limit];
    END IF;
    -- In the queue's order (the candidates'), the first "room" of each key.
    SELECT coalesce(array_agg(t.id ORDER BY t.ord), '{}')
      INTO v_take
      FROM (SELECT c.id, c.ord
              FROM (SELECT u.id, u.key, u.ord,
                           row_number() OVER (PARTITION BY u.key ORDER BY u.ord) AS nth
                      FROM unnest(v_ids, v_keys) WITH ORDINALITY AS u(id, key, ord)) AS c
              LEFT JOIN unnest(v_room_keys, v_rooms) AS r(key, room) ON r.key = c.key
             WHERE c.key IS NULL OR r.room IS NULL OR c.nth <= r.room
             ORDER BY c.ord
             LIMIT p_limit) AS t;
    RETURN v_take;
END;
$$;

-- When a rate window (koyojobs_window's answer) that is full lets its key
-- start again: when its oldest start leaves it. NULL while it has room.
CREATE FUNCTION koyojobs_window_blocks_until(p_window timestamptz[], p_count integer,
                                             p_seconds float8)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN cardinality(p_window) >= p_count
                THEN p_window[1] + make_interval(secs => p_seconds) END
$$;

-- One insert of koyojobs_insert_unique: the unkeyed calls unless p_unkeyed_done,
-- and the keyed ones (all, or those of p_missing), in input order.
CREATE FUNCTION koyojobs_insert_round(
    p_names text[], p_queues text[], p_priorities integer[], p_max_attempts integer[],
    p_args bytea[], p_scheduled timestamptz[], p_limit_keys text[], p_unique_keys uuid[],
    p_trace_context text, p_unkeyed_done boolean, p_missing uuid[])
RETURNS TABLE (id bigint, unique_key uuid)
LANGUAGE sql AS $$
    INSERT INTO koyojobs_jobs AS j (name, queue, priority, max_attempts, args, scheduled_at,
                                    limit_key, unique_key, trace_context)
    SELECT u.name, u.queue, u.priority, u.max_attempts, u.args,
           coalesce(u.scheduled_at, now()), u.limit_key, u.unique_key, p_trace_context
      FROM unnest(p_names, p_queues, p_priorities, p_max_attempts, p_args, p_scheduled,
                  p_limit_keys, p_unique_keys) WITH ORDINALITY
           AS u(name, queue, priority, max_attempts, args, scheduled_at, limit_key,
                unique_key, ord)
     WHERE CASE WHEN u.unique_key IS NULL THEN NOT p_unkeyed_done
                ELSE p_missing IS NULL OR u.unique_key = ANY (p_missing) END
     ORDER BY u.ord
    ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND status IN ('ready', 'running')
       DO NOTHING
    RETURNING j.id, j.unique_key
$$;

-- Inserts jobs, some unique (p_unique_keys not NULL), in input order, and
-- returns (id, unique_key) for each job inserted or found holding a key. A
-- key held by a job another transaction committed after this statement began
-- is found by a later statement here (each takes a fresh snapshot); a key
-- whose holder finished in between is inserted again. Callers send each key
-- once; a key sent twice is inserted once (ON CONFLICT sees the first).
CREATE FUNCTION koyojobs_insert_unique(
    p_names text[], p_queues text[], p_priorities integer[], p_max_attempts integer[],
    p_args bytea[], p_scheduled timestamptz[], p_limit_keys text[], p_unique_keys uuid[],
    p_trace_context text)
RETURNS TABLE (id bigint, unique_key uuid)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_ids bigint[] := '{}';
    v_keys uuid[] := '{}';
    v_new_ids bigint[];
    v_new_keys uuid[];
    v_missing uuid[];  -- NULL: every key of the batch
    v_unkeyed_done boolean := false;
    v_round integer := 0;
    v_keyed bigint := (SELECT count(k) FROM unnest(p_unique_keys) AS k);
BEGIN
    LOOP
        v_round := v_round + 1;
        IF v_keyed > 1 THEN
            -- Two batches that insert some keys in other orders can deadlock:
            -- the one PostgreSQL picks undoes this round (letting go of what
            -- it held) and tries again. Not for a single key, which cannot:
            -- a subtransaction per enqueue would cost a transaction that
            -- enqueues many, one by one, more than 64 of them (and every
            -- snapshot of the server while it runs).
            BEGIN
                SELECT coalesce(array_agg(r.id), '{}'), coalesce(array_agg(r.unique_key), '{}')
                  INTO v_new_ids, v_new_keys
                  FROM koyojobs_insert_round(p_names, p_queues, p_priorities, p_max_attempts,
                                             p_args, p_scheduled, p_limit_keys, p_unique_keys,
                                             p_trace_context, v_unkeyed_done, v_missing) AS r;
            EXCEPTION WHEN deadlock_detected THEN
                v_new_ids := NULL;
            END;
        ELSE
            SELECT coalesce(array_agg(r.id), '{}'), coalesce(array_agg(r.unique_key), '{}')
              INTO v_new_ids, v_new_keys
              FROM koyojobs_insert_round(p_names, p_queues, p_priorities, p_max_attempts,
                                         p_args, p_scheduled, p_limit_keys, p_unique_keys,
                                         p_trace_context, v_unkeyed_done, v_missing) AS r;
        END IF;
        IF v_new_ids IS NOT NULL THEN
            v_ids := v_ids || v_new_ids;
            v_keys := v_keys || v_new_keys;
            v_unkeyed_done := true;
        END IF;
        -- The keys no job inserted here holds: usually none, found by counting.
        IF v_unkeyed_done AND v_missing IS NULL
           AND v_keyed = (SELECT count(k) FROM unnest(v_keys) AS k) THEN
            EXIT;
        END IF;
        v_missing := ARRAY(SELECT k FROM unnest(p_unique_keys) AS k WHERE k IS NOT NULL
                           EXCEPT
                           SELECT k FROM unnest(v_keys) AS k WHERE k IS NOT NULL);
        EXIT WHEN cardinality(v_missing) = 0;
        SELECT coalesce(array_agg(j.id), '{}'), coalesce(array_agg(j.unique_key), '{}')
          INTO v_new_ids, v_new_keys
          FROM koyojobs_jobs AS j
         WHERE j.unique_key = ANY (v_missing) AND j.status IN ('ready', 'running');
        v_ids := v_ids || v_new_ids;
        v_keys := v_keys || v_new_keys;
        v_missing := ARRAY(SELECT k FROM unnest(v_missing) AS k
                           EXCEPT
                           SELECT k FROM unnest(v_new_keys) AS k);
        EXIT WHEN cardinality(v_missing) = 0;
        IF v_round >= 20 THEN
            RAISE EXCEPTION 'koyojobs: % unique keys kept changing hands while enqueuing',
                cardinality(v_missing);
        END IF;
    END LOOP;
    RETURN QUERY SELECT * FROM unnest(v_ids, v_keys);
END;
$$;
