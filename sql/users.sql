-- Users. Run any query in psql after \set-ting its parameters, e.g.
--   \set user_id 42
--   \set email 'Ann@Example.com'
--   \set email_key 'ann@example.com'
-- email is the address as typed (where mail goes); email_key is its identity, computed in Python by
-- datalayer.text.email_key (never in SQL: lower() follows the collation). Lookups use the key.
-- Nullable parameters are written unquoted (:is_active::boolean) so that \set is_active NULL works.

-- name: create :one
-- Insert a user; returns the stored row.
INSERT INTO users (username, email, email_key, hashed_password, is_active)
VALUES (:'username', :'email', :'email_key', :'hashed_password', :is_active::boolean)
RETURNING id, username, email, hashed_password, is_active, created_at, updated_at;

-- name: get_by_id :maybe
-- One user by primary key.
SELECT id, username, email, hashed_password, is_active, created_at, updated_at
FROM users
WHERE id = :user_id;

-- name: get_by_username :maybe
SELECT id, username, email, hashed_password, is_active, created_at, updated_at
FROM users
WHERE username = :'username';

-- name: get_by_email :maybe
-- By identity key (equality on the unique index users_email_key_key).
SELECT id, username, email, hashed_password, is_active, created_at, updated_at
FROM users
WHERE email_key = :'email_key';

-- name: get_many :many
-- Users by a list of ids (\set ids '{1,2,3}'); an empty list gives no rows.
SELECT id, username, email, hashed_password, is_active, created_at, updated_at
FROM users
WHERE id = ANY(:'ids'::bigint[])
ORDER BY id;

-- name: update :maybe
-- Partial update: a NULL parameter leaves its column unchanged. Returns NULL when the user is gone.
UPDATE users
SET username        = coalesce(:username::text, username),
    email           = coalesce(:email::text, email),
    email_key       = coalesce(:email_key::text, email_key),
    hashed_password = coalesce(:hashed_password::text, hashed_password),
    is_active       = coalesce(:is_active::boolean, is_active)
WHERE id = :user_id
RETURNING id, username, email, hashed_password, is_active, created_at, updated_at;

-- name: delete :exec
-- Deletes the user and, by ON DELETE CASCADE, their analyses, files and tool generations.
DELETE FROM users WHERE id = :user_id;

-- name: find :many
-- Keyset page in id order; :after_id is the last id of the previous page (NULL for the first).
SELECT id, username, email, hashed_password, is_active, created_at, updated_at
FROM users
WHERE (:is_active::boolean IS NULL OR is_active = :is_active::boolean)
  AND (:after_id::bigint IS NULL OR id > :after_id::bigint)
ORDER BY id
LIMIT :fetch;

-- name: find_page :many
-- Numbered page in id order (pair it with count for the total).
SELECT id, username, email, hashed_password, is_active, created_at, updated_at
FROM users
WHERE (:is_active::boolean IS NULL OR is_active = :is_active::boolean)
ORDER BY id
LIMIT :per_page OFFSET :offset;

-- name: count :scalar
SELECT count(*) FROM users
WHERE (:is_active::boolean IS NULL OR is_active = :is_active::boolean);
