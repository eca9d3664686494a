-- Delegate keys: app backends that name the end user they act for (Portcullis-On-Behalf-Of).
ALTER TABLE api_keys ADD COLUMN delegate INTEGER NOT NULL DEFAULT 0;

-- The token broker's signing keys. The private key is sealed (AES-256-GCM under the signing
-- secret, which is not in the database); the public JWK is published until every token the key
-- signed has expired.
CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY NOT NULL,
    alg         TEXT NOT NULL CHECK (alg IN ('EdDSA', 'ES256')),
    public_jwk  TEXT NOT NULL,
    sealed      BLOB NOT NULL,
    created_at  INTEGER NOT NULL,            -- Unix seconds
    retired_at  INTEGER                      -- NULL: the key that signs now
);
