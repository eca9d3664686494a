-- The most tokens a key's requests to a language model may ask for (the model's own cap still
-- applies; the smaller wins). NULL: the model's cap.
ALTER TABLE api_keys ADD COLUMN max_tokens BIGINT;
