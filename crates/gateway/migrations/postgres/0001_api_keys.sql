-- API keys. The secret is never stored: `hash` is HMAC-SHA-256 of the whole key under the
-- server's pepper. `kid` is the public part of the key and the lookup id.
-- (The same schema as migrations/sqlite, in PostgreSQL's types.)
CREATE TABLE api_keys (
    kid          TEXT PRIMARY KEY NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('sk', 'ak')),
    name         TEXT NOT NULL,
    owner        TEXT,
    hash         BYTEA NOT NULL CHECK (length(hash) = 32),
    models       TEXT NOT NULL,          -- JSON array of model names, or "*"
    scopes       TEXT NOT NULL,          -- JSON array: "infer", "metadata"
    created_at   BIGINT NOT NULL,        -- Unix seconds
    expires_at   BIGINT,                 -- NULL: never
    revoked_at   BIGINT,                 -- NULL: live
    replaced_by  TEXT REFERENCES api_keys (kid)
);

CREATE INDEX api_keys_name ON api_keys (name);
