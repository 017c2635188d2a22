-- Presence heartbeats, shared by every server (not Changes: they would flood the log). A machine's
-- heartbeat may reach any server; each server's expiry reads this table so that no server closes
-- a session another one hears from.
CREATE TABLE heartbeats (
    login TEXT PRIMARY KEY,
    at_ms BIGINT NOT NULL
);
