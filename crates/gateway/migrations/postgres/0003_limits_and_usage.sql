-- Per-key limits (NULL or empty: the config's defaults) and usage per key, model and UTC day.
ALTER TABLE api_keys ADD COLUMN rate TEXT;               -- e.g. '50/s'
ALTER TABLE api_keys ADD COLUMN burst BIGINT;
ALTER TABLE api_keys ADD COLUMN concurrency BIGINT;
ALTER TABLE api_keys ADD COLUMN quotas TEXT;             -- requests, e.g. '100000/day,2000000/month'
ALTER TABLE api_keys ADD COLUMN row_quotas TEXT;         -- inference rows, same form

CREATE TABLE usage (
    kid       TEXT NOT NULL,
    model     TEXT NOT NULL,
    day       TEXT NOT NULL,                             -- YYYY-MM-DD, UTC
    requests  BIGINT NOT NULL DEFAULT 0,
    rows      BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (kid, model, day)
);
CREATE INDEX usage_day ON usage (day);
