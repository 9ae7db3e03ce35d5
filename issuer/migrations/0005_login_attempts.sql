-- Password login attempts, counted per account and client address (an IPv4 address or an IPv6
-- /64), so that nobody else's failures lock an account. Each row is an attempt recorded before
-- its password was checked: a success deletes it, a failure stays until the window passes.
-- (`login_failures` keeps the other attempt limits: sign-in links, registrations.) Portable SQL.
CREATE TABLE login_attempts (
    id TEXT PRIMARY KEY NOT NULL,
    account TEXT NOT NULL,                        -- the normalized email, or the name as given
    address TEXT NOT NULL,                        -- the client address's key; '' when unknown
    attempted_at BIGINT NOT NULL
);
CREATE INDEX login_attempts_account ON login_attempts (account, address, attempted_at);
CREATE INDEX login_attempts_address ON login_attempts (address, attempted_at);
CREATE INDEX login_attempts_time ON login_attempts (attempted_at);
