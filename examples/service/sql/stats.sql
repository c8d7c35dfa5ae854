-- The service's own queries: what /stats serves (cached) for the signed-in user.

-- name: user_stats :one
-- One user's analyses by status, and the files recorded for them.
SELECT
    count(*) AS analyses,
    count(*) FILTER (WHERE a.status = 'pending') AS pending,
    count(*) FILTER (WHERE a.status = 'running') AS running,
    count(*) FILTER (WHERE a.status = 'completed') AS completed,
    count(*) FILTER (WHERE a.status = 'failed') AS failed,
    coalesce(sum(f.files), 0)::bigint AS files,
    coalesce(sum(f.bytes), 0)::bigint AS total_bytes
FROM data_analyses AS a
LEFT JOIN LATERAL (
    SELECT count(*) AS files, sum(size_bytes) AS bytes
    FROM analysis_files
    WHERE analysis_id = a.id
) AS f ON true
WHERE a.user_id = :user_id;
