"""The two keel calls the sync makes, over the standard library's HTTP client: the watch stream
(users only) and udb's ``query_private`` (the hashes of the users a facility receives)."""

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request


class KeelError(Exception):
    """keel answered with an error, or could not be reached."""


class Client:
    def __init__(self, url, token, timeout=60.0, ca_file=None):
        # The timeout must exceed keel's heartbeat interval (10 s): silence longer than it means
        # the connection is gone.
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        # Over HTTPS, keel's site CA (DATA_DIR/tls/ca.pem) and nothing else, when given.
        self.context = ssl.create_default_context(cafile=ca_file) if ca_file else None

    def _open(self, path, params):
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v not in (None, "")})
        req = urllib.request.Request(f"{self.url}{path}?{query}" if query else f"{self.url}{path}")
        req.add_header("Authorization", f"Bearer {self.token}")
        try:
            return urllib.request.urlopen(req, timeout=self.timeout, context=self.context)
        except urllib.error.HTTPError as e:
            body = e.read(4096).decode("utf-8", "replace")
            raise KeelError(f"{path}: HTTP {e.code}: {body}") from e
        except OSError as e:
            raise KeelError(f"{path}: {e}") from e

    def watch(self, since=None, db_id=None):
        """The watch stream of user records, line by line (parsed JSON). ``since``/``db_id``
        resume after a seq of that database; without them keel starts with a snapshot."""
        with self._open("/api/v1/watch", {"kinds": "user", "since": since, "db_id": db_id}) as resp:
            for raw in resp:
                if raw.strip():
                    yield json.loads(raw)

    def hashes(self, login=None):
        """``{login: $6$ hash}`` of the users this token's facilities receive (all, or one)."""
        params = {"login": login} if login else {}
        with self._open("/udb/call/query_private", params) as resp:
            reply = json.load(resp)
        if reply.get("type") != "result":
            raise KeelError(f"query_private: {reply}")
        return {u["login"]: u.get("password_hash", "") for u in reply.get("data", [])}
