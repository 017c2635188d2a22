"""Applies keel's watch stream to Django's users.

Each keel user becomes (or updates) the Django user of the same name: first and last name,
``is_staff``/``is_superuser`` by keel group, and the password as keel's hash (or unusable when
there is none). A user deleted in keel is deactivated, not deleted: the app's own rows (scores,
submissions) keep their owner. A snapshot ends by deactivating every keel-made user it did not
contain. Each change is applied in one transaction with the seq it brings the sync to, so a stop
anywhere resumes exactly after the last change applied.
"""

import logging

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from .models import KeelUser, SyncState

log = logging.getLogger("keel_django")
PREFIX = "keel_sha512_crypt$"


def _groups(name, default):
    return set(getattr(settings, name, default))


class Sync:
    def __init__(self, client):
        self.client = client
        self.in_snapshot = None  # logins seen in the snapshot being read
        self.snapshot_hashes = None  # fetched once per snapshot, on the first need

    def _hash(self, login, data):
        if not data.get("has_password"):
            return ""
        if self.in_snapshot is not None:
            if self.snapshot_hashes is None:
                self.snapshot_hashes = self.client.hashes()
            return self.snapshot_hashes.get(login, "")
        return self.client.hashes(login).get(login, "")

    def put(self, data):
        login = data["login"]
        User = get_user_model()
        link = KeelUser.objects.select_related("user").filter(login=login).first()
        if link is None:
            if User.objects.filter(**{User.USERNAME_FIELD: login}).exists():
                log.warning("%s exists in Django and is not keel's: left alone", login)
                return
            user = User(**{User.USERNAME_FIELD: login})
            link = KeelUser(login=login)
        else:
            user = link.user
        group = data.get("group", "user")
        user.first_name = data.get("firstname", "")[:150]
        user.last_name = data.get("lastname", "")[:150]
        user.is_active = True
        user.is_staff = group in _groups("KEEL_STAFF_GROUPS", ("orga", "root"))
        user.is_superuser = group in _groups("KEEL_SUPERUSER_GROUPS", ("root",))
        hash_ = self._hash(login, data)
        if hash_:
            user.password = PREFIX + hash_
        else:
            user.set_unusable_password()
        user.save()
        link.user, link.uid, link.group, link.hfs = user, data.get("uid", 0), group, data.get("hfs")
        link.save()

    def delete(self, data):
        link = KeelUser.objects.select_related("user").filter(login=data.get("login")).first()
        if link and link.user.is_active:
            link.user.is_active = False
            link.user.save(update_fields=["is_active"])

    def line(self, line, state):
        """Applies one watch line; returns False when the stream says to reconnect."""
        kind = line.get("type")
        if kind == "snapshot_begin":
            self.in_snapshot, self.snapshot_hashes = set(), None
            state.db_id = line["db_id"]
            return True
        if kind == "snapshot_end":
            with transaction.atomic():
                gone = KeelUser.objects.exclude(login__in=self.in_snapshot).select_related("user")
                for link in gone:
                    self.delete({"login": link.login})
                state.seq = line["seq"]
                state.save()
            self.in_snapshot, self.snapshot_hashes = None, None
            return True
        if kind == "heartbeat":
            if self.in_snapshot is None and line["seq"] > state.seq:
                state.seq = line["seq"]
                state.save()
            return True
        if kind == "error":
            log.info("keel ended the stream (%s); resuming after %s", line.get("reason"), line.get("seq"))
            return False
        if kind is not None or line.get("kind") != "user":
            return True  # a line type newer than this sync, or another kind
        data = line.get("data") or {}
        with transaction.atomic():
            if line.get("op") == "put":
                self.put(data)
                if self.in_snapshot is not None:
                    self.in_snapshot.add(data["login"])
            else:
                self.delete(data)
            if self.in_snapshot is None:
                state.seq = line["seq"]
                state.save()
        return True

    def run(self, once=False):
        """Reads the stream until it ends. With ``once``: returns when caught up (after the
        snapshot, or at the first heartbeat of a resumed stream)."""
        state = SyncState.load()
        since = state.seq if state.seq else None
        for line in self.client.watch(since=since, db_id=state.db_id or None):
            if not self.line(line, state):
                return
            if once and line.get("type") in ("snapshot_end", "heartbeat"):
                return
