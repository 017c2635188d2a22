-- Sessions of people logged in to the web pages: not site data (never in the change log), kept in
-- the database so that a restart does not log anyone out and every server on a shared database
-- knows them. `id` is the sha256 of the secret in the person's cookie, never the secret itself.
CREATE TABLE web_sessions (
    id TEXT PRIMARY KEY,
    login TEXT NOT NULL,
    role TEXT NOT NULL,
    last_ms INTEGER NOT NULL
);
CREATE INDEX web_sessions_last ON web_sessions (last_ms);
