-- depends: 0005.users-email-key
--
-- Cache invalidations that may not have reached Redis. A writer records its invalidations here in
-- the same transaction as the write, and forgets them once Redis took them; when Redis could not be
-- reached (down, frozen, the process died after COMMIT) they stay, and any process of the service
-- replays them into Redis (and into cache_entries) when it answers again. Until then no process
-- reads Redis: each one looks here at most once per L1 lifetime before it serves a Redis value.
-- kind 'key' names a cache key, 'api' the generation counter of an API endpoint. table_done: the
-- cache_entries part was applied (only the Redis part is left). Rows live for milliseconds unless
-- Redis is unreachable, so the table stays tiny and needs no index beyond its key.

-- A migration waiting for a lock queues all traffic behind it: give up after 10 s and retry later.
SET LOCAL lock_timeout = '10s';
SET LOCAL statement_timeout = '10min';

CREATE TABLE cache_invalidations (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind       text        NOT NULL,
    key        text        NOT NULL,
    table_done boolean     NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT cache_invalidations_kind_check CHECK (kind IN ('key', 'api')),
    CONSTRAINT cache_invalidations_key_length CHECK (length(key) BETWEEN 1 AND 512)
);
