-- Records move from a table clustered on (kind, key) to a rowid table with a unique index on it.
-- Clustered, each record's JSON sat in the key's B-tree: an import of 10,000 logins into 100,000
-- dirtied one large page per row, and an import cost three times more at 100,000 users than into
-- an empty database. Now new rows append, and only the small index pages are touched at random.
CREATE TABLE objects_by_rowid (
    id      INTEGER PRIMARY KEY,
    kind    TEXT    NOT NULL,
    key     TEXT    NOT NULL,
    version INTEGER NOT NULL,
    data    TEXT    NOT NULL,
    UNIQUE (kind, key)
);
INSERT INTO objects_by_rowid (kind, key, version, data)
    SELECT kind, key, version, data FROM objects ORDER BY kind, key;
DROP TABLE objects;
ALTER TABLE objects_by_rowid RENAME TO objects;
