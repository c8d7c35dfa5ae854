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
-- Size on disk (with indexes and TOAST) and estimated rows; system_log sums its partitions.
-- not-null: total_bytes, estimated_rows: sums over a non-empty partition tree and sizes of existing tables
SELECT t.name, t.total_bytes, t.estimated_rows
FROM (
    SELECT c.relname::text AS name,
           pg_total_relation_size(c.oid::regclass)::bigint AS total_bytes,
           greatest(c.reltuples, 0)::bigint AS estimated_rows
    FROM pg_class c
    WHERE c.relname IN ('users', 'data_analyses', 'analysis_files', 'tool_generations', 'cache_entries')
      AND c.relkind = 'r'
      AND c.relnamespace = current_schema()::regnamespace
    UNION ALL
    SELECT 'system_log',
           coalesce(sum(pg_total_relation_size(p.relid)), 0)::bigint,
           coalesce(sum(greatest(c.reltuples, 0)), 0)::bigint
    FROM pg_partition_tree('system_log'::regclass) p
    JOIN pg_class c ON c.oid = p.relid
    WHERE p.isleaf
) t
ORDER BY t.name;
