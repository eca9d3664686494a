-- Language models' budgets on a key (NULL: the config's [limits] defaults): tokens per minute,
-- tokens per day or month, and spend caps, for the key as a whole and, on a delegate key, for
-- each end user it names.
ALTER TABLE api_keys ADD COLUMN tpm INTEGER;
ALTER TABLE api_keys ADD COLUMN token_quotas TEXT;       -- e.g. "1000000/day,20000000/month"
ALTER TABLE api_keys ADD COLUMN spend_caps TEXT;         -- e.g. "20usd/day,500usd/month"
ALTER TABLE api_keys ADD COLUMN user_tpm INTEGER;
ALTER TABLE api_keys ADD COLUMN user_token_quotas TEXT;
ALTER TABLE api_keys ADD COLUMN user_spend_caps TEXT;

-- Tokens read and written, their cost in micro-dollars, and how many requests' tokens were
-- estimated because the upstream reported none.
ALTER TABLE usage ADD COLUMN tokens_in INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage ADD COLUMN tokens_out INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage ADD COLUMN spend_micros INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage ADD COLUMN estimated INTEGER NOT NULL DEFAULT 0;
