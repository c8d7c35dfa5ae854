-- Core entities: users own analyses and tool generations; analyses own files.
--
-- ON DELETE: deleting a user deletes everything the user owns (analyses, their files, tool
-- generations) in the same statement, so no orphan can outlive its owner and "delete my account"
-- is one DELETE. system_log rows are not owned (see 0002) and survive.
--
-- Status columns are text with CHECK constraints rather than enum types: adding a status later is
-- an ALTER of one constraint (NOT VALID + VALIDATE), not an enum rewrite.

-- A migration waiting for a lock queues all traffic behind it: give up after 10 s and retry later.
SET LOCAL lock_timeout = '10s';
SET LOCAL statement_timeout = '10min';

CREATE FUNCTION datalayer_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE TABLE users (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username        text        NOT NULL,
    email           text        NOT NULL,
    hashed_password text        NOT NULL,
    is_active       boolean     NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- The unique constraint's index is the seed's users(username) index.
    CONSTRAINT users_username_key UNIQUE (username),
    CONSTRAINT users_username_format CHECK (username ~ '^[A-Za-z0-9_.-]{3,50}$'),
    CONSTRAINT users_email_format CHECK (length(email) <= 254 AND email ~ '^[^@[:space:]]+@[^@[:space:]]+$'),
    CONSTRAINT users_hashed_password_present CHECK (hashed_password <> '')
);

-- The seed's users(email) index, made case-insensitive and unique: every lookup is by lower(email),
-- so John@Example.com and john@example.com are one account.
CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));

CREATE TRIGGER users_touch_updated_at
    BEFORE UPDATE ON users
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*)
    EXECUTE FUNCTION datalayer_touch_updated_at();

CREATE TABLE data_analyses (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id       bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name          text        NOT NULL,
    analysis_type text        NOT NULL,
    parameters    jsonb       NOT NULL DEFAULT '{}',
    status        text        NOT NULL DEFAULT 'pending',
    result        jsonb,
    error         text,
    started_at    timestamptz,
    completed_at  timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT data_analyses_name_length CHECK (length(name) BETWEEN 1 AND 200),
    CONSTRAINT data_analyses_type_length CHECK (length(analysis_type) BETWEEN 1 AND 100),
    CONSTRAINT data_analyses_status_check CHECK (status IN ('pending', 'running', 'completed', 'failed')),
    -- The timestamps follow the status, so a row can never claim to be running without a start.
    CONSTRAINT data_analyses_lifecycle_check CHECK (
        (status = 'pending' AND started_at IS NULL AND completed_at IS NULL)
        OR (status = 'running' AND started_at IS NOT NULL AND completed_at IS NULL)
        OR (status IN ('completed', 'failed') AND started_at IS NOT NULL AND completed_at IS NOT NULL)
    )
);

-- The seed's data_analyses(user_id) index, widened: "a user's analyses, newest first" and its keyset
-- pages read it in order, and ON DELETE CASCADE from users finds the rows through it.
CREATE INDEX data_analyses_user_created_idx ON data_analyses (user_id, created_at DESC, id DESC);
-- The seed's (status) index, widened the same way: workers and dashboards list one status newest first.
CREATE INDEX data_analyses_status_created_idx ON data_analyses (status, created_at DESC, id DESC);
-- The seed's (created_at) index, with id as the keyset tie-breaker.
CREATE INDEX data_analyses_created_idx ON data_analyses (created_at DESC, id DESC);

CREATE TRIGGER data_analyses_touch_updated_at
    BEFORE UPDATE ON data_analyses
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*)
    EXECUTE FUNCTION datalayer_touch_updated_at();

CREATE TABLE analysis_files (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    analysis_id bigint      NOT NULL REFERENCES data_analyses (id) ON DELETE CASCADE,
    filename    text        NOT NULL,
    file_type   text        NOT NULL,
    size_bytes  bigint      NOT NULL,
    storage_uri text        NOT NULL,
    checksum    text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT analysis_files_filename_length CHECK (length(filename) BETWEEN 1 AND 255),
    CONSTRAINT analysis_files_type_length CHECK (length(file_type) BETWEEN 1 AND 50),
    CONSTRAINT analysis_files_size_check CHECK (size_bytes >= 0),
    CONSTRAINT analysis_files_uri_length CHECK (length(storage_uri) BETWEEN 1 AND 2048),
    -- sha256, lower-case hex
    CONSTRAINT analysis_files_checksum_format CHECK (checksum ~ '^[0-9a-f]{64}$')
);

-- The seed's analysis_files(analysis_id) index, widened: "files of an analysis by type" is one range.
CREATE INDEX analysis_files_analysis_type_idx ON analysis_files (analysis_id, file_type);
CREATE INDEX analysis_files_file_type_idx ON analysis_files (file_type);

CREATE TRIGGER analysis_files_touch_updated_at
    BEFORE UPDATE ON analysis_files
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*)
    EXECUTE FUNCTION datalayer_touch_updated_at();

CREATE TABLE tool_generations (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id      bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    tool_type    text        NOT NULL,
    spec         jsonb       NOT NULL DEFAULT '{}',
    status       text        NOT NULL DEFAULT 'pending',
    output       jsonb,
    error        text,
    started_at   timestamptz,
    completed_at timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tool_generations_type_length CHECK (length(tool_type) BETWEEN 1 AND 100),
    CONSTRAINT tool_generations_status_check CHECK (status IN ('pending', 'running', 'completed', 'failed')),
    CONSTRAINT tool_generations_lifecycle_check CHECK (
        (status = 'pending' AND started_at IS NULL AND completed_at IS NULL)
        OR (status = 'running' AND started_at IS NOT NULL AND completed_at IS NULL)
        OR (status IN ('completed', 'failed') AND started_at IS NOT NULL AND completed_at IS NOT NULL)
    )
);

-- Seed indexes tool_generations(user_id), (status), (tool_type); the first two carry the listing
-- order for the same reasons as data_analyses.
CREATE INDEX tool_generations_user_created_idx ON tool_generations (user_id, created_at DESC, id DESC);
CREATE INDEX tool_generations_status_created_idx ON tool_generations (status, created_at DESC, id DESC);
CREATE INDEX tool_generations_tool_type_idx ON tool_generations (tool_type);

CREATE TRIGGER tool_generations_touch_updated_at
    BEFORE UPDATE ON tool_generations
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*)
    EXECUTE FUNCTION datalayer_touch_updated_at();
