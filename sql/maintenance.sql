-- Partition upkeep and health queries.

-- name: ensure_log_partition :scalar
-- Creates the system_log partition of one UTC day (\set day '2026-01-31'); false if it exists.
-- not-null: created: the function returns true or false, or raises
SELECT datalayer_ensure_log_partition(:'day'::date) AS created;

-- name: log_partitions :many
-- Every partition of system_log with its day (NULL for the default partition), default last.
-- not-null: total_bytes: pg_total_relation_size() of a relation listed in pg_class is never NULL
SELECT c.relname::text AS name,
       CASE WHEN c.relname ~ '^system_log_p[0-9]{8}$'
            THEN to_date(substr(c.relname, 13), 'YYYYMMDD') END AS day,
       greatest(c.reltuples, 0)::bigint AS estimated_rows,
       pg_total_relation_size(c.oid) AS total_bytes
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
-- Detaches and drops every day partition that ends at or before :cutoff; returns their row counts.
-- not-null: partition_name, row_count: the function fills both for every row it returns
SELECT partition_name, row_count FROM datalayer_drop_log_partitions(:'cutoff'::timestamptz);

-- name: delete_logs_before :exec
-- The rows older than :cutoff that dropping whole days leaves: the boundary day and the default
-- partition (pruned to those).
DELETE FROM system_log WHERE created_at < :'cutoff'::timestamptz;
