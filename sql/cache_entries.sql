-- cache_entries: the persistent layer of the cache. Expired rows and tombstones (value JSON null,
-- left by invalidate so that the version keeps counting) are invisible to get; purge_expired removes
-- both once expired.
--
-- Versions never overflow: a version moves on by one and stops at bigint's top (a row there can
-- still be replaced by put and tombstoned by invalidate; set refuses versions above 2^62, so the
-- top is 2^62 moves away). Keys are locked in sorted order, once each: concurrent invalidations of
-- overlapping keys cannot deadlock, and a repeated key is not "affected twice". :ttl is in seconds
-- (NULL: no expiry).

-- name: get :maybe
SELECT id, key, value, version, expires_at, created_at, updated_at
FROM cache_entries
WHERE key = :'key' AND (expires_at IS NULL OR expires_at > now()) AND value <> 'null'::jsonb;

-- name: peek :maybe
-- The row whatever its state (expired, tombstone): its version is what a writer must beat.
SELECT id, key, value, version, expires_at, created_at, updated_at
FROM cache_entries
WHERE key = :'key';

-- name: set :maybe
-- Insert or replace only with a strictly newer version (else no row comes back): a writer that read
-- version n before computing its value writes n + 1, and loses to any write or invalidation since.
INSERT INTO cache_entries (key, value, version, expires_at)
VALUES (:'key', :'value'::jsonb, :version,
        CASE WHEN :ttl::float8 IS NULL THEN NULL
             ELSE now() + make_interval(secs => :ttl::float8) END)
ON CONFLICT (key) DO UPDATE
SET value = EXCLUDED.value, version = EXCLUDED.version, expires_at = EXCLUDED.expires_at
WHERE cache_entries.version < EXCLUDED.version
RETURNING id, key, value, version, expires_at, created_at, updated_at;

-- name: put :one
-- Insert or replace unconditionally, moving the version on (a write of the newest truth).
INSERT INTO cache_entries (key, value, version, expires_at)
VALUES (:'key', :'value'::jsonb, 1,
        CASE WHEN :ttl::float8 IS NULL THEN NULL
             ELSE now() + make_interval(secs => :ttl::float8) END)
ON CONFLICT (key) DO UPDATE
SET value = EXCLUDED.value, version = LEAST(cache_entries.version, 9223372036854775806) + 1,
    expires_at = EXCLUDED.expires_at
RETURNING id, key, value, version, expires_at, created_at, updated_at;

-- name: invalidate :exec
-- Replaces each key's value with a tombstone and moves its version on, so that a writer that read the
-- old version cannot bring the value back. Tombstones expire after a day (purge_expired removes them).
INSERT INTO cache_entries (key, value, version, expires_at)
SELECT DISTINCT k, 'null'::jsonb, 1, now() + interval '1 day'
FROM unnest(:'keys'::text[]) AS k
ORDER BY k
ON CONFLICT (key) DO UPDATE
SET value = 'null'::jsonb, version = LEAST(cache_entries.version, 9223372036854775806) + 1,
    expires_at = now() + interval '1 day';

-- name: delete :exec
DELETE FROM cache_entries WHERE key = :'key';

-- name: delete_prefix :exec
DELETE FROM cache_entries WHERE starts_with(key, :'prefix');

-- name: purge_expired :exec
DELETE FROM cache_entries WHERE expires_at <= now();

-- name: count :scalar
SELECT count(*) FROM cache_entries
WHERE (expires_at IS NULL OR expires_at > now()) AND value <> 'null'::jsonb;

-- Pending invalidations (cache_invalidations, migrations/0006): what the cache recorded in PostgreSQL
-- because its Redis part may not have happened.

-- name: record_invalidations :many
-- Runs in the writer's transaction, before its COMMIT (table_done false), or after a Redis call
-- failed outside one (table_done true: cache_entries was already brought up to date).
INSERT INTO cache_invalidations (kind, key, table_done)
SELECT :'kind', k, :table_done::boolean FROM unnest(:'keys'::text[]) AS k
RETURNING id;

-- name: settle_invalidations :exec
-- After the writer's COMMIT: tombstone its keys here and forget its records when Redis took the
-- invalidation (:redis_done), else mark their cache_entries part done and leave the Redis part for
-- the replay.
WITH forgotten AS (
    DELETE FROM cache_invalidations WHERE id = ANY(:'ids'::bigint[]) AND :redis_done::boolean
), marked AS (
    UPDATE cache_invalidations SET table_done = true
    WHERE id = ANY(:'ids'::bigint[]) AND NOT :redis_done::boolean
)
INSERT INTO cache_entries (key, value, version, expires_at)
SELECT DISTINCT k, 'null'::jsonb, 1, now() + interval '1 day'
FROM unnest(:'keys'::text[]) AS k
ORDER BY k
ON CONFLICT (key) DO UPDATE
SET value = 'null'::jsonb, version = LEAST(cache_entries.version, 9223372036854775806) + 1,
    expires_at = now() + interval '1 day';

-- name: pending_invalidations :many
-- The oldest pending invalidations under a cache prefix (a service's CACHE_PREFIX names its Redis).
SELECT id, kind, key, table_done
FROM cache_invalidations
WHERE starts_with(key, :'prefix')
ORDER BY id
LIMIT :limit;

-- name: apply_invalidations_to_table :exec
-- The cache_entries part of pending invalidations, once each: tombstone the keys, mark the records.
WITH marked AS (
    UPDATE cache_invalidations SET table_done = true
    WHERE id = ANY(:'ids'::bigint[]) AND NOT table_done
    RETURNING kind, key
)
INSERT INTO cache_entries (key, value, version, expires_at)
SELECT DISTINCT key, 'null'::jsonb, 1, now() + interval '1 day'
FROM marked
WHERE kind = 'key'
ORDER BY key
ON CONFLICT (key) DO UPDATE
SET value = 'null'::jsonb, version = LEAST(cache_entries.version, 9223372036854775806) + 1,
    expires_at = now() + interval '1 day';

-- name: forget_invalidations :exec
-- Redis took them: the records are done.
DELETE FROM cache_invalidations WHERE id = ANY(:'ids'::bigint[]);

-- name: can_record_invalidations :scalar
-- Whether this database and role can record invalidations (migrations/0006 applied, privileges
-- granted): asked once per database, so that recording never aborts a writer's transaction.
SELECT coalesce(has_table_privilege(to_regclass('cache_invalidations'), 'INSERT'), false);
