-- Accounts (users and service clients), refresh-token families, revoked access tokens and failed
-- logins. Portable SQL: it runs unchanged on SQLite and PostgreSQL. Times are Unix seconds.

CREATE TABLE users (
    id TEXT PRIMARY KEY NOT NULL,                 -- 128 random bits, base64url: the tokens' `sub`
    email TEXT NOT NULL UNIQUE,                   -- normalized (trimmed, lower case)
    password_hash TEXT NOT NULL,                  -- argon2id PHC string
    roles TEXT NOT NULL,                          -- JSON array of strings, sorted, no duplicates
    disabled_at BIGINT,                           -- NULL while the user may log in
    created_at BIGINT NOT NULL,
    last_login_at BIGINT
);

CREATE TABLE clients (
    client_id TEXT PRIMARY KEY NOT NULL,
    secret_hash TEXT NOT NULL,                    -- SHA-256 of the 256-bit random secret, base64url
    audiences TEXT NOT NULL,                      -- JSON array: the audiences its tokens carry
    roles TEXT NOT NULL,                          -- JSON array: the roles its tokens carry
    created_at BIGINT NOT NULL
);

-- One family per login: every refresh token rotated from it belongs to it.
CREATE TABLE refresh_families (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id TEXT NOT NULL,                      -- the client it was issued to ("public" for none)
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,                   -- the absolute lifetime: no rotation goes past it
    revoked_at BIGINT
);
CREATE INDEX refresh_families_user ON refresh_families (user_id);

CREATE TABLE refresh_tokens (
    hash TEXT PRIMARY KEY NOT NULL,               -- SHA-256 of the token, base64url; never the token
    family_id TEXT NOT NULL REFERENCES refresh_families (id) ON DELETE CASCADE,
    access_jti TEXT NOT NULL,                     -- the access token issued with it (for logout)
    issued_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,                   -- the idle timeout
    spent_at BIGINT                               -- set once, by the rotation that uses it
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_access_jti ON refresh_tokens (access_jti);

-- Access tokens revoked before their expiry; purged once expired.
CREATE TABLE revoked_access_tokens (
    jti TEXT PRIMARY KEY NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT NOT NULL
);
CREATE INDEX revoked_access_tokens_expiry ON revoked_access_tokens (expires_at);

-- Failed password logins, one row each, keyed by "account:<email>" or "ip:<address>".
CREATE TABLE login_failures (
    id TEXT PRIMARY KEY NOT NULL,
    subject TEXT NOT NULL,
    failed_at BIGINT NOT NULL
);
CREATE INDEX login_failures_subject ON login_failures (subject, failed_at);
