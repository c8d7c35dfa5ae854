-- cache_entries: the persistent layer of the cache. Expired rows are invisible to get and removed
-- by purge_expired.

-- name: get :maybe
SELECT id, key, value, version, expires_at, created_at, updated_at
FROM cache_entries
WHERE key = :'key' AND (expires_at IS NULL OR expires_at > now());

-- name: set :maybe
-- Insert or replace, unless the stored entry has a newer version (then no row comes back): a writer
-- that computed its value before an invalidation cannot overwrite what came after it.
INSERT INTO cache_entries (key, value, version, expires_at)
VALUES (:'key', :'value'::jsonb, :version,
        CASE WHEN :ttl_seconds::float8 IS NULL THEN NULL
             ELSE now() + make_interval(secs => :ttl_seconds::float8) END)
ON CONFLICT (key) DO UPDATE
SET value = EXCLUDED.value, version = EXCLUDED.version, expires_at = EXCLUDED.expires_at
WHERE cache_entries.version <= EXCLUDED.version
RETURNING id, key, value, version, expires_at, created_at, updated_at;

-- name: delete :exec
DELETE FROM cache_entries WHERE key = :'key';

-- name: delete_prefix :exec
DELETE FROM cache_entries WHERE starts_with(key, :'prefix');

-- name: purge_expired :exec
DELETE FROM cache_entries WHERE expires_at <= now();

-- name: count :scalar
SELECT count(*) FROM cache_entries WHERE expires_at IS NULL OR expires_at > now();
