-- Wrong passwords per login since its last right one (the login throttle of the password pages),
-- kept in the database so that a restart does not reset it and every server on a shared database
-- counts the same tries. Rows older than an hour are forgotten as new failures come.
CREATE TABLE login_failures (
    login TEXT PRIMARY KEY,
    failures INTEGER NOT NULL,
    last_ms INTEGER NOT NULL
);
CREATE INDEX login_failures_last ON login_failures (last_ms);
