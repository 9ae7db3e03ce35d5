-- Single logout: a refresh-token family started by a browser sign-in remembers the issuer's browser
-- session it came from, so that ending that session (RP-initiated logout) ends every family it
-- started, whichever client holds it. NULL for password-grant families.
ALTER TABLE refresh_families ADD COLUMN browser_session_id TEXT;
CREATE INDEX refresh_families_browser_session ON refresh_families (browser_session_id);
