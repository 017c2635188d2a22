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
    }
}

/// Compares generated files with `tests/data/<dir>/`, or rewrites them under UPDATE_GOLDEN.
fn check_golden(dir: &str, files: &[keel_bundle::File]) {
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
        let files = service.generate(&input, &Options::default());
        // Input order must not matter.
        input.users.reverse();
        input.machines.reverse();
        assert_eq!(
            files,
            service.generate(&input, &Options::default()),
            "{service:?} depends on input order"
        );
        check_golden(service.name(), &files);
    }
}

/// Kea, and ISC with a range for unknown machines (the plain ISC file is in `dhcp/`).
#[test]
fn dhcp_variants_match_their_golden_files() {
    let (users, machines) = site();
    let input = input(&users, &machines);
    let mut opts = Options::default();
    opts.dhcp.unknown_range = Some(("192.168.2.100".parse().unwrap(), "192.168.2.199".parse().unwrap()));
    check_golden("dhcp-isc-unknown", &keel_gen::dhcp(&input, &opts));
    // The same range gets names in the zones.
    check_golden("dns-unknown", &keel_gen::dns(&input, &opts));
    opts.dhcp.format = DhcpFormat::Kea;
    check_golden("dhcp-kea", &keel_gen::dhcp(&input, &opts));
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
    let opts = Options::default();
    check_golden("firewall-open", &keel_gen::firewall(&input, &opts));
    input.contest_mode = true;
    let files = keel_gen::firewall(&input, &opts);
    check_golden("firewall-contest", &files);
    let allowed = keel_gen::allowed(&input, &opts.firewall);
    assert!(!allowed.contains_key(&m("pc-01").ip) && allowed.contains_key(&m("rfs0").ip));
    let mut opts = Options::default();
    opts.firewall.allow_users = vec!["zoe".into()];
    opts.firewall.deny_users = vec!["bob".into()];
    let allowed = keel_gen::allowed(&input, &opts.firewall);
    assert!(allowed.contains_key(&m("pc-01").ip) && !allowed.contains_key(&m("rfs0").ip));
}
