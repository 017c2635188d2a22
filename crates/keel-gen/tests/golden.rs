#![allow(clippy::unwrap_used)]
//! Every built-in generator against the files in `tests/data/<service>/` (invariant 3).
//! `UPDATE_GOLDEN=1 cargo test -p keel-gen` rewrites them; review the diff.

use std::path::Path;

use keel_gen::{BuiltIn, DhcpFormat, Input, Options};
use keel_model::{Machine, User};

fn site() -> (Vec<User>, Vec<Machine>) {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/site.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    (
        serde_json::from_value(v["users"].clone()).unwrap(),
        serde_json::from_value(v["machines"].clone()).unwrap(),
    )
}

fn input<'a>(users: &'a [User], machines: &'a [Machine]) -> Input<'a> {
    Input {
        facility: "lan",
        users: users.iter().collect(),
        machines: machines.iter().collect(),
        reverse_zones: keel_model::Pools::default().reverse_zones(),
        serial: 3,
        networks: keel_model::Pools::default().networks(),
        sessions: Vec::new(),
        contest_mode: false,
        hfs: None,
        // gw's roles give it `sso` (and `mdb`, which is already an alias: written once); rfs0 is
        // HFS 1's server; HFS 0 has none, so its users get no automount entry.
        service_names: [(1, vec!["mdb", "sso"])].into_iter().collect(),
        hfs_servers: [(1, &machines[1])].into_iter().collect(),
    }
}

/// Compares generated files with `tests/data/<dir>/`, or rewrites them under UPDATE_GOLDEN.
fn check_golden(dir: &str, files: &[keel_model::service::File]) {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    for f in files {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(dir)
            .join(&f.path);
        if update {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &f.data).unwrap();
        }
        let want =
            std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
        assert_eq!(
            String::from_utf8_lossy(&f.data),
            String::from_utf8_lossy(&want),
            "{}",
            path.display()
        );
    }
}

#[test]
fn generators_match_golden_files() {
    let (users, machines) = site();
    let mut input = input(&users, &machines);
    for service in BuiltIn::ALL {
        let files = service.generate(&input, &Options::default()).unwrap();
        // Input order must not matter.
        input.users.reverse();
        input.machines.reverse();
        assert_eq!(
            files,
            service.generate(&input, &Options::default()).unwrap(),
            "{service:?} depends on input order"
        );
        check_golden(service.name(), &files);
    }
}

/// Kea, and ISC with a range for unknown machines (the plain ISC file is in `dhcp/`); the
/// firewall with people logged in, outside and during the contest.
fn variants() -> Vec<(&'static str, Vec<keel_model::service::File>)> {
    let (users, machines) = site();
    let mut input = input(&users, &machines);
    let mut opts = Options::default();
    opts.dhcp.unknown_range = Some(("192.168.2.100".parse().unwrap(), "192.168.2.199".parse().unwrap()));
    let mut out = vec![
        ("dhcp-isc-unknown", keel_gen::dhcp(&input, &opts).unwrap()),
        // The same range gets names in the zones.
        ("dns-unknown", keel_gen::dns(&input, &opts).unwrap()),
    ];
    opts.dhcp.format = DhcpFormat::Kea;
    out.push(("dhcp-kea", keel_gen::dhcp(&input, &opts).unwrap()));
    let m = |h: &str| machines.iter().find(|m| m.hostname.as_str() == h).unwrap();
    let u = |l: &str| users.iter().find(|u| u.login.as_str() == l).unwrap();
    input.sessions = vec![(m("pc-01"), u("zoe")), (m("rfs0"), u("bob"))];
    let opts = Options::default();
    out.push(("firewall-open", keel_gen::firewall(&input, &opts).unwrap()));
    input.contest_mode = true;
    out.push(("firewall-contest", keel_gen::firewall(&input, &opts).unwrap()));
    // hfs1's facility: its users only (what Facility::receives gives it), under the export root.
    let hfs1 = Input {
        users: users.iter().filter(|u| u.hfs == Some(1)).collect(),
        hfs: Some(1),
        ..input
    };
    out.push(("homes-hfs1", keel_gen::homes(&hfs1, &opts).unwrap()));
    out
}

#[test]
fn variants_match_their_golden_files() {
    for (dir, files) in variants() {
        check_golden(dir, &files);
    }
}

/// A golden file no generator writes any more would be kept, and reviewed, for nothing.
#[test]
fn every_golden_file_is_still_generated() {
    let (users, machines) = site();
    let input = input(&users, &machines);
    let mut made: std::collections::BTreeSet<std::path::PathBuf> = ["site.json".into()].into();
    let builtins = BuiltIn::ALL.map(|b| (b.name(), b.generate(&input, &Options::default()).unwrap()));
    for (dir, files) in builtins.into_iter().chain(variants()) {
        made.extend(files.iter().map(|f| Path::new(dir).join(&f.path)));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut orphans = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if !made.contains(p.strip_prefix(&root).unwrap()) {
                orphans.push(p.display().to_string());
            }
        }
    }
    assert!(orphans.is_empty(), "golden files no generator writes: {orphans:?}");
}

/// The firewall with people logged in: a contestant is allowed outside the contest only; staff
/// always; per-user exceptions either way.
#[test]
fn firewall_follows_sessions_and_contest_mode() {
    let (users, machines) = site();
    let mut input = input(&users, &machines);
    let m = |h: &str| machines.iter().find(|m| m.hostname.as_str() == h).unwrap();
    let u = |l: &str| users.iter().find(|u| u.login.as_str() == l).unwrap();
    input.sessions = vec![(m("pc-01"), u("zoe")), (m("rfs0"), u("bob"))];
    input.contest_mode = true;
    let opts = Options::default();
    let allowed = keel_gen::allowed(&input, &opts.firewall);
    assert!(!allowed.contains_key(&m("pc-01").ip) && allowed.contains_key(&m("rfs0").ip));
    // Service machines (rfs0) are out by their type, logged in or not, as prologin let its
    // services network out; the gateway (type service) too.
    input.sessions.clear();
    let allowed = keel_gen::allowed(&input, &opts.firewall);
    assert!(allowed.contains_key(&m("rfs0").ip) && allowed.contains_key(&m("gw").ip));
    assert!(!allowed.contains_key(&m("pc-01").ip));
    input.sessions = vec![(m("pc-01"), u("zoe")), (m("rfs0"), u("bob"))];
    // Per-user exceptions, on a site that lets only orga machines out by type.
    let mut opts = Options::default();
    opts.firewall.allowed_types = vec![keel_model::MachineType::Orga];
    opts.firewall.allow_users = vec!["zoe".into()];
    opts.firewall.deny_users = vec!["bob".into()];
    let allowed = keel_gen::allowed(&input, &opts.firewall);
    assert!(allowed.contains_key(&m("pc-01").ip) && !allowed.contains_key(&m("rfs0").ip));
}

/// Invariant 10's second layer: whatever a record holds (an old database, a model bug), a value
/// a file cannot hold as one field is a GENERROR naming record and field, never written. The
/// valid site generates (above); each case breaks one field of one record.
#[test]
fn values_a_format_cannot_hold_are_refused() {
    const HASH: &str =
        "$6$saltsalt$W8/of8d2LyqjgMBUekC8rz9KqwXuk/zM2UFVSqjBrgi3iOHzUpki1KXdE9sy4UjXzKwFKfQDgDGi8qHdDVLoh/";
    const INJECTED: &str = "$6$rounds=5000:::::::\nadmin1::19000:0:99999:7:::\nzz:$saltsalt$W8/of8d2LyqjgMBUekC8rz9KqwXuk/zM2UFVSqjBrgi3iOHzUpki1KXdE9sy4UjXzKwFKfQDgDGi8qHdDVLoh/";
    type Break = fn(&mut User);
    let cases: [(&str, BuiltIn, Break, &str); 7] = [
        (
            "hash with lines",
            BuiltIn::Passwd,
            |u| u.password_hash = INJECTED.into(),
            "password_hash",
        ),
        (
            "hash of another kind",
            BuiltIn::Passwd,
            |u| u.password_hash = "$1$x$y".into(),
            "password_hash",
        ),
        (
            "colon in a name",
            BuiltIn::Passwd,
            |u| u.lastname = "a:b".into(),
            "lastname",
        ),
        (
            "newline in a name",
            BuiltIn::Passwd,
            |u| u.firstname = "a\nroot::0:0::/:/bin/sh".into(),
            "firstname",
        ),
        (
            "space in a shell",
            BuiltIn::Passwd,
            |u| u.shell = "/bin/sh -c".into(),
            "shell",
        ),
        (
            "two keys in one",
            BuiltIn::RootSsh,
            |u| {
                u.ssh_keys = vec![format!(
                    "{} x\nssh-rsa AAAA",
                    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGzcbpk8aqp3cEDwyKXnsoiYd7vmmrcTnDgPp7XqN9ZN"
                )]
            },
            "ssh_keys",
        ),
        (
            "a key with options",
            BuiltIn::RootSsh,
            |u| u.ssh_keys = vec!["command=\"sh\" ssh-ed25519 AAAA".into()],
            "ssh_keys",
        ),
    ];
    for (why, service, break_it, field) in cases {
        let (mut users, machines) = site();
        let alice = users.iter().position(|u| u.login.as_str() == "alice").unwrap();
        users[alice].password_hash = HASH.into();
        assert!(
            service.generate(&input(&users, &machines), &Options::default()).is_ok(),
            "{why}: the valid site"
        );
        break_it(&mut users[alice]);
        let err = service
            .generate(&input(&users, &machines), &Options::default())
            .unwrap_err();
        assert_eq!((err.record.as_str(), err.field), ("alice", field), "{why}: {err}");
    }
}
