-- Notes: a title, a body and tags.
CREATE TABLE notes (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    title      text        NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    body       text        NOT NULL DEFAULT '',
    tags       text[]      NOT NULL DEFAULT '{}' CHECK (array_position(tags, NULL) IS NULL),
    created_at timestamptz NOT NULL DEFAULT now()
);
