-- keel's PostgreSQL schema, version 1: the same tables as SQLite's (records stored generically as
-- (kind, key, JSON), their unique values in `uniques`, the Change log), plus what several servers
-- on one database need.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- The one row whose update hands out sequence numbers inside the writing transaction. Updating it
-- takes its row lock, so writers on any number of servers commit one after the other, in seq
-- order (ARCHITECTURE.md invariant 8): a watcher never sees seq N+1 committed before N.
CREATE TABLE counter (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL
);
INSERT INTO counter (id, seq) VALUES (1, 0);

CREATE TABLE objects (
    kind    TEXT   NOT NULL,
    key     TEXT   NOT NULL,
    version BIGINT NOT NULL,
    data    TEXT   NOT NULL,
    PRIMARY KEY (kind, key)
);

CREATE TABLE uniques (
    space TEXT NOT NULL,
    value TEXT NOT NULL,
    kind  TEXT NOT NULL,
    key   TEXT NOT NULL,
    PRIMARY KEY (space, value)
);
CREATE INDEX uniques_owner ON uniques (kind, key);

CREATE TABLE changes (
    seq       BIGINT PRIMARY KEY,
    time      TEXT NOT NULL,
    principal TEXT NOT NULL,
    kind      TEXT NOT NULL,
    op        TEXT NOT NULL,
    key       TEXT NOT NULL,
    before    TEXT,
    after     TEXT
);
CREATE INDEX changes_kind_seq ON changes (kind, seq);

CREATE TABLE tokens (
    id         TEXT PRIMARY KEY,
    hash       TEXT NOT NULL,
    name       TEXT NOT NULL,
    role       TEXT NOT NULL,
    facilities TEXT NOT NULL DEFAULT '[]',
    host       TEXT,
    created    TEXT NOT NULL,
    expires    TEXT,
    revoked    TEXT
);

CREATE TABLE prop_state (
    key  TEXT PRIMARY KEY,
    data TEXT NOT NULL
);
