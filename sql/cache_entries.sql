-- cache_entries: the persistent layer of the cache. Expired rows and tombstones (value JSON null,
-- left by invalidate so that the version keeps counting) are invisible to get; purge_expired removes
-- both once expired.

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
        CASE WHEN :ttl_seconds::float8 IS NULL THEN NULL
             ELSE now() + make_interval(secs => :ttl_seconds::float8) END)
ON CONFLICT (key) DO UPDATE
SET value = EXCLUDED.value, version = EXCLUDED.version, expires_at = EXCLUDED.expires_at
WHERE cache_entries.version < EXCLUDED.version
RETURNING id, key, value, version, expires_at, created_at, updated_at;

-- name: put :one
-- Insert or replace unconditionally, moving the version on (a write of the newest truth).
INSERT INTO cache_entries (key, value, version, expires_at)
VALUES (:'key', :'value'::jsonb, 1,
        CASE WHEN :ttl_seconds::float8 IS NULL THEN NULL
             ELSE now() + make_interval(secs => :ttl_seconds::float8) END)
ON CONFLICT (key) DO UPDATE
SET value = EXCLUDED.value, version = cache_entries.version + 1, expires_at = EXCLUDED.expires_at
RETURNING id, key, value, version, expires_at, created_at, updated_at;

-- name: invalidate :exec
-- Replaces each key's value with a tombstone and moves its version on, so that a writer that read the
-- old version cannot bring the value back. Tombstones expire after a day (purge_expired removes them).
INSERT INTO cache_entries (key, value, version, expires_at)
SELECT k, 'null'::jsonb, 1, now() + interval '1 day'
FROM unnest(:'keys'::text[]) AS k
ON CONFLICT (key) DO UPDATE
SET value = 'null'::jsonb, version = cache_entries.version + 1, expires_at = now() + interval '1 day';

-- name: delete :exec
DELETE FROM cache_entries WHERE key = :'key';

-- name: delete_prefix :exec
DELETE FROM cache_entries WHERE starts_with(key, :'prefix');

-- name: purge_expired :exec
DELETE FROM cache_entries WHERE expires_at <= now();

-- name: count :scalar
SELECT count(*) FROM cache_entries
WHERE (expires_at IS NULL OR expires_at > now()) AND value <> 'null'::jsonb;
