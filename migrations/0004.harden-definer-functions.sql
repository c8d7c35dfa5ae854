-- depends: 0003.cache-entries
--
-- Hardens the SECURITY DEFINER functions of 0002 (an applied migration is never edited, so the
-- new definitions come here) and adds the boundary-day delete of retention as one more of them.
--
-- They ran with search_path = public, pg_temp and implicit casts: wherever a role may CREATE in
-- the schema (the default before PostgreSQL 15), it could plant public.to_char(date, text), which
-- beats pg_catalog's to_char(timestamp, text) for a date argument, and run code as the owner.
-- Now every function pins search_path = pg_catalog, pg_temp, casts explicitly, and names every
-- table and function of datalayer with the schema this migration runs in: with pg_catalog first,
-- an unqualified table name would resolve to the caller's temporary table of that name. The schema
-- is baked in here, from current_schema(), never written as a literal: a service may migrate into
-- a schema of its own. @S@ in the texts below becomes the quoted schema identifier, @SL@ the
-- schema name as a string literal.
--
-- The functions enforce their own limits, whoever calls them: a partition day lies between
-- 1970-01-01 and 366 days from today (UTC), no call drops today's or a later partition or deletes
-- a row of today, at most 100 partitions are dropped per call, and the row-by-row delete is
-- confined to the cutoff's own day and the default partition.

-- A migration waiting for a lock queues all traffic behind it: give up after 10 s and retry later.
SET LOCAL lock_timeout = '10s';
SET LOCAL statement_timeout = '10min';

DO $migration$
DECLARE
    s    text := pg_catalog.current_schema();
    body text;
BEGIN
    IF s IS NULL OR pg_catalog.to_regclass(pg_catalog.format('%I.system_log', s)) IS NULL THEN
        RAISE EXCEPTION '0004.harden-definer-functions: system_log is not in schema % (current_schema()): run it with the search_path of the earlier migrations', s;
    END IF;
    FOREACH body IN ARRAY ARRAY[
$fn$
CREATE OR REPLACE FUNCTION @S@.datalayer_log_partition_name(day pg_catalog.date) RETURNS pg_catalog.text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT 'system_log_p'::pg_catalog.text OPERATOR(pg_catalog.||) pg_catalog.to_char(day::pg_catalog.timestamp, 'YYYYMMDD')
$$
$fn$,
$fn$
-- Creates the partition for one UTC day; returns false when it already exists. Call it once per
-- transaction per day: every lock it takes is held until COMMIT.
CREATE OR REPLACE FUNCTION @S@.datalayer_ensure_log_partition(day pg_catalog.date) RETURNS pg_catalog.bool
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    sch     CONSTANT text     := @SL@;
    parent  CONSTANT regclass := pg_catalog.format('%I.system_log', sch)::regclass;
    today   CONSTANT date     := (pg_catalog.clock_timestamp() AT TIME ZONE 'UTC')::date;
    part    text;
    lo      timestamptz;
    hi      timestamptz;
    existing regclass;
    attempt integer := 0;
BEGIN
    IF day IS NULL THEN
        RAISE EXCEPTION 'datalayer_ensure_log_partition: day must not be null' USING ERRCODE = '22004';
    END IF;
    -- No BC or infinite days (their names would be ambiguous or empty), none absurdly far ahead.
    IF day < '1970-01-01'::date OR day > today + 366 THEN
        RAISE EXCEPTION 'datalayer_ensure_log_partition: day must be between 1970-01-01 and % (366 days from today, UTC), got %',
                        today + 366, day USING ERRCODE = '22023';
    END IF;
    part := @S@.datalayer_log_partition_name(day);
    lo := day::timestamp AT TIME ZONE 'UTC';
    hi := (day + 1)::timestamp AT TIME ZONE 'UTC';
    -- One maintainer at a time, across processes.
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('datalayer.system_log.partitions'::text));
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
               WHERE i.inhparent = parent AND c.relname = part::name) THEN
        RETURN false;
    END IF;
    existing := pg_catalog.to_regclass(pg_catalog.format('%I.%I', sch, part));
    IF existing IS NULL THEN
        -- A standalone table first, attached below: CREATE TABLE ... PARTITION OF would take ACCESS
        -- EXCLUSIVE on system_log and stall every writer while it waits for its lock.
        EXECUTE pg_catalog.format('CREATE TABLE %I.%I (LIKE %I.system_log INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE)',
                                  sch, part, sch);
        -- Matching the partition bound lets ATTACH skip its validation scan of the new table.
        EXECUTE pg_catalog.format('ALTER TABLE %I.%I ADD CONSTRAINT %I CHECK (created_at >= %L::timestamptz AND created_at < %L::timestamptz)',
                                  sch, part, part || '_bounds', lo, hi);
    ELSIF (SELECT c.relowner FROM pg_catalog.pg_class c WHERE c.oid = existing)
          IS DISTINCT FROM (SELECT c.relowner FROM pg_catalog.pg_class c WHERE c.oid = parent) THEN
        -- Someone else's table under the partition's name would receive the day's rows, and its
        -- triggers would run as every writer: never adopt it.
        RAISE EXCEPTION 'datalayer_ensure_log_partition: table %.% exists and is not owned by the owner of system_log; drop or rename it',
                        sch, part USING ERRCODE = '42P07';
    END IF;
    -- A short lock_timeout with retries: a waiting ATTACH queues every later reader of the default
    -- partition behind it, so it must never wait long.
    PERFORM pg_catalog.set_config('lock_timeout', '500ms', true);
    LOOP
        BEGIN
            -- ATTACH refuses while the default partition holds rows of this day: move them first,
            -- in the same transaction, so no row is ever in neither place.
            EXECUTE pg_catalog.format('WITH moved AS (DELETE FROM %I.system_log_default WHERE created_at >= %L::timestamptz '
                                      'AND created_at < %L::timestamptz RETURNING *) INSERT INTO %I.%I SELECT * FROM moved',
                                      sch, lo, hi, sch, part);
            EXECUTE pg_catalog.format('ALTER TABLE %I.system_log ATTACH PARTITION %I.%I FOR VALUES FROM (%L) TO (%L)',
                                      sch, sch, part, lo, hi);
            EXIT;
        EXCEPTION WHEN lock_not_available THEN
            attempt := attempt + 1;
            IF attempt >= 20 THEN
                RAISE;
            END IF;
            PERFORM pg_catalog.pg_sleep((0.05 * attempt + pg_catalog.random() * 0.05)::double precision);
        END;
    END LOOP;
    RETURN true;
END
$$
$fn$,
$fn$
-- Creates the partitions from today (UTC) to days_ahead days ahead, in one transaction; returns
-- how many it created. datalayer's Python side calls datalayer_ensure_log_partition per day in
-- separate transactions instead, so that locks are short.
CREATE OR REPLACE FUNCTION @S@.datalayer_ensure_log_partitions(days_ahead pg_catalog.int4) RETURNS pg_catalog.int4
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    today   CONSTANT date := (pg_catalog.now() AT TIME ZONE 'UTC')::date;
    created integer := 0;
BEGIN
    IF days_ahead IS NULL OR days_ahead < 0 OR days_ahead > 366 THEN
        RAISE EXCEPTION 'datalayer_ensure_log_partitions: days_ahead must be between 0 and 366, got %', days_ahead
            USING ERRCODE = '22023';
    END IF;
    FOR i IN 0 .. days_ahead LOOP
        IF @S@.datalayer_ensure_log_partition(today + i) THEN
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END
$$
$fn$,
$fn$
-- Detaches and drops the day partitions that end at or before older_than (at most 100 per call,
-- oldest first: call again until it returns no row), counting their rows first; returns one row
-- per dropped partition. older_than may not be later than the start of today (UTC), so today's
-- and future partitions are never dropped.
CREATE OR REPLACE FUNCTION @S@.datalayer_drop_log_partitions(older_than pg_catalog.timestamptz)
RETURNS TABLE (partition_name pg_catalog.text, row_count pg_catalog.int8)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    sch      CONSTANT text        := @SL@;
    parent   CONSTANT regclass    := pg_catalog.format('%I.system_log', sch)::regclass;
    midnight CONSTANT timestamptz := pg_catalog.date_trunc('day'::text, pg_catalog.clock_timestamp() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    r        record;
BEGIN
    IF older_than IS NULL THEN
        RAISE EXCEPTION 'datalayer_drop_log_partitions: older_than must not be null' USING ERRCODE = '22004';
    END IF;
    IF older_than > midnight THEN
        RAISE EXCEPTION 'datalayer_drop_log_partitions: older_than must be at or before the start of today (UTC), %, got %',
                        midnight, older_than USING ERRCODE = '22023';
    END IF;
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('datalayer.system_log.partitions'::text));
    FOR r IN
        SELECT p.relname
        FROM (SELECT c.relname::text AS relname,
                     pg_catalog.to_date(pg_catalog.substr(c.relname::text, 13), 'YYYYMMDD'::text) AS day
              FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = parent AND c.relname::text ~ '^system_log_p[0-9]{8}$'::text) p
        WHERE ((p.day + 1)::timestamp AT TIME ZONE 'UTC') <= older_than
        ORDER BY p.day
        LIMIT 100
    LOOP
        partition_name := r.relname;
        EXECUTE pg_catalog.format('SELECT pg_catalog.count(*) FROM %I.%I', sch, r.relname) INTO row_count;
        EXECUTE pg_catalog.format('ALTER TABLE %I.system_log DETACH PARTITION %I.%I', sch, sch, r.relname);
        EXECUTE pg_catalog.format('DROP TABLE %I.%I', sch, r.relname);
        RETURN NEXT;
    END LOOP;
END
$$
$fn$,
$fn$
-- The rows older than older_than that dropping whole days leaves: those of older_than's own UTC
-- day, and those waiting in the default partition. Returns how many it deleted. The application
-- role has no DELETE on system_log (append-only): retention deletes through this function, which
-- refuses a cutoff later than the start of today (UTC) and never touches another day partition.
CREATE OR REPLACE FUNCTION @S@.datalayer_delete_old_logs(older_than pg_catalog.timestamptz) RETURNS pg_catalog.int8
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    sch      CONSTANT text        := @SL@;
    midnight CONSTANT timestamptz := pg_catalog.date_trunc('day'::text, pg_catalog.clock_timestamp() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    day_start timestamptz;
    n         bigint;
    total     bigint := 0;
BEGIN
    IF older_than IS NULL THEN
        RAISE EXCEPTION 'datalayer_delete_old_logs: older_than must not be null' USING ERRCODE = '22004';
    END IF;
    IF older_than > midnight THEN
        RAISE EXCEPTION 'datalayer_delete_old_logs: older_than must be at or before the start of today (UTC), %, got %',
                        midnight, older_than USING ERRCODE = '22023';
    END IF;
    day_start := pg_catalog.date_trunc('day'::text, older_than AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    -- Pruned to the boundary day's partition (and the default one).
    EXECUTE pg_catalog.format('DELETE FROM %I.system_log WHERE created_at >= $1 AND created_at < $2', sch)
        USING day_start, older_than;
    GET DIAGNOSTICS n = ROW_COUNT;
    total := total + n;
    EXECUTE pg_catalog.format('DELETE FROM %I.system_log_default WHERE created_at < $1', sch) USING day_start;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN total + n;
END
$$
$fn$,
$fn$
REVOKE ALL ON FUNCTION @S@.datalayer_delete_old_logs(pg_catalog.timestamptz) FROM PUBLIC
$fn$
    ] LOOP
        EXECUTE pg_catalog.replace(pg_catalog.replace(body, '@SL@', pg_catalog.quote_literal(s)),
                                   '@S@', pg_catalog.quote_ident(s));
    END LOOP;
END
$migration$;
