-- keel's SQLite schema, version 1.
-- Records are stored generically (kind, key, JSON); their unique values live in `uniques`, so the
-- database itself refuses a duplicate even if a caller's check raced. Tables keyed by their primary
-- key are WITHOUT ROWID: one B-tree each instead of a table plus an index, so a commit writes
-- fewer pages (and fsyncs less).

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- The one row whose update hands out sequence numbers inside the writing transaction
-- (ARCHITECTURE.md invariant 8: commit order equals seq order).
CREATE TABLE counter (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL
);
INSERT INTO counter (id, seq) VALUES (1, 0);

CREATE TABLE objects (
    kind    TEXT    NOT NULL,
    key     TEXT    NOT NULL,
    version INTEGER NOT NULL,
    data    TEXT    NOT NULL,
    PRIMARY KEY (kind, key)
) WITHOUT ROWID;

CREATE TABLE uniques (
    space TEXT NOT NULL,
    value TEXT NOT NULL,
    kind  TEXT NOT NULL,
    key   TEXT NOT NULL,
    PRIMARY KEY (space, value)
) WITHOUT ROWID;
CREATE INDEX uniques_owner ON uniques (kind, key);

CREATE TABLE changes (
    seq       INTEGER PRIMARY KEY,
    time      TEXT NOT NULL,
    principal TEXT NOT NULL,
    kind      TEXT NOT NULL,
    op        TEXT NOT NULL,
    key       TEXT NOT NULL,
    before    TEXT,
    after     TEXT
);

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
