-- Roles became records (issue 31): netboot, automount, DNS and the rights rules read a machine's
-- role, no longer its name. A database that already has machines is marked here; at its next
-- start keel gives each machine named rfsN, hfsN, gw or after one of its service names the role
-- that name meant, once, in the change log (Db::migrate_roles). A database made from now on is
-- not marked: no name ever gives a role again.
INSERT INTO meta (key, value)
SELECT 'roles_from_names', 'pending'
WHERE EXISTS (SELECT 1 FROM objects WHERE kind = 'machine');
