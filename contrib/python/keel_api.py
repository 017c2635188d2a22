"""keel's REST API for Python, typed.

Made by ``keel openapi --python`` from the OpenAPI description of keel 0.1.0 (what
``GET /api/v1/openapi.json`` answers): do not edit, make it again. Standard library only.

    api = Client("https://keel.prolo", token=open("/etc/keel/app.token").read().strip(),
                 ca_file="/etc/keel/ca.pem")
    for m in api.list_machines(room="alt"):
        print(m["hostname"], m["ip"])

Every method raises ``KeelError`` when keel answers an error (its ``status``, and its ``body``:
an ``ErrorBody``) or cannot be reached. List methods take filters as keyword arguments
(``room="alt"``, ``hostname__startswith="pc"``; docs/api.md).
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Dict, Iterator, List, Literal, Optional, TypedDict

BootMode = Literal["nfsroot", "local", "install"]
"""What `GET /boot/{mac}` gives a machine."""

Channel = Literal["ssh", "local"]
"""How a destination is reached."""

Group = Literal["user", "orga", "root"]
"""A user's group: contestants, organisers, or root admins."""

Hostname = str
"""A hostname: lower-case labels of letters, digits and `-` (RFC 1123), at most 253 characters."""

Login = str
"""A login: `^[a-z_][a-z0-9_]{0,30}$`."""

Mac = str
"""A MAC address, answered as `aa:bb:cc:dd:ee:ff` (given as `aa:bb:…`, `AA-BB-…` or
`aabb.ccdd.eeff`).
"""

MachineType = Literal["user", "orga", "cluster", "service"]
"""What a machine is for; each type has its IP pool."""

ManagerName = str
"""A facility's manager: a token's name, or `user:LOGIN` for a user."""


class Destination(TypedDict, total=False):
    """Where a facility's service goes."""
    blocked: bool
    channel: Channel
    claimed_by: Optional[str]
    """The facility manager who added it (set by the store, never taken from a request); none when
    an admin did. The engine resolves such a destination at every send, as ssh will, and refuses
    to send where it leads to keel's own host or a machine outside the facility. (Not always
    present.)
    """
    destination: str
    """`host`, `user@host`, `host:port`, `user@[v6]:port`; `local` for a local destination."""
    facility: str
    service: str
    version: int


class ErrorBody(TypedDict, total=False):
    """The body of every error answer of the REST API (its OpenAPI description's `ErrorBody`)."""
    error: str
    """What went wrong, in words."""
    errors: Optional[List[ValidationError]]
    """Every invalid field (400), each with its line in an import. (Not always present.)"""
    field: Optional[str]
    """The first invalid field (400). (Not always present.)"""
    reason: Optional[str]
    """Why a session is refused (423): `unknown_machine`, `unknown_user`, `not_a_user_machine`,
    `logged_in_elsewhere`, `machine_in_use`, `recovering`, `proof_needed`. (Not always present.)
    """


class Facility(TypedDict, total=False):
    """A named set of hosts with its managers, the users it receives and the services it runs."""
    blocked: List[str]
    """Services blocked on this facility: never sent (results show DENIED). (Not always present.)"""
    groups: List[Group]
    """Users of these groups are received… (Not always present.)"""
    hfs: Optional[int]
    """A home file server's facility: of the users above, it receives only those whose home is on
    `hfsN` (their `hfs`), and its `homes` service creates them under the export root. (Not
    always present.)
    """
    managers: List[ManagerName]
    """Who manages this facility: API tokens and user logins, each named as such. (Not always
    present.)
    """
    members: List[Login]
    """…and these users, whatever their group. (Not always present.)"""
    name: str
    services: List[str]
    """Services enabled on this facility. (Not always present.)"""
    version: int


class Host(TypedDict, total=False):
    """A propagation target: a name (FQDN), the facility it belongs to, and optionally the Machine
    it is (then the machine's names are the host's too).
    """
    aliases: List[str]
    facility: str
    machine: Optional[str]
    name: str
    version: int


class Machine(TypedDict, total=False):
    """A machine of the site. `id` is stable across renames; `version` is the seq of its last
    change.
    """
    aliases: List[Hostname]
    boot: Optional[BootMode]
    faulty_reason: str
    hfs: int
    hostname: Hostname
    id: int
    ip: str
    is_faulty: bool
    mac: Mac
    mtype: MachineType
    rfs: int
    room: str
    version: int


class PublicUser(TypedDict, total=False):
    """A user as the REST API answers it (`GET /api/v1/users/{login}`): every field but the
    password's hash, and whether there is one. The watch stream shows users the same way
    ([`public_record`]).
    """
    firstname: str
    group: Group
    has_password: bool
    """The user has a password (its hash is never shown)."""
    hfs: Optional[int]
    """The home file server (`hfsN`) the user's home lives on; null until assigned. (Not always
    present.)
    """
    lastname: str
    login: Login
    password_changed: bool
    """True once the user chose their own password."""
    shell: str
    ssh_keys: List[str]
    uid: int
    version: int


class Session(TypedDict, total=False):
    """A user logged in on a machine. Keyed by login (one session per user); the machine's hostname
    is a unique value too (one user per machine).
    """
    hostname: Hostname
    login: Login
    proven: bool
    """Opened with proof from the person (their password, checked by keel; or an admin's token),
    not with the machines' shared secret alone. See [`ProofPolicy`]. (Not always present.)
    """
    since: str
    """RFC 3339, UTC: when the session was opened (or rebuilt by a heartbeat)."""
    version: int


class Switch(TypedDict, total=False):
    """A network switch: lets a booting machine inherit its room and servers (from LLDP)."""
    chassis: str
    hfs: int
    name: Hostname
    rfs: int
    room: str
    version: int


class ValidationError(TypedDict, total=False):
    """A value that failed validation: which field, why, and (for imports) which line."""
    field: str
    line: Optional[int]
    message: str



class KeelError(Exception):
    """keel answered an error (``status``, ``body``: an ErrorBody when keel sent one), or could
    not be reached (``status`` None)."""

    def __init__(self, message: str, status: Optional[int] = None, body: Optional[ErrorBody] = None):
        super().__init__(message)
        self.status = status
        self.body = body


def _part(value: Any) -> str:
    return urllib.parse.quote(str(value), safe="")


class Client:
    """keel's REST API at ``url`` (keel's address, without ``/api/v1``)."""

    def __init__(self, url: str, token: Optional[str] = None, timeout: float = 60.0,
                 ca_file: Optional[str] = None):
        # A watch stream's timeout must exceed keel's heartbeat interval (10 s): silence longer
        # than it means the connection is gone.
        self.base = url.rstrip("/")
        self.url = self.base + "/api/v1"
        self.token = token
        self.timeout = timeout
        # Over HTTPS, keel's site CA (DATA_DIR/tls/ca.pem) and nothing else, when given.
        self.context = ssl.create_default_context(cafile=ca_file) if ca_file else None

    def get_outside(self, path: str, **query: Any) -> Any:
        """GET one of keel's JSON routes outside the REST API (prologin's RPC, e.g.
        ``/udb/call/query_private``): ``path`` is from keel's root."""
        return self._json("GET", path, query, root=self.base)

    def _send(self, method: str, path: str, query: Dict[str, Any], body: Any = None,
              if_match: Optional[str] = None, root: Optional[str] = None):
        pairs = {k: v for k, v in query.items() if v is not None}
        url = (root or self.url) + path + ("?" + urllib.parse.urlencode(pairs) if pairs else "")
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        if if_match is not None:
            req.add_header("If-Match", if_match)
        try:
            return urllib.request.urlopen(req, timeout=self.timeout, context=self.context)
        except urllib.error.HTTPError as e:
            text = e.read(65536).decode("utf-8", "replace")
            try:
                error = json.loads(text)
            except ValueError:
                error = None
            said = error.get("error") if isinstance(error, dict) else text
            raise KeelError(f"{method} {path}: HTTP {e.code}: {said}", e.code, error) from e
        except OSError as e:
            raise KeelError(f"{method} {path}: {e}") from e

    def _json(self, method: str, path: str, query: Dict[str, Any], body: Any = None,
              if_match: Optional[str] = None, root: Optional[str] = None) -> Any:
        with self._send(method, path, query, body, if_match, root) as resp:
            raw = resp.read()
        return json.loads(raw) if raw.strip() else None

    def _bytes(self, method: str, path: str, query: Dict[str, Any]) -> bytes:
        with self._send(method, path, query) as resp:
            return resp.read()

    def _lines(self, method: str, path: str, query: Dict[str, Any]) -> Iterator[Dict[str, Any]]:
        with self._send(method, path, query) as resp:
            for raw in resp:
                if raw.strip():
                    yield json.loads(raw)

    def block_propagation(
        self,
        body: Optional[Dict[str, Any]] = None,
        **query: Any,
    ) -> Dict[str, Any]:
        """POST /propagation/block"""
        return self._json("POST", "/propagation/block", query, body, None)

    def change_password(
        self,
        body: Optional[Dict[str, Any]] = None,
        **query: Any,
    ) -> Dict[str, Any]:
        """POST /passwd: `POST /api/v1/passwd {"login","old_password","new_password_hash"}`: a user
        changes their own password. The old one is checked against its hash (never stored nor
        logged); the new one arrives hashed. No token: knowing the old password is the
        authentication.
        """
        return self._json("POST", "/passwd", query, body, None)

    def close_session(
        self,
        login: str,
        if_match: Optional[str] = None,
        **query: Any,
    ) -> Dict[str, Any]:
        """DELETE /sessions/{login}: `DELETE /api/v1/sessions/{login}`: 204 (also when there was no
        session: logging out twice is not an error).
        """
        return self._json("DELETE", f"/sessions/{_part(login)}", query, None, if_match)

    def close_session_of_heartbeat(
        self,
        if_match: Optional[str] = None,
        **query: Any,
    ) -> Dict[str, Any]:
        """DELETE /sessions/heartbeat: `DELETE /api/v1/sessions/heartbeat`: the logout of a user
        whose login is `heartbeat` (the heartbeat's own route would otherwise answer 405 for
        it).
        """
        return self._json("DELETE", "/sessions/heartbeat", query, None, if_match)

    def create_destination(
        self,
        body: Optional[Dict[str, Any]] = None,
        **query: Any,
    ) -> Destination:
        """POST /destinations"""
        return self._json("POST", "/destinations", query, body, None)

    def create_facility(self, body: Optional[Dict[str, Any]] = None, **query: Any) -> Facility:
        """POST /facilities"""
        return self._json("POST", "/facilities", query, body, None)

    def create_host(self, body: Optional[Dict[str, Any]] = None, **query: Any) -> Host:
        """POST /hosts"""
        return self._json("POST", "/hosts", query, body, None)

    def create_machine(self, body: Optional[Dict[str, Any]] = None, **query: Any) -> Machine:
        """POST /machines"""
        return self._json("POST", "/machines", query, body, None)

    def create_switch(self, body: Optional[Dict[str, Any]] = None, **query: Any) -> Switch:
        """POST /switches"""
        return self._json("POST", "/switches", query, body, None)

    def create_token(self, body: Optional[Dict[str, Any]] = None, **query: Any) -> Dict[str, Any]:
        """POST /tokens"""
        return self._json("POST", "/tokens", query, body, None)

    def create_user(self, body: Optional[Dict[str, Any]] = None, **query: Any) -> PublicUser:
        """POST /users: `POST /api/v1/users`: a password is accepted only as its SHA-512-crypt
        hash.
        """
        return self._json("POST", "/users", query, body, None)

    def delete_destination(
        self,
        facility: str,
        service: str,
        destination: str,
        if_match: Optional[str] = None,
        **query: Any,
    ) -> None:
        """DELETE /destinations/{facility}/{service}/{destination}"""
        return self._json("DELETE", f"/destinations/{_part(facility)}/{_part(service)}/{_part(destination)}", query, None, if_match)

    def delete_facility(self, name: str, if_match: Optional[str] = None, **query: Any) -> None:
        """DELETE /facilities/{name}"""
        return self._json("DELETE", f"/facilities/{_part(name)}", query, None, if_match)

    def delete_host(self, name: str, if_match: Optional[str] = None, **query: Any) -> None:
        """DELETE /hosts/{name}"""
        return self._json("DELETE", f"/hosts/{_part(name)}", query, None, if_match)

    def delete_machine(self, name: str, if_match: Optional[str] = None, **query: Any) -> None:
        """DELETE /machines/{name}"""
        return self._json("DELETE", f"/machines/{_part(name)}", query, None, if_match)

    def delete_role(
        self,
        role: str,
        if_match: Optional[str] = None,
        **query: Any,
    ) -> Dict[str, Any]:
        """DELETE /roles/{role}"""
        return self._json("DELETE", f"/roles/{_part(role)}", query, None, if_match)

    def delete_switch(self, name: str, if_match: Optional[str] = None, **query: Any) -> None:
        """DELETE /switches/{name}"""
        return self._json("DELETE", f"/switches/{_part(name)}", query, None, if_match)

    def delete_user(self, login: str, if_match: Optional[str] = None, **query: Any) -> None:
        """DELETE /users/{login}"""
        return self._json("DELETE", f"/users/{_part(login)}", query, None, if_match)

    def force_propagation(
        self,
        body: Optional[Dict[str, Any]] = None,
        **query: Any,
    ) -> Dict[str, Any]:
        """POST /propagation/force"""
        return self._json("POST", "/propagation/force", query, body, None)

    def get_backup(self, **query: Any) -> bytes:
        """GET /backup: `GET /api/v1/backup`: a consistent copy of the live database, as an SQLite
        file.
        """
        return self._bytes("GET", "/backup", query)

    def get_bundle(self, **query: Any) -> bytes:
        """GET /propagation/bundle: The signed bundle GEN would send, as a tar. A manager gets one
        only for a destination of their own facility: a signed bundle names its destination, and
        one made out for any other name is a credential for whichever host answers to it.
        """
        return self._bytes("GET", "/propagation/bundle", query)

    def get_destination(
        self,
        facility: str,
        service: str,
        destination: str,
        **query: Any,
    ) -> Destination:
        """GET /destinations/{facility}/{service}/{destination}"""
        return self._json("GET", f"/destinations/{_part(facility)}/{_part(service)}/{_part(destination)}", query, None, None)

    def get_facility(self, name: str, **query: Any) -> Facility:
        """GET /facilities/{name}"""
        return self._json("GET", f"/facilities/{_part(name)}", query, None, None)

    def get_host(self, name: str, **query: Any) -> Host:
        """GET /hosts/{name}"""
        return self._json("GET", f"/hosts/{_part(name)}", query, None, None)

    def get_machine(self, name: str, **query: Any) -> Machine:
        """GET /machines/{name}"""
        return self._json("GET", f"/machines/{_part(name)}", query, None, None)

    def get_openapi(self, **query: Any) -> Dict[str, Any]:
        """GET /openapi.json: This description (OpenAPI 3.1, JSON). Public, like the routes it
        describes.
        """
        return self._json("GET", "/openapi.json", query, None, None)

    def get_role(self, role: str, **query: Any) -> Dict[str, Any]:
        """GET /roles/{role}"""
        return self._json("GET", f"/roles/{_part(role)}", query, None, None)

    def get_setting(self, key: str, **query: Any) -> Dict[str, Any]:
        """GET /settings/{key}"""
        return self._json("GET", f"/settings/{_part(key)}", query, None, None)

    def get_signing_key(self, **query: Any) -> Dict[str, Any]:
        """GET /propagation/key"""
        return self._json("GET", "/propagation/key", query, None, None)

    def get_switch(self, name: str, **query: Any) -> Switch:
        """GET /switches/{name}"""
        return self._json("GET", f"/switches/{_part(name)}", query, None, None)

    def get_user(self, login: str, **query: Any) -> PublicUser:
        """GET /users/{login}"""
        return self._json("GET", f"/users/{_part(login)}", query, None, None)

    def heartbeat(self, body: Optional[Dict[str, Any]] = None, **query: Any) -> Dict[str, Any]:
        """POST /sessions/heartbeat: `POST /api/v1/sessions/heartbeat`: refreshes the machine's
        sessions it lists; during recovery, also rebuilds the ones keel does not know (obeying
        the login rules).
        """
        return self._json("POST", "/sessions/heartbeat", query, body, None)

    def import_machines(
        self,
        body: Optional[Dict[str, Any]] = None,
        **query: Any,
    ) -> Dict[str, Any]:
        """POST /machines/import: `POST /api/v1/machines/import`: `{"machines": [{"line": N,
        ...fields}, ...]}`, all or nothing.
        """
        return self._json("POST", "/machines/import", query, body, None)

    def import_users(self, body: Optional[Dict[str, Any]] = None, **query: Any) -> Dict[str, Any]:
        """POST /users/import: `POST /api/v1/users/import`: `{"on_existing":
        "refuse|update|ignore", "dry_run": bool, "users": [{"line": N, …fields}]}` — all or
        nothing, every bad line named.
        """
        return self._json("POST", "/users/import", query, body, None)

    def issue_proof(self, body: Optional[Dict[str, Any]] = None, **query: Any) -> Dict[str, Any]:
        """POST /proofs: `POST /api/v1/proofs`: the PAM `auth` line's call with the password the
        person typed; 201 with a proof the `session` line presents, 401 for a wrong login or
        password, 429 while the login's tries are throttled. A machine asks only for itself
        (address and secret).
        """
        return self._json("POST", "/proofs", query, body, None)

    def list_changes(self, **query: Any) -> Dict[str, Any]:
        """GET /changes"""
        return self._json("GET", "/changes", query, None, None)

    def list_destinations(self, **query: Any) -> List[Destination]:
        """GET /destinations"""
        return self._json("GET", "/destinations", query, None, None)

    def list_facilities(self, **query: Any) -> List[Facility]:
        """GET /facilities"""
        return self._json("GET", "/facilities", query, None, None)

    def list_hosts(self, **query: Any) -> List[Host]:
        """GET /hosts"""
        return self._json("GET", "/hosts", query, None, None)

    def list_machines(self, **query: Any) -> List[Machine]:
        """GET /machines: The machines, filtered Django-style; `outside_pools=true` keeps those
        whose address is not one their type's pool hands out today (the pools changed since:
        `keel machine renumber`).
        """
        return self._json("GET", "/machines", query, None, None)

    def list_roles(self, **query: Any) -> Dict[str, Any]:
        """GET /roles"""
        return self._json("GET", "/roles", query, None, None)

    def list_sessions(self, **query: Any) -> List[Session]:
        """GET /sessions: `GET /api/v1/sessions`: who is logged in where."""
        return self._json("GET", "/sessions", query, None, None)

    def list_settings(self, **query: Any) -> Dict[str, Any]:
        """GET /settings"""
        return self._json("GET", "/settings", query, None, None)

    def list_switches(self, **query: Any) -> List[Switch]:
        """GET /switches"""
        return self._json("GET", "/switches", query, None, None)

    def list_tokens(self, **query: Any) -> Dict[str, Any]:
        """GET /tokens"""
        return self._json("GET", "/tokens", query, None, None)

    def list_users(self, **query: Any) -> List[PublicUser]:
        """GET /users"""
        return self._json("GET", "/users", query, None, None)

    def move_home(
        self,
        login: str,
        body: Optional[Dict[str, Any]] = None,
        **query: Any,
    ) -> PublicUser:
        """POST /users/{login}/move-home: `POST /api/v1/users/{login}/move-home` (admins): runs the
        site's move hook, then records the new HFS. A failed hook changes nothing.
        """
        return self._json("POST", f"/users/{_part(login)}/move-home", query, body, None)

    def open_session(self, body: Optional[Dict[str, Any]] = None, **query: Any) -> Dict[str, Any]:
        """POST /sessions: `POST /api/v1/sessions`: 201 with the session, 200 if already logged in
        there, 423 with why not.
        """
        return self._json("POST", "/sessions", query, body, None)

    def patch_machine(
        self,
        name: str,
        body: Optional[Dict[str, Any]] = None,
        if_match: Optional[str] = None,
        **query: Any,
    ) -> Machine:
        """PATCH /machines/{name}"""
        return self._json("PATCH", f"/machines/{_part(name)}", query, body, if_match)

    def patch_switch(
        self,
        name: str,
        body: Optional[Dict[str, Any]] = None,
        if_match: Optional[str] = None,
        **query: Any,
    ) -> Switch:
        """PATCH /switches/{name}"""
        return self._json("PATCH", f"/switches/{_part(name)}", query, body, if_match)

    def patch_user(
        self,
        login: str,
        body: Optional[Dict[str, Any]] = None,
        if_match: Optional[str] = None,
        **query: Any,
    ) -> PublicUser:
        """PATCH /users/{login}"""
        return self._json("PATCH", f"/users/{_part(login)}", query, body, if_match)

    def propagation_status(self, **query: Any) -> Dict[str, Any]:
        """GET /propagation"""
        return self._json("GET", "/propagation", query, None, None)

    def put_facility(
        self,
        name: str,
        body: Optional[Dict[str, Any]] = None,
        if_match: Optional[str] = None,
        **query: Any,
    ) -> Facility:
        """PUT /facilities/{name}"""
        return self._json("PUT", f"/facilities/{_part(name)}", query, body, if_match)

    def put_host(
        self,
        name: str,
        body: Optional[Dict[str, Any]] = None,
        if_match: Optional[str] = None,
        **query: Any,
    ) -> Host:
        """PUT /hosts/{name}"""
        return self._json("PUT", f"/hosts/{_part(name)}", query, body, if_match)

    def put_machine(
        self,
        name: str,
        body: Optional[Dict[str, Any]] = None,
        if_match: Optional[str] = None,
        **query: Any,
    ) -> Machine:
        """PUT /machines/{name}: PUT replaces: the required fields must all be there."""
        return self._json("PUT", f"/machines/{_part(name)}", query, body, if_match)

    def put_role(
        self,
        role: str,
        body: Optional[Dict[str, Any]] = None,
        if_match: Optional[str] = None,
        **query: Any,
    ) -> Dict[str, Any]:
        """PUT /roles/{role}: `PUT /api/v1/roles/{role}` `{"machine": NAME}`, with `If-Match`
        (`"0"` for a role not given yet): gives the role to that machine.
        """
        return self._json("PUT", f"/roles/{_part(role)}", query, body, if_match)

    def put_setting(
        self,
        key: str,
        body: Optional[Dict[str, Any]] = None,
        if_match: Optional[str] = None,
        **query: Any,
    ) -> Dict[str, Any]:
        """PUT /settings/{key}"""
        return self._json("PUT", f"/settings/{_part(key)}", query, body, if_match)

    def renumber_machines(
        self,
        body: Optional[Dict[str, Any]] = None,
        **query: Any,
    ) -> Dict[str, Any]:
        """POST /machines/renumber: `POST /api/v1/machines/renumber`: `{"machines": [names]}`
        (default: every machine outside today's pools) and `"dry_run"`; each moves to the lowest
        free address of its type's pool, all in one commit or none.
        """
        return self._json("POST", "/machines/renumber", query, body, None)

    def revoke_token(
        self,
        id: str,
        if_match: Optional[str] = None,
        **query: Any,
    ) -> Dict[str, Any]:
        """DELETE /tokens/{id}"""
        return self._json("DELETE", f"/tokens/{_part(id)}", query, None, if_match)

    def watch(self, **query: Any) -> Iterator[Dict[str, Any]]:
        """GET /watch"""
        return self._lines("GET", "/watch", query)
