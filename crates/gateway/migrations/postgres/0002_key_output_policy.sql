-- Per-key output policy (NULL: the model's default) and whether it may be wider than that.
ALTER TABLE api_keys ADD COLUMN output TEXT;
ALTER TABLE api_keys ADD COLUMN widen_output BOOLEAN NOT NULL DEFAULT FALSE;
