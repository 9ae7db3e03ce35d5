-- Signing keys and their lifecycle: next -> active -> retiring -> retired, or revoked at once.
-- Portable SQL: it runs unchanged on SQLite and PostgreSQL. Times are Unix seconds.
CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY NOT NULL,                -- RFC 7638 thumbprint of the public key
    state TEXT NOT NULL CHECK (state IN ('next', 'active', 'retiring', 'retired', 'revoked')),
    public_key TEXT NOT NULL,                     -- uncompressed SEC1 point, base64url
    sealed_private_key TEXT,                      -- AES-256-GCM under the KEK; NULL once retired or revoked
    published_at BIGINT NOT NULL,                 -- in the JWKS from this moment
    activate_after BIGINT,                        -- a next key: when it takes over
    activated_at BIGINT,
    retiring_at BIGINT,
    retired_at BIGINT,
    revoked_at BIGINT
);

-- The invariants, enforced by the database itself: at most one active key, at most one next key.
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (state) WHERE state = 'active';
CREATE UNIQUE INDEX signing_keys_one_next ON signing_keys (state) WHERE state = 'next';

-- One row. Every change to the key set starts by bumping `version`, which takes the write lock
-- (SQLite) or the row lock (PostgreSQL) first, so that key changes from several processes are
-- serialized; replicas rebuild their cached JWKS when it moves.
CREATE TABLE key_set_version (
    id INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO key_set_version (id, version) VALUES (1, 0);
