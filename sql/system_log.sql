-- system_log: append-only, partitioned by UTC day. Every listing is bounded in time
-- (:'since' <= created_at < :'until'), which is what prunes partitions.

-- name: create :one
INSERT INTO system_log (service, level, message, details, user_id)
VALUES (:'service', :'level', :'message', :'details'::jsonb, :user_id::bigint)
RETURNING id, created_at, service, level, message, details, user_id, updated_at;

-- name: get_by_id :maybe
-- By id alone every partition is probed; pass :since/:until to find when you know the day.
SELECT id, created_at, service, level, message, details, user_id, updated_at
FROM system_log
WHERE id = :log_id;

-- name: find :many
-- Events in [since, until), newest first, optionally of one service and/or level; keyset after
-- (:after_created, :after_id). Pruned to the partitions of the range.
SELECT id, created_at, service, level, message, details, user_id, updated_at
FROM system_log
WHERE created_at >= :'since'::timestamptz
  AND created_at < :'until'::timestamptz
  AND (:service::text IS NULL OR service = :service::text)
  AND (:level::text IS NULL OR level = :level::text)
  AND (:user_id::bigint IS NULL OR user_id = :user_id::bigint)
  AND (:after_created::timestamptz IS NULL OR (created_at, id) < (:after_created::timestamptz, :after_id::bigint))
ORDER BY created_at DESC, id DESC
LIMIT :fetch;

-- name: count_by_level :many
-- Events per level in [since, until).
SELECT level, count(*) AS count
FROM system_log
WHERE created_at >= :'since'::timestamptz AND created_at < :'until'::timestamptz
  AND (:service::text IS NULL OR service = :service::text)
GROUP BY level
ORDER BY level;

-- name: copy_in :copy
-- Bulk insert (bulk_insert): ids and updated_at come from their defaults.
COPY system_log (created_at, service, level, message, details, user_id) FROM STDIN;

-- name: record_landed :scalar
-- Did a COPY whose COMMIT outcome is unknown go through? The log handler tags each batch's first
-- row with a record_id and looks for it within the batch's time span (pruned to its partitions).
SELECT EXISTS (
    SELECT 1 FROM system_log
    WHERE created_at BETWEEN :'first'::timestamptz AND :'last'::timestamptz
      AND service = :'service'
      AND details->>'record_id' = :'record_id'
) AS landed;

-- name: day_partitions_among :many
-- Which of the named day partitions of system_log exist (\set names '{system_log_p20261203}'):
-- the writers' one catalogue read before they create any.
-- not-null: relname: pg_class.relname is NOT NULL
SELECT c.relname::text AS relname
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = to_regclass('system_log')
  AND c.relname = ANY(:'names'::text[])
ORDER BY 1;
