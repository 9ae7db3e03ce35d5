-- Every way a session ends lists the access tokens it issued that are still unexpired in
-- `revoked_access_tokens`. Portable SQL, as 0002.

-- The `exp` of the access token issued with each refresh token. NULL for tokens written before
-- this migration: their access token is taken to live `issued_at` + the access token lifetime.
ALTER TABLE refresh_tokens ADD COLUMN access_expires_at BIGINT;

-- Access tokens of the client credentials grant, which belong to no refresh-token family: kept
-- until they expire, so that removing their client lists them as revoked.
CREATE TABLE service_tokens (
    jti TEXT PRIMARY KEY NOT NULL,
    client_id TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX service_tokens_client ON service_tokens (client_id, expires_at);
CREATE INDEX service_tokens_expiry ON service_tokens (expires_at);
