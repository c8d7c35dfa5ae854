-- Partition upkeep and health queries.

-- name: ensure_log_partition :scalar
-- Creates the system_log partition of one UTC day (\set day '2026-01-31'); false if it exists.
-- not-null: created: the function returns true or false, or raises
SELECT datalayer_ensure_log_partition(:'day'::date) AS created;

-- name: log_partitions :many
-- Every partition of system_log with its day (NULL for the default partition), default last.
-- Arguments are cast to the exact types of pg_catalog's functions (here and in every query an owner
-- may run): a look-alike planted in a schema on the search_path would otherwise be a better match.
-- not-null: total_bytes: pg_total_relation_size() of a relation listed in pg_class is never NULL
SELECT c.relname::text AS name,
       CASE WHEN c.relname ~ '^system_log_p[0-9]{8}$'
            THEN to_date(substr(c.relname::text, 13), 'YYYYMMDD') END AS day,
       greatest(c.reltuples, 0)::bigint AS estimated_rows,
       pg_total_relation_size(c.oid::regclass) AS total_bytes
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'system_log'::regclass
ORDER BY c.relname = 'system_log_default', c.relname;

-- name: default_partition_rows :scalar
-- Rows waiting in the default partition (should be 0: their day's partition is missing).
SELECT count(*) FROM system_log_default;

-- name: invalid_indexes :many
-- Indexes left invalid by a failed CREATE INDEX CONCURRENTLY.
SELECT c.relname::text
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
WHERE NOT i.indisvalid
  AND c.relnamespace = current_schema()::regnamespace
ORDER BY 1;

-- name: drop_log_partitions :many
-- Detaches and drops the day partitions that end at or before :cutoff, at most 100 per call (call
-- again until no row comes back); returns their row counts. :cutoff may not be later than the
-- start of today (UTC).
-- not-null: partition_name, row_count: the function fills both for every row it returns
SELECT partition_name, row_count FROM datalayer_drop_log_partitions(:'cutoff'::timestamptz);

-- name: delete_old_logs :scalar
-- The rows older than :cutoff that dropping whole days leaves: those of the cutoff's own day and
-- of the default partition. A SECURITY DEFINER function: the application role may not DELETE
-- from system_log (append-only).
-- not-null: deleted: the function returns a row count or raises
SELECT datalayer_delete_old_logs(:'cutoff'::timestamptz) AS deleted;
