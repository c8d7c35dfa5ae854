-- Data analyses. Parameters as in users.sql; jsonb values are quoted: \set parameters '{"k": 1}'.
-- Owner-scoped queries take :user_id and match nothing of another user, so a service can enforce
-- access control with the same call it uses to read; where :user_id may be NULL, NULL means any owner.

-- name: create :one
INSERT INTO data_analyses (user_id, name, analysis_type, parameters)
VALUES (:user_id, :'name', :'analysis_type', :'parameters'::jsonb)
RETURNING id, user_id, name, analysis_type, parameters, status, result, error, started_at, completed_at,
          created_at, updated_at;

-- name: get_by_id :maybe
SELECT id, user_id, name, analysis_type, parameters, status, result, error, started_at, completed_at,
       created_at, updated_at
FROM data_analyses
WHERE id = :analysis_id;

-- name: get_for_user :maybe
-- The analysis only if it belongs to :user_id.
SELECT id, user_id, name, analysis_type, parameters, status, result, error, started_at, completed_at,
       created_at, updated_at
FROM data_analyses
WHERE id = :analysis_id AND user_id = :user_id;

-- name: get_many :many
SELECT id, user_id, name, analysis_type, parameters, status, result, error, started_at, completed_at,
       created_at, updated_at
FROM data_analyses
WHERE id = ANY(:'ids'::bigint[])
ORDER BY id;

-- name: with_files :maybe
-- An analysis and all its files in one round trip; :user_id NULL means any owner.
-- not-null: files: the scalar subquery aggregates (one row) and coalesces to an empty array
SELECT a.id, a.user_id, a.name, a.analysis_type, a.parameters, a.status, a.result, a.error, a.started_at,
       a.completed_at, a.created_at, a.updated_at,
       (SELECT coalesce(json_agg(f ORDER BY f.id), '[]'::json)
        FROM analysis_files f
        WHERE f.analysis_id = a.id) AS files
FROM data_analyses a
WHERE a.id = :analysis_id
  AND (:user_id::bigint IS NULL OR a.user_id = :user_id::bigint);

-- name: update :maybe
-- Partial update (NULL leaves a column as it is); :user_id NULL means any owner.
UPDATE data_analyses
SET name          = coalesce(:name::text, name),
    analysis_type = coalesce(:analysis_type::text, analysis_type),
    parameters    = coalesce(:parameters::jsonb, parameters)
WHERE id = :analysis_id
  AND (:user_id::bigint IS NULL OR user_id = :user_id::bigint)
RETURNING id, user_id, name, analysis_type, parameters, status, result, error, started_at, completed_at,
          created_at, updated_at;

-- name: transition :maybe
-- Moves the status from :from_status to :to_status (the moves are the table of repos/_status.py:
-- pending -> running -> completed | failed), setting started_at, completed_at, result and error in
-- the same statement. No row: not found, not yours, or not in :from_status.
UPDATE data_analyses
SET status       = :'to_status',
    started_at   = CASE WHEN :'to_status' = 'running' THEN now() ELSE started_at END,
    completed_at = CASE WHEN :'to_status' IN ('completed', 'failed') THEN now() ELSE completed_at END,
    result       = CASE WHEN :'to_status' = 'completed' THEN :result::jsonb ELSE result END,
    error        = CASE WHEN :'to_status' = 'failed' THEN :error::text ELSE error END
WHERE id = :analysis_id
  AND (:user_id::bigint IS NULL OR user_id = :user_id::bigint)
  AND status = :'from_status'
RETURNING id, user_id, name, analysis_type, parameters, status, result, error, started_at, completed_at,
          created_at, updated_at;

-- name: status_of :maybe
SELECT status FROM data_analyses
WHERE id = :analysis_id AND (:user_id::bigint IS NULL OR user_id = :user_id::bigint);

-- name: delete :exec
-- Deletes the analysis and (ON DELETE CASCADE) its files; :user_id NULL means any owner.
DELETE FROM data_analyses
WHERE id = :analysis_id AND (:user_id::bigint IS NULL OR user_id = :user_id::bigint);

-- name: find_for_user :many
-- A user's analyses, newest first, optionally filtered; keyset after (:after_created, :after_id).
-- Served by data_analyses_user_created_idx (user_id, created_at DESC, id DESC).
SELECT id, user_id, name, analysis_type, parameters, status, result, error, started_at, completed_at,
       created_at, updated_at
FROM data_analyses
WHERE user_id = :user_id
  AND (:status::text IS NULL OR status = :status::text)
  AND (:analysis_type::text IS NULL OR analysis_type = :analysis_type::text)
  AND (:created_after::timestamptz IS NULL OR created_at >= :created_after::timestamptz)
  AND (:created_before::timestamptz IS NULL OR created_at < :created_before::timestamptz)
  AND (:name_prefix::text IS NULL OR starts_with(name, :name_prefix::text))
  AND (:after_created::timestamptz IS NULL OR (created_at, id) < (:after_created::timestamptz, :after_id::bigint))
ORDER BY created_at DESC, id DESC
LIMIT :fetch;

-- name: find_for_user_oldest :many
-- The same, oldest first.
SELECT id, user_id, name, analysis_type, parameters, status, result, error, started_at, completed_at,
       created_at, updated_at
FROM data_analyses
WHERE user_id = :user_id
  AND (:status::text IS NULL OR status = :status::text)
  AND (:analysis_type::text IS NULL OR analysis_type = :analysis_type::text)
  AND (:created_after::timestamptz IS NULL OR created_at >= :created_after::timestamptz)
  AND (:created_before::timestamptz IS NULL OR created_at < :created_before::timestamptz)
  AND (:name_prefix::text IS NULL OR starts_with(name, :name_prefix::text))
  AND (:after_created::timestamptz IS NULL OR (created_at, id) > (:after_created::timestamptz, :after_id::bigint))
ORDER BY created_at, id
LIMIT :fetch;

-- name: find :many
-- Every user's analyses, newest first, optionally filtered (a status filter is served by
-- data_analyses_status_created_idx, no filter by data_analyses_created_idx).
SELECT id, user_id, name, analysis_type, parameters, status, result, error, started_at, completed_at,
       created_at, updated_at
FROM data_analyses
WHERE (:status::text IS NULL OR status = :status::text)
  AND (:analysis_type::text IS NULL OR analysis_type = :analysis_type::text)
  AND (:created_after::timestamptz IS NULL OR created_at >= :created_after::timestamptz)
  AND (:created_before::timestamptz IS NULL OR created_at < :created_before::timestamptz)
  AND (:name_prefix::text IS NULL OR starts_with(name, :name_prefix::text))
  AND (:after_created::timestamptz IS NULL OR (created_at, id) < (:after_created::timestamptz, :after_id::bigint))
ORDER BY created_at DESC, id DESC
LIMIT :fetch;

-- name: find_oldest :many
SELECT id, user_id, name, analysis_type, parameters, status, result, error, started_at, completed_at,
       created_at, updated_at
FROM data_analyses
WHERE (:status::text IS NULL OR status = :status::text)
  AND (:analysis_type::text IS NULL OR analysis_type = :analysis_type::text)
  AND (:created_after::timestamptz IS NULL OR created_at >= :created_after::timestamptz)
  AND (:created_before::timestamptz IS NULL OR created_at < :created_before::timestamptz)
  AND (:name_prefix::text IS NULL OR starts_with(name, :name_prefix::text))
  AND (:after_created::timestamptz IS NULL OR (created_at, id) > (:after_created::timestamptz, :after_id::bigint))
ORDER BY created_at, id
LIMIT :fetch;

-- name: find_page :many
-- A numbered page, newest first (pair it with count).
SELECT id, user_id, name, analysis_type, parameters, status, result, error, started_at, completed_at,
       created_at, updated_at
FROM data_analyses
WHERE (:user_id::bigint IS NULL OR user_id = :user_id::bigint)
  AND (:status::text IS NULL OR status = :status::text)
ORDER BY created_at DESC, id DESC
LIMIT :per_page OFFSET :offset;

-- name: count :scalar
SELECT count(*) FROM data_analyses
WHERE (:user_id::bigint IS NULL OR user_id = :user_id::bigint)
  AND (:status::text IS NULL OR status = :status::text);
