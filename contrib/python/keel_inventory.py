#!/usr/bin/env python3
"""An Ansible dynamic inventory of keel's machines, through keel's typed API client (keel_api.py,
beside this script; made by ``keel openapi --python``).

    install -m 0644 /usr/share/keel/python/keel_api.py inventory/
    install -m 0755 /usr/share/keel/python/keel_inventory.py inventory/
    KEEL_URL=https://keel.prolo KEEL_TOKEN_FILE=/etc/keel/ansible.token KEEL_CA_FILE=/etc/keel/ca.pem \\
        ansible-inventory -i inventory/keel_inventory.py --graph

Reads the machines and the roles (a ``readonly`` token, or none on a keel with ``open_reads``).
Groups: each machine type (``user``, ``orga``, ``cluster``, ``service``), ``room_NAME``,
``rfs_N``, ``hfs_N``, ``role_NAME`` for each role given (``role_gateway``, ``role_rfs_1``,
``role_service_web``) and ``faulty``. Host variables: ``ansible_host`` (the machine's address),
``ip``, ``mac``, ``mtype``, ``room``, ``rfs``, ``hfs``, ``aliases``, ``is_faulty``,
``faulty_reason``, ``roles``. Exit status 1, with the reason on stderr, when keel cannot answer.
"""

import argparse
import json
import os
import re
import sys

import keel_api


def group_name(*parts):
    """An Ansible group name: letters, digits and ``_`` only."""
    return re.sub(r"[^A-Za-z0-9_]", "_", "_".join(str(p) for p in parts))


def client():
    url = os.environ.get("KEEL_URL", "http://127.0.0.1:8080")
    token = os.environ.get("KEEL_TOKEN")
    token_file = os.environ.get("KEEL_TOKEN_FILE")
    if not token and token_file:
        with open(token_file, encoding="utf-8") as f:
            token = f.readline().strip()
    return keel_api.Client(url, token=token or None, ca_file=os.environ.get("KEEL_CA_FILE") or None)


def inventory(api):
    machines = api.list_machines()
    roles = {}
    for given in api.list_roles():
        roles.setdefault(given["machine"], []).append(given["role"])
    groups = {"all": {"hosts": []}}
    hostvars = {}

    def add(group, host):
        groups.setdefault(group, {"hosts": []})["hosts"].append(host)

    for m in sorted(machines, key=lambda m: m["hostname"]):
        host = m["hostname"]
        groups["all"]["hosts"].append(host)
        add(m["mtype"], host)
        add(group_name("room", m["room"]), host)
        add(group_name("rfs", m["rfs"]), host)
        add(group_name("hfs", m["hfs"]), host)
        if m["is_faulty"]:
            add("faulty", host)
        for role in roles.get(host, []):
            add(group_name("role", role), host)
        hostvars[host] = {
            "ansible_host": m["ip"],
            "ip": m["ip"],
            "mac": m["mac"],
            "mtype": m["mtype"],
            "room": m["room"],
            "rfs": m["rfs"],
            "hfs": m["hfs"],
            "aliases": m["aliases"],
            "is_faulty": m["is_faulty"],
            "faulty_reason": m["faulty_reason"],
            "roles": sorted(roles.get(host, [])),
        }
    groups["_meta"] = {"hostvars": hostvars}
    return groups


def main():
    parser = argparse.ArgumentParser(description="keel's machines as an Ansible dynamic inventory")
    parser.add_argument("--list", action="store_true", help="every group and host (the default)")
    parser.add_argument("--host", help="one host's variables")
    args = parser.parse_args()
    try:
        inv = inventory(client())
    except (keel_api.KeelError, OSError) as e:
        print(f"keel_inventory: {e}", file=sys.stderr)
        return 1
    if args.host:
        out = inv["_meta"]["hostvars"].get(args.host, {})
    else:
        out = inv
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
