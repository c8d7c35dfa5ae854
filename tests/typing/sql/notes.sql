-- name: get :maybe
SELECT id, title FROM notes WHERE id = :note_id

-- name: get_one :one
SELECT id, title FROM notes WHERE id = :note_id

-- name: every :many
SELECT id, title FROM notes ORDER BY id

-- name: count :scalar
SELECT count(*) FROM notes

-- name: rename :exec
UPDATE notes SET title = :'title' WHERE id = :note_id

-- name: load :copy
COPY notes (id, title) FROM STDIN
