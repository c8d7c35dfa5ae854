-- depends: 0002.system-log
--
-- The persistent third layer of the cache: survives a Redis flush or restart. version is the
-- generation the value was computed at (a writer that read before an invalidation cannot
-- overwrite a newer entry); expires_at NULL means no expiry.

-- A migration waiting for a lock queues all traffic behind it: give up after 10 s and retry later.
SET LOCAL lock_timeout = '10s';
SET LOCAL statement_timeout = '10min';

CREATE TABLE cache_entries (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key        text        NOT NULL,
    value      jsonb       NOT NULL,
    version    bigint      NOT NULL DEFAULT 0,
    expires_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT cache_entries_key_key UNIQUE (key),
    CONSTRAINT cache_entries_key_length CHECK (length(key) BETWEEN 1 AND 512),
    CONSTRAINT cache_entries_version_check CHECK (version >= 0)
);

-- purge_expired walks expired rows only.
CREATE INDEX cache_entries_expires_at_idx ON cache_entries (expires_at) WHERE expires_at IS NOT NULL;

CREATE TRIGGER cache_entries_touch_updated_at
    BEFORE UPDATE ON cache_entries
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*)
    EXECUTE FUNCTION datalayer_touch_updated_at();
