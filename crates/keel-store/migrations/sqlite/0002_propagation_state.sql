-- Propagation's working state: task states, serials, per-destination results. Kept outside the
-- change log (it changes on every send and is nobody's source of truth but the engine's), and
-- written so that a restart resumes where the engine stopped.
CREATE TABLE prop_state (
    key  TEXT PRIMARY KEY NOT NULL,
    data TEXT NOT NULL
) STRICT;
