-- Restores the definitions of 0002 (as they were before 0004 hardened them) and drops the
-- function 0004 added. Grants on the restored functions are kept by CREATE OR REPLACE.

-- A migration waiting for a lock queues all traffic behind it: give up after 10 s and retry later.
SET LOCAL lock_timeout = '10s';
SET LOCAL statement_timeout = '10min';

DROP FUNCTION datalayer_delete_old_logs(timestamptz);

CREATE OR REPLACE FUNCTION datalayer_log_partition_name(day date) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT 'system_log_p' || to_char(day, 'YYYYMMDD')
$$;

-- Creates the partition for one UTC day; returns false when it already exists. Runs as the schema
-- owner (SECURITY DEFINER) so that an application role without DDL rights can keep partitions
-- ahead. Call it once per transaction per day: every lock it takes is held until COMMIT.
CREATE OR REPLACE FUNCTION datalayer_ensure_log_partition(day date) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    part    text        := datalayer_log_partition_name(day);
    lo      timestamptz := day::timestamp AT TIME ZONE 'UTC';
    hi      timestamptz := (day + 1)::timestamp AT TIME ZONE 'UTC';
    attempt integer     := 0;
BEGIN
    IF day IS NULL THEN
        RAISE EXCEPTION 'datalayer_ensure_log_partition: day must not be null' USING ERRCODE = '22004';
    END IF;
    -- One maintainer at a time, across processes.
    PERFORM pg_advisory_xact_lock(hashtext('datalayer.system_log.partitions'));
    IF EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
               WHERE i.inhparent = 'system_log'::regclass AND c.relname = part) THEN
        RETURN false;
    END IF;
    -- A standalone table first, attached below: CREATE TABLE ... PARTITION OF would take ACCESS
    -- EXCLUSIVE on system_log and stall every writer while it waits for its lock.
    IF to_regclass(part) IS NULL THEN
        EXECUTE format('CREATE TABLE %I (LIKE system_log INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE)', part);
        -- Matching the partition bound lets ATTACH skip its validation scan of the new table.
        EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK (created_at >= %L AND created_at < %L)',
                       part, part || '_bounds', lo, hi);
    END IF;
    -- A short lock_timeout with retries: a waiting ATTACH queues every later reader of the default
    -- partition behind it, so it must never wait long.
    PERFORM set_config('lock_timeout', '500ms', true);
    LOOP
        BEGIN
            -- ATTACH refuses while the default partition holds rows of this day: move them first,
            -- in the same transaction, so no row is ever in neither place.
            EXECUTE format('WITH moved AS (DELETE FROM system_log_default WHERE created_at >= %L AND created_at < %L RETURNING *) '
                           'INSERT INTO %I SELECT * FROM moved', lo, hi, part);
            EXECUTE format('ALTER TABLE system_log ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
            EXIT;
        EXCEPTION WHEN lock_not_available THEN
            attempt := attempt + 1;
            IF attempt >= 20 THEN
                RAISE;
            END IF;
            PERFORM pg_sleep(0.05 * attempt + random() * 0.05);
        END;
    END LOOP;
    RETURN true;
END
$$;

-- Creates the partitions from today (UTC) to days_ahead days ahead, in one transaction; returns
-- how many it created. datalayer's Python side calls datalayer_ensure_log_partition per day in
-- separate transactions instead, so that locks are short.
CREATE OR REPLACE FUNCTION datalayer_ensure_log_partitions(days_ahead integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    today   date    := (now() AT TIME ZONE 'UTC')::date;
    created integer := 0;
    d       date;
BEGIN
    IF days_ahead IS NULL OR days_ahead NOT BETWEEN 0 AND 366 THEN
        RAISE EXCEPTION 'datalayer_ensure_log_partitions: days_ahead must be between 0 and 366, got %', days_ahead
            USING ERRCODE = '22023';
    END IF;
    FOR d IN SELECT g::date FROM generate_series(today, today + days_ahead, interval '1 day') AS g LOOP
        IF datalayer_ensure_log_partition(d) THEN
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END
$$;

-- Detaches and drops every day partition that ends at or before older_than, counting its rows
-- first; returns one row per dropped partition. Rows older than the cutoff inside the boundary day
-- or the default partition are left for a plain DELETE by the caller.
CREATE OR REPLACE FUNCTION datalayer_drop_log_partitions(older_than timestamptz)
RETURNS TABLE (partition_name text, row_count bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    r record;
BEGIN
    IF older_than IS NULL THEN
        RAISE EXCEPTION 'datalayer_drop_log_partitions: older_than must not be null' USING ERRCODE = '22004';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('datalayer.system_log.partitions'));
    FOR r IN
        SELECT c.relname::text AS relname, to_date(substr(c.relname, 13), 'YYYYMMDD') AS day
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'system_log'::regclass AND c.relname ~ '^system_log_p[0-9]{8}$'
        ORDER BY c.relname
    LOOP
        CONTINUE WHEN ((r.day + 1)::timestamp AT TIME ZONE 'UTC') > older_than;
        partition_name := r.relname;
        EXECUTE format('SELECT count(*) FROM %I', r.relname) INTO row_count;
        EXECUTE format('ALTER TABLE system_log DETACH PARTITION %I', r.relname);
        EXECUTE format('DROP TABLE %I', r.relname);
        RETURN NEXT;
    END LOOP;
END
$$;
