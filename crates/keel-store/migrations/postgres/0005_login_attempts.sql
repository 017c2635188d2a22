-- The login throttle counts a try before checking it (one statement, so parallel guesses each
-- count) and needs the time of the try before; it keys rows by a fixed-size digest of the login,
-- never the string a stranger sent (which could be megabytes). Rows of the old scheme are dropped:
-- they are at most an hour of counts.
DELETE FROM login_failures;
ALTER TABLE login_failures ADD COLUMN prev_ms BIGINT NOT NULL DEFAULT 0;
