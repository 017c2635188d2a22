"""The two keel calls the sync makes, through keel's typed API client (``keel_api``, made by
``keel openapi --python``): the watch stream (users only), and udb's ``query_private`` (the hashes
of the users a facility receives) — prologin's RPC, beside the REST API."""

import json

from . import keel_api

KeelError = keel_api.KeelError


class Client:
    def __init__(self, url, token, timeout=60.0, ca_file=None):
        # The timeout must exceed keel's heartbeat interval (10 s): silence longer than it means
        # the connection is gone.
        self.api = keel_api.Client(url, token=token, timeout=timeout, ca_file=ca_file)

    def watch(self, since=None, db_id=None):
        """The watch stream of user records, line by line (parsed JSON). ``since``/``db_id``
        resume after a seq of that database; without them keel starts with a snapshot."""
        return self.api.watch(kinds="user", since=since, db_id=db_id)

    def hashes(self, login=None):
        """``{login: $6$ hash}`` of the users this token's facilities receive (all, or one)."""
        reply = self.api.get_outside("/udb/call/query_private", login=login or None)
        if not isinstance(reply, dict) or reply.get("type") != "result":
            raise KeelError(f"query_private: {json.dumps(reply)[:200]}")
        return {u["login"]: u.get("password_hash", "") for u in reply.get("data", [])}
