-- name: create :one
-- A new note.
-- not-null: tags[]: the notes table's CHECK refuses NULL tags
INSERT INTO notes (title, body, tags)
VALUES (:'title', :'body', :'tags'::text[])
RETURNING id, title, body, tags, created_at;

-- name: get :maybe
-- One note by id.
-- not-null: tags[]: the notes table's CHECK refuses NULL tags
SELECT id, title, body, tags, created_at
FROM notes
WHERE id = :note_id;

-- name: find :many
-- Newest first; pass the last id of a page as after_id for the next one.
-- not-null: tags[]: the notes table's CHECK refuses NULL tags
SELECT id, title, body, tags, created_at
FROM notes
WHERE (:after_id::bigint IS NULL OR id < :after_id::bigint)
ORDER BY id DESC
LIMIT :limit;

-- name: count :scalar
SELECT count(*) FROM notes;

-- name: delete :exec
DELETE FROM notes WHERE id = :note_id;
