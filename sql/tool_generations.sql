-- Tool generations: a user asks a tool (:tool_type) to generate something from a spec (jsonb).

-- name: create :one
INSERT INTO tool_generations (user_id, tool_type, spec)
VALUES (:user_id, :'tool_type', :'spec'::jsonb)
RETURNING id, user_id, tool_type, spec, status, output, error, started_at, completed_at, created_at, updated_at;

-- name: get_by_id :maybe
SELECT id, user_id, tool_type, spec, status, output, error, started_at, completed_at, created_at, updated_at
FROM tool_generations
WHERE id = :generation_id;

-- name: get_for_user :maybe
SELECT id, user_id, tool_type, spec, status, output, error, started_at, completed_at, created_at, updated_at
FROM tool_generations
WHERE id = :generation_id AND user_id = :user_id;

-- name: get_many :many
SELECT id, user_id, tool_type, spec, status, output, error, started_at, completed_at, created_at, updated_at
FROM tool_generations
WHERE id = ANY(:'ids'::bigint[])
ORDER BY id;

-- name: update :maybe
-- Partial update (NULL leaves a column as it is); :user_id NULL means any owner.
UPDATE tool_generations
SET tool_type = coalesce(:tool_type::text, tool_type),
    spec      = coalesce(:spec::jsonb, spec)
WHERE id = :generation_id
  AND (:user_id::bigint IS NULL OR user_id = :user_id::bigint)
RETURNING id, user_id, tool_type, spec, status, output, error, started_at, completed_at, created_at, updated_at;

-- name: transition :maybe
-- :from_status -> :to_status (pending -> running -> completed | failed), with started_at,
-- completed_at, output and error set in the same statement (see analyses.transition).
UPDATE tool_generations
SET status       = :'to_status',
    started_at   = CASE WHEN :'to_status' = 'running' THEN now() ELSE started_at END,
    completed_at = CASE WHEN :'to_status' IN ('completed', 'failed') THEN now() ELSE completed_at END,
    output       = CASE WHEN :'to_status' = 'completed' THEN :output::jsonb ELSE output END,
    error        = CASE WHEN :'to_status' = 'failed' THEN :error::text ELSE error END
WHERE id = :generation_id
  AND (:user_id::bigint IS NULL OR user_id = :user_id::bigint)
  AND status = :'from_status'
RETURNING id, user_id, tool_type, spec, status, output, error, started_at, completed_at, created_at, updated_at;

-- name: status_of :maybe
SELECT status FROM tool_generations
WHERE id = :generation_id AND (:user_id::bigint IS NULL OR user_id = :user_id::bigint);

-- name: delete :exec
DELETE FROM tool_generations
WHERE id = :generation_id AND (:user_id::bigint IS NULL OR user_id = :user_id::bigint);

-- name: find_for_user :many
-- A user's generations, newest first, by status and/or tool type (tool_generations_user_created_idx).
SELECT id, user_id, tool_type, spec, status, output, error, started_at, completed_at, created_at, updated_at
FROM tool_generations
WHERE user_id = :user_id
  AND (:status::text IS NULL OR status = :status::text)
  AND (:tool_type::text IS NULL OR tool_type = :tool_type::text)
  AND (:created_after::timestamptz IS NULL OR created_at >= :created_after::timestamptz)
  AND (:created_before::timestamptz IS NULL OR created_at < :created_before::timestamptz)
  AND (:after_created::timestamptz IS NULL OR (created_at, id) < (:after_created::timestamptz, :after_id::bigint))
ORDER BY created_at DESC, id DESC
LIMIT :fetch;

-- name: find :many
-- Every user's generations, newest first (tool_generations_status_created_idx for a status).
SELECT id, user_id, tool_type, spec, status, output, error, started_at, completed_at, created_at, updated_at
FROM tool_generations
WHERE (:status::text IS NULL OR status = :status::text)
  AND (:tool_type::text IS NULL OR tool_type = :tool_type::text)
  AND (:created_after::timestamptz IS NULL OR created_at >= :created_after::timestamptz)
  AND (:created_before::timestamptz IS NULL OR created_at < :created_before::timestamptz)
  AND (:after_created::timestamptz IS NULL OR (created_at, id) < (:after_created::timestamptz, :after_id::bigint))
ORDER BY created_at DESC, id DESC
LIMIT :fetch;

-- name: find_page :many
SELECT id, user_id, tool_type, spec, status, output, error, started_at, completed_at, created_at, updated_at
FROM tool_generations
WHERE (:user_id::bigint IS NULL OR user_id = :user_id::bigint)
  AND (:status::text IS NULL OR status = :status::text)
  AND (:tool_type::text IS NULL OR tool_type = :tool_type::text)
ORDER BY created_at DESC, id DESC
LIMIT :per_page OFFSET :offset;

-- name: count :scalar
SELECT count(*) FROM tool_generations
WHERE (:user_id::bigint IS NULL OR user_id = :user_id::bigint)
  AND (:status::text IS NULL OR status = :status::text)
  AND (:tool_type::text IS NULL OR tool_type = :tool_type::text);
