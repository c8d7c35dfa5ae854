-- Numbers for dashboards (get_database_stats).

-- name: user_count :scalar
SELECT count(*) FROM users;

-- name: recent_analyses :scalar
-- Analyses created in the last 24 hours.
SELECT count(*) FROM data_analyses WHERE created_at >= now() - interval '24 hours';

-- name: analyses_by_status :many
SELECT status, count(*) AS count FROM data_analyses GROUP BY status ORDER BY status;

-- name: tool_generations_by_status :many
SELECT status, count(*) AS count FROM tool_generations GROUP BY status ORDER BY status;

-- name: logs_last_hour_by_level :many
SELECT level, count(*) AS count
FROM system_log
WHERE created_at >= now() - interval '1 hour'
GROUP BY level
ORDER BY level;

-- name: table_sizes :many
-- Size on disk (with indexes and TOAST) and estimated rows of each of the given tables of the current
-- schema; a partitioned table sums its partitions (itself has no storage). Missing tables are left out.
-- Qualified with pg_catalog: look-alike functions planted in public must not run as a dashboard's role.
-- not-null: name, total_bytes, estimated_rows: the caller passes table names; sums over at least the table itself
SELECT t.name, pg_catalog.sum(pg_catalog.pg_total_relation_size(c.oid::regclass))::bigint AS total_bytes,
       pg_catalog.sum(GREATEST(c.reltuples, 0))::bigint AS estimated_rows
FROM pg_catalog.unnest(:'tables'::text[]) AS t (name)
CROSS JOIN LATERAL (
    SELECT pg_catalog.to_regclass(pg_catalog.format('%I.%I', pg_catalog.current_schema(), t.name)) AS oid
) r
CROSS JOIN LATERAL (
    SELECT p.relid FROM pg_catalog.pg_partition_tree(r.oid) p WHERE p.isleaf UNION SELECT r.oid
) l
JOIN pg_catalog.pg_class c ON c.oid = l.relid
GROUP BY t.name
ORDER BY t.name;
