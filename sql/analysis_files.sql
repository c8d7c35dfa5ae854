-- Files of analyses. A file belongs to its analysis's user: owner-scoped queries check data_analyses for
-- :user_id (where it may be NULL, NULL means any owner).

-- name: create :maybe
-- With :user_id, only under an analysis of that user (no row: the analysis is not theirs); NULL: any.
INSERT INTO analysis_files (analysis_id, filename, file_type, size_bytes, storage_uri, checksum)
SELECT :analysis_id::bigint, :'filename'::text, :'file_type'::text, :size_bytes::bigint, :'storage_uri'::text,
       :checksum::text
WHERE :user_id::bigint IS NULL
   OR EXISTS (SELECT 1 FROM data_analyses a WHERE a.id = :analysis_id::bigint AND a.user_id = :user_id::bigint)
RETURNING id, analysis_id, filename, file_type, size_bytes, storage_uri, checksum, created_at, updated_at;

-- name: get_by_id :maybe
SELECT id, analysis_id, filename, file_type, size_bytes, storage_uri, checksum, created_at, updated_at
FROM analysis_files
WHERE id = :file_id;

-- name: get_for_user :maybe
-- The file only if its analysis belongs to :user_id.
SELECT f.id, f.analysis_id, f.filename, f.file_type, f.size_bytes, f.storage_uri, f.checksum, f.created_at,
       f.updated_at
FROM analysis_files f
JOIN data_analyses a ON a.id = f.analysis_id
WHERE f.id = :file_id AND a.user_id = :user_id;

-- name: get_many :many
SELECT id, analysis_id, filename, file_type, size_bytes, storage_uri, checksum, created_at, updated_at
FROM analysis_files
WHERE id = ANY(:'ids'::bigint[])
ORDER BY id;

-- name: update :maybe
-- Partial update; :set_checksum true writes :checksum (NULL clears it). With :user_id, only a file of
-- that user's analysis; NULL: any owner.
UPDATE analysis_files
SET filename    = coalesce(:filename::text, filename),
    file_type   = coalesce(:file_type::text, file_type),
    size_bytes  = coalesce(:size_bytes::bigint, size_bytes),
    storage_uri = coalesce(:storage_uri::text, storage_uri),
    checksum    = CASE WHEN :set_checksum::boolean THEN :checksum::text ELSE checksum END
WHERE id = :file_id
  AND (:user_id::bigint IS NULL
       OR EXISTS (SELECT 1 FROM data_analyses a WHERE a.id = analysis_files.analysis_id AND a.user_id = :user_id::bigint))
RETURNING id, analysis_id, filename, file_type, size_bytes, storage_uri, checksum, created_at, updated_at;

-- name: delete :exec
-- With :user_id, only a file of that user's analysis; NULL: any owner.
DELETE FROM analysis_files f
WHERE f.id = :file_id
  AND (:user_id::bigint IS NULL
       OR EXISTS (SELECT 1 FROM data_analyses a WHERE a.id = f.analysis_id AND a.user_id = :user_id::bigint));

-- name: list_for_analysis :many
-- Files of one analysis, optionally of one type (analysis_files_analysis_type_idx); with :user_id,
-- none unless the analysis belongs to that user.
SELECT id, analysis_id, filename, file_type, size_bytes, storage_uri, checksum, created_at, updated_at
FROM analysis_files
WHERE analysis_id = :analysis_id
  AND (:file_type::text IS NULL OR file_type = :file_type::text)
  AND (:user_id::bigint IS NULL
       OR EXISTS (SELECT 1 FROM data_analyses a WHERE a.id = :analysis_id AND a.user_id = :user_id::bigint))
ORDER BY id;

-- name: totals_by_type :many
-- How many files of each type an analysis has, and their total size.
SELECT file_type, count(*) AS file_count, coalesce(sum(size_bytes), 0)::bigint AS total_bytes
FROM analysis_files
WHERE analysis_id = :analysis_id
GROUP BY file_type
ORDER BY file_type;

-- name: find :many
-- Keyset page in id order, optionally by analysis and type (analysis_files_file_type_idx for a type).
SELECT id, analysis_id, filename, file_type, size_bytes, storage_uri, checksum, created_at, updated_at
FROM analysis_files
WHERE (:analysis_id::bigint IS NULL OR analysis_id = :analysis_id::bigint)
  AND (:file_type::text IS NULL OR file_type = :file_type::text)
  AND (:filename_prefix::text IS NULL OR starts_with(filename, :filename_prefix::text))
  AND (:after_id::bigint IS NULL OR id > :after_id::bigint)
ORDER BY id
LIMIT :fetch;
