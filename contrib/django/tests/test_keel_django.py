"""keel_django's own tests, against real Django (run: `python manage.py test` in this directory)."""

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import check_password, identify_hasher, make_password
from django.test import Client, SimpleTestCase, TestCase

from keel_django import sha512crypt
from keel_django.models import KeelUser, SyncState
from keel_django.sync import Sync

# Drepper's specification's test vectors for SHA-512-crypt.
VECTORS = [
    ("Hello world!", "saltstring", None,
     "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"),
    ("Hello world!", "saltstringsaltstring", 10000,
     "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v."),
]


class Sha512Crypt(SimpleTestCase):
    def test_the_specifications_vectors(self):
        for password, salt, rounds, want in VECTORS:
            self.assertEqual(sha512crypt.crypt(password, salt, rounds), want)
            self.assertTrue(sha512crypt.verify(password, want))
            self.assertFalse(sha512crypt.verify(password + "!", want))

    def test_what_keel_would_refuse_is_refused(self):
        good = VECTORS[0][3]
        for bad in [
            "", "$5$saltstring$abc", good[:-1], good + "x", good.replace("$6$", "$6$rounds=999999$"),
            good.replace("$6$", "$6$rounds=0100$"), "$6$salt:x$" + "a" * 86,
        ]:
            with self.assertRaises(sha512crypt.BadHash, msg=bad):
                sha512crypt.parse(bad)


class Hasher(SimpleTestCase):
    def test_a_keel_hash_checks_a_password(self):
        encoded = "keel_sha512_crypt$" + VECTORS[0][3]
        self.assertEqual(identify_hasher(encoded).algorithm, "keel_sha512_crypt")
        self.assertTrue(check_password("Hello world!", encoded))
        self.assertFalse(check_password("hello world!", encoded))
        self.assertFalse(check_password("Hello world!", "keel_sha512_crypt$$6$garbage"))

    def test_django_can_make_one_too(self):
        encoded = make_password("pw", hasher="keel_sha512_crypt")
        self.assertTrue(encoded.startswith("keel_sha512_crypt$$6$"), encoded)
        self.assertTrue(check_password("pw", encoded))


class FakeKeel:
    """The two calls the sync makes, answered from memory."""

    def __init__(self, lines, hashes):
        self.lines, self._hashes, self.hash_calls = lines, hashes, 0

    def watch(self, since=None, db_id=None):
        self.since = since
        yield from self.lines

    def hashes(self, login=None):
        self.hash_calls += 1
        return {k: v for k, v in self._hashes.items() if login in (None, k)}


def user(login, group="user", has_password=True, **extra):
    return {"login": login, "firstname": login.title(), "lastname": "X", "group": group, "uid": 10001,
            "has_password": has_password, **extra}


def put(seq, data):
    return {"seq": seq, "kind": "user", "op": "put", "data": data}


class SyncTests(TestCase):
    def test_a_snapshot_then_changes_then_a_snapshot_without_someone(self):
        User = get_user_model()
        User.objects.create_user("zoe", password="local")  # a local account of the same name
        hashes = {"alice": VECTORS[0][3], "bob": VECTORS[1][3]}
        keel = FakeKeel([
            {"type": "snapshot_begin", "seq": 5, "db_id": "db1"},
            put(5, user("alice", hfs=1)),
            put(5, user("bob", "root")),
            put(5, user("zoe")),
            put(5, user("carol", has_password=False)),
            {"type": "snapshot_end", "seq": 5},
            put(7, user("alice", firstname="Alicia", hfs=1)),
            {"seq": 8, "kind": "user", "op": "delete", "data": user("carol")},
            {"type": "some_newer_line", "seq": 8},
            {"type": "heartbeat", "seq": 9},
        ], hashes)
        Sync(keel).run()
        alice, bob, carol = (User.objects.get(username=n) for n in ("alice", "bob", "carol"))
        self.assertEqual(alice.first_name, "Alicia")
        self.assertTrue(alice.check_password("Hello world!"))
        self.assertEqual(KeelUser.objects.get(login="alice").hfs, 1)
        self.assertTrue(bob.is_staff and bob.is_superuser and not alice.is_staff)
        self.assertFalse(carol.has_usable_password())
        self.assertFalse(carol.is_active, "deleted in keel: deactivated, kept")
        self.assertTrue(User.objects.get(username="zoe").check_password("local"), "not keel's: left alone")
        self.assertFalse(KeelUser.objects.filter(login="zoe").exists())
        self.assertEqual((SyncState.load().seq, SyncState.load().db_id), (9, "db1"))
        self.assertEqual(keel.hash_calls, 2, "one call for the whole snapshot, one for alice's change")
        # A later snapshot (keel restored, say) without bob: bob is deactivated.
        keel = FakeKeel([{"type": "snapshot_begin", "seq": 3, "db_id": "db2"}, put(3, user("alice")),
                         {"type": "snapshot_end", "seq": 3}], hashes)
        Sync(keel).run()
        self.assertEqual(keel.since, 9, "resumed after the last seq applied")
        self.assertFalse(User.objects.get(username="bob").is_active)
        self.assertTrue(User.objects.get(username="alice").is_active)
        self.assertEqual(SyncState.load().db_id, "db2")

    def test_an_error_line_ends_the_run_with_the_state_where_it_was(self):
        keel = FakeKeel([put(4, user("dave", has_password=False)), {"type": "error", "reason": "slow", "seq": 4},
                         put(5, user("eve", has_password=False))], {})
        Sync(keel).run()
        self.assertEqual(SyncState.load().seq, 4)
        self.assertFalse(get_user_model().objects.filter(username="eve").exists())


class SsoTests(TestCase):
    def setUp(self):
        keel = FakeKeel([put(2, user("alice")), put(3, user("gone", has_password=False)),
                         {"seq": 4, "kind": "user", "op": "delete", "data": user("gone")}],
                        {"alice": VECTORS[0][3]})
        Sync(keel).run()
        get_user_model().objects.create_user("local", password="local-pw")

    def test_the_sso_header_logs_in_keels_users_only(self):
        r = Client().get("/whoami/", headers={"X-SSO-User": "alice"})
        self.assertEqual((r.status_code, r.content), (200, b"alice"))
        # No header: not logged in (the same request with it is, above).
        self.assertEqual(Client().get("/whoami/").status_code, 302)
        for nobody in ["nobody", "gone", ""]:
            r = Client().get("/whoami/", headers={"X-SSO-User": nobody})
            self.assertEqual(r.status_code, 302, nobody)

    def test_a_form_login_checks_keels_hash_and_survives_without_the_header(self):
        c = Client()
        self.assertEqual(c.post("/login/", {"username": "alice", "password": "Hello world!"}).status_code, 200)
        self.assertEqual(c.get("/whoami/").content, b"alice")
        self.assertEqual(Client().post("/login/", {"username": "alice", "password": "nope"}).status_code, 403)
        # Local accounts keep working beside keel's.
        self.assertEqual(Client().post("/login/", {"username": "local", "password": "local-pw"}).status_code, 200)
