-- Browser sign-in (the authorization code flow with PKCE, OpenID Connect): clients that redirect,
-- the issuer's own browser sessions, one-time sign-in links and authorization codes. Portable SQL,
-- as 0002. Every secret is stored as its SHA-256 (base64url), never as itself.

-- Exact redirect URIs (JSON arrays of strings); a public client has no secret and uses PKCE only.
ALTER TABLE clients ADD COLUMN redirect_uris TEXT NOT NULL DEFAULT '[]';
ALTER TABLE clients ADD COLUMN post_logout_redirect_uris TEXT NOT NULL DEFAULT '[]';
ALTER TABLE clients ADD COLUMN public_client BIGINT NOT NULL DEFAULT 0;

-- A family started by a browser sign-in keeps the scopes granted then: every access token rotated
-- from it carries them (and never the admin audience). NULL: a password-grant family.
ALTER TABLE refresh_families ADD COLUMN scope TEXT;
-- The audiences a password login asked for (RFC 8707 `resource`), as a JSON list; NULL: the
-- configured audiences (never the admin audience unless asked for).
ALTER TABLE refresh_families ADD COLUMN audiences TEXT;

-- The issuer's own browser sessions (single sign-on): the `__Host-` cookie holds the secret.
CREATE TABLE browser_sessions (
    id TEXT PRIMARY KEY NOT NULL,                 -- 128 random bits: the ID tokens' `sid`
    secret_hash TEXT NOT NULL UNIQUE,             -- SHA-256 of the cookie's value
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    auth_time BIGINT NOT NULL,                    -- when the user last proved who they are
    last_seen_at BIGINT NOT NULL,                 -- the idle timeout counts from here
    expires_at BIGINT NOT NULL,                   -- the absolute lifetime
    ended_at BIGINT
);
CREATE INDEX browser_sessions_user ON browser_sessions (user_id);

-- One-time sign-in links ("magic links"), each resuming the authorization request it was asked for.
CREATE TABLE sign_in_links (
    hash TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    request TEXT NOT NULL,                        -- the authorization request, as its query string
    browser_hash TEXT,                            -- SHA-256 of the asking browser's CSRF cookie
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    spent_at BIGINT
);

-- Authorization codes (RFC 6749 §4.1, RFC 7636), spent once by one conditional update.
CREATE TABLE authorization_codes (
    hash TEXT PRIMARY KEY NOT NULL,
    client_id TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    code_challenge TEXT NOT NULL,                 -- S256
    scope TEXT NOT NULL,
    nonce TEXT,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    session_id TEXT NOT NULL,
    auth_time BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    spent_at BIGINT,
    family_id TEXT,                               -- what the exchange issued: revoked if the code
    access_jti TEXT,                              -- is presented again (RFC 6749 §4.1.2)
    access_expires_at BIGINT
);
