-- A delegate key's limits per end user it names (the key's own columns then apply to the key as
-- a whole), and the cap on distinct end users it may name per window.
ALTER TABLE api_keys ADD COLUMN user_rate TEXT;          -- e.g. "5/s"
ALTER TABLE api_keys ADD COLUMN user_burst INTEGER;
ALTER TABLE api_keys ADD COLUMN user_concurrency INTEGER;
ALTER TABLE api_keys ADD COLUMN user_quotas TEXT;        -- e.g. "100/day"
ALTER TABLE api_keys ADD COLUMN max_users TEXT;          -- e.g. "10000/h"

-- Every change to a key, so that a running server drops it from its cache within a second, even
-- when the change was made by another process (`portcullis keys revoke`) and no Redis is there
-- to announce it. A trigger records changes made by any writer.
CREATE TABLE key_changes (
    seq  INTEGER PRIMARY KEY AUTOINCREMENT,
    kid  TEXT NOT NULL,
    at   INTEGER NOT NULL                                -- Unix seconds
);
CREATE TRIGGER api_keys_changed AFTER UPDATE ON api_keys
BEGIN
    INSERT INTO key_changes (kid, at) VALUES (NEW.kid, CAST(strftime('%s', 'now') AS INTEGER));
END;
-- New keys too: a server knows which key ids exist without asking the store about unknown ones.
CREATE TRIGGER api_keys_created AFTER INSERT ON api_keys
BEGIN
    INSERT INTO key_changes (kid, at) VALUES (NEW.kid, CAST(strftime('%s', 'now') AS INTEGER));
END;
