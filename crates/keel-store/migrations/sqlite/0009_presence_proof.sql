-- Presence proofs (issue 31): a session a machine opens carries proof of the person's password.
-- A database that already holds records was made by a keel without proofs: it is marked here,
-- and keeps opening sessions on the machine secret alone until keel.toml sets
-- `[presence] proof`. A database made from now on is not marked: proofs are required.
INSERT INTO meta (key, value)
SELECT 'presence_proof_off', 'made before presence proofs'
WHERE EXISTS (SELECT 1 FROM objects);
