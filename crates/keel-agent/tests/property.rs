//! Invariant 10 as a property: whatever the data — unicode, control characters, the
//! separators of every format, huge values, the injection of issue 19 — every generated file
//! holds exactly one record per keel record, or the value was refused on the way. Three layers
//! are exercised on their own:
//!
//! - arbitrary user fields go through the model (`UserPatch::from_fields`); what it accepts must
//!   generate without a GENERROR and apply with the real `keel-agent` to exactly the intended
//!   accounts;
//! - arbitrary fields put straight into `User` records (past the model, as an old database or a
//!   bug would) are either refused by the generator or generate files that parse exactly;
//! - the agent applies what the generator made, and the host's files then hold each account
//!   once, with the intended hash.
//!
//! Machines: arbitrary names through the model; what it accepts generates zones that the real
//! `named-checkzone` loads with one A record per name, a dhcpd.conf that `dhcpd -t` and a Kea
//! file that `kea-dhcp4 -t` accept. `PROPTEST_CASES` raises the number of cases (see
//! docs/security.md for the longer run).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use keel_bundle::{build, Header, SecretKey};
use keel_model::input::{Fields, Strictness};
use keel_model::service::{File, Version};
use keel_model::{Group, Login, MachinePatch, User, UserPatch};
use proptest::prelude::*;

const HASH: &str = "$6$saltsalt$W8/of8d2LyqjgMBUekC8rz9KqwXuk/zM2UFVSqjBrgi3iOHzUpki1KXdE9sy4UjXzKwFKfQDgDGi8qHdDVLoh/";
const INJECTION: &str = "$6$rounds=5000:::::::\nadmin1::19000:0:99999:7:::\nzz:$saltsalt$W8/of8d2LyqjgMBUekC8rz9KqwXuk/zM2UFVSqjBrgi3iOHzUpki1KXdE9sy4UjXzKwFKfQDgDGi8qHdDVLoh/";
const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHh3w1q3rDqB3sRrcB8xQ3W8N4Ckj0m0jbUuv5a1J6PB a@b";

/// `PROPTEST_CASES` if set (the longer run), else `default`: each case runs real programs.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A string that may hold anything a hostile user could send: plain words, every separator of
/// passwd, zones, dhcpd.conf and iPXE, line breaks, NUL, unicode, long runs.
fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9 ._-]{0,12}",
        "[a-z:,;#$\"'\\\\{}() \t\r\n\u{0}\u{85}\u{2028}é]{0,12}",
        any::<String>().prop_map(|s| s.chars().take(40).collect()),
        Just(INJECTION.to_owned()),
        Just(HASH.to_owned()),
        Just(format!("{HASH}\nroot::0:0::/:/bin/sh")),
        Just(KEY.to_owned()),
        Just(format!("{KEY}\nssh-rsa AAAA")),
        "[a-z]{1,8}".prop_map(|s| s.repeat(300)),
    ]
}

#[derive(Debug, Clone)]
struct RawUser {
    firstname: String,
    lastname: String,
    shell: String,
    hash: String,
    key: String,
}

/// Mostly plausible values, often hostile ones: so that cases where the model accepts a user
/// are common (the model test insists on at least one), and refusals too.
fn raw_user() -> impl Strategy<Value = RawUser> {
    let name = prop_oneof![3 => "[A-Za-zé' -]{1,12}", 1 => hostile()];
    let shell = prop_oneof![3 => Just("/bin/bash".to_owned()), 1 => hostile()];
    let hash = prop_oneof![2 => Just(HASH.to_owned()), 1 => Just(String::new()), 1 => hostile()];
    let key = prop_oneof![2 => Just(KEY.to_owned()), 1 => hostile()];
    (name.clone(), name, shell, hash, key).prop_map(|(firstname, lastname, shell, hash, key)| RawUser {
        firstname,
        lastname,
        shell,
        hash,
        key,
    })
}

/// The model's verdict on a user with these fields: the `User`, or `None` if refused.
fn through_model(login: &str, group: Group, r: &RawUser, uid: u32) -> Option<User> {
    let v = serde_json::json!({
        "login": login, "group": group.as_str(), "firstname": r.firstname, "lastname": r.lastname,
        "shell": r.shell, "password_hash": r.hash, "ssh_keys": [r.key],
    });
    let patch = UserPatch::from_fields(Fields::new(v, Strictness::Strict).ok()?).ok()?;
    patch.create(uid).ok()
}

/// The same fields put straight into a record, past the model.
fn past_model(login: &str, group: Group, r: &RawUser, uid: u32) -> User {
    User {
        login: Login::parse("login", login).unwrap(),
        firstname: r.firstname.clone(),
        lastname: r.lastname.clone(),
        group,
        uid,
        shell: r.shell.clone(),
        ssh_keys: vec![r.key.clone()],
        password_hash: r.hash.clone(),
        password_changed: false,
        hfs: None,
        version: 1,
    }
}

fn users(raw: &[RawUser], model: bool) -> Vec<User> {
    let groups = [Group::User, Group::Orga, Group::Root];
    raw.iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let (login, group) = (format!("u{i}"), groups[i % 3]);
            let uid = 10_001 + u32::try_from(i).unwrap();
            if model {
                through_model(&login, group, r, uid)
            } else {
                Some(past_model(&login, group, r, uid))
            }
        })
        .collect()
}

fn generate(service: keel_gen::BuiltIn, users: &[User]) -> Result<Vec<File>, keel_gen::GenError> {
    let input = keel_gen::Input {
        facility: "lan",
        users: users.iter().collect(),
        ..Default::default()
    };
    service.generate(&input, &keel_gen::Options::default())
}

/// Each line of an account file: its field count, and its name once.
fn check_account_file(name: &str, text: &str, fields: usize, users: &[User]) {
    let mut seen = BTreeMap::new();
    for line in text.lines() {
        assert_eq!(line.split(':').count(), fields, "{name}: {line:?}");
        assert!(!line.chars().any(char::is_control), "{name}: {line:?}");
        let n = line.split(':').next().unwrap();
        assert!(
            seen.insert(n.to_owned(), line.to_owned()).is_none(),
            "{name}: {n} twice"
        );
    }
    if name != "group" {
        let want: Vec<&str> = users.iter().map(|u| u.login.as_str()).collect();
        let got: Vec<&str> = seen.keys().map(String::as_str).collect();
        let mut want = want;
        want.sort_unstable();
        assert_eq!(got, want, "{name}: exactly the intended accounts");
    }
    if name == "shadow" {
        for u in users {
            let hash = seen[u.login.as_str()].split(':').nth(1).unwrap().to_owned();
            let want = if u.password_hash.is_empty() {
                "!"
            } else {
                &u.password_hash
            };
            assert_eq!(hash, want, "shadow: {}'s hash", u.login);
        }
    }
}

/// The generator's files, parsed: one line per user, the right fields, the intended hashes.
fn check_generated(files: &[File], users: &[User]) {
    for (name, fields) in [("passwd", 7), ("group", 4), ("shadow", 9)] {
        let f = files.iter().find(|f| f.path == name).unwrap();
        check_account_file(name, std::str::from_utf8(&f.data).unwrap(), fields, users);
    }
}

/// Applies the passwd bundle with the real agent under a fresh root: its exit code, and the
/// host's account files after.
fn apply(files: &[File]) -> (i32, BTreeMap<&'static str, String>) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/bash\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    std::fs::write(root.join("etc/shadow"), "root:*:19000:0:99999:7:::\n").unwrap();
    let key = SecretKey::generate().unwrap();
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "fqdn = \"h.prolo\"\ntrusted_keys = [\"{}\"]\nroot_dir = \"{}\"\n",
            key.public(),
            root.display()
        ),
    )
    .unwrap();
    let h = Header {
        service: "passwd",
        version: Version::new(1, 0),
        facility: "lan",
        destination: "h.prolo",
        run_id: "p",
        created: "2026-01-01T00:00:00Z",
        serial: 1,
    };
    let bundle = build(&key, &h, files).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_keel-agent"))
        .args(["--config", cfg.to_str().unwrap(), "apply"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&bundle).unwrap();
    let code = child.wait().unwrap().code().unwrap_or(-1);
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
    let out = BTreeMap::from([
        ("passwd", read("etc/passwd")),
        ("group", read("etc/group")),
        ("shadow", read("etc/shadow")),
    ]);
    (code, out)
}

/// The host's files hold root's own lines and keel's, each account once.
fn check_applied(out: &BTreeMap<&str, String>, users: &[User]) {
    for (name, fields) in [("passwd", 7), ("group", 4), ("shadow", 9)] {
        let keel: String = out[name]
            .lines()
            .filter(|l| !l.starts_with("root:"))
            .map(|l| format!("{l}\n"))
            .collect();
        check_account_file(name, &keel, fields, users);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(48)))]

    /// What the model accepts generates and applies exactly; what it refuses never gets there.
    #[test]
    fn model_accepted_users_generate_and_apply_exactly(raw in prop::collection::vec(raw_user(), 1..5)) {
        let users = users(&raw, true);
        // Not vacuous: a case where the model refused everyone is no case (proptest fails when
        // too many are rejected).
        prop_assume!(!users.is_empty());
        let files = generate(keel_gen::BuiltIn::Passwd, &users).expect("the model's users generate");
        check_generated(&files, &users);
        generate(keel_gen::BuiltIn::RootSsh, &users).expect("the model's keys generate");
        let (code, out) = apply(&files);
        prop_assert_eq!(code, 0);
        check_applied(&out, &users);
    }

    /// Past the model, the generator refuses or writes exactly; the agent applies exactly or
    /// refuses with nothing written.
    #[test]
    fn any_record_generates_exactly_or_is_refused(raw in prop::collection::vec(raw_user(), 1..5)) {
        let users = users(&raw, false);
        match generate(keel_gen::BuiltIn::Passwd, &users) {
            Err(e) => prop_assert!(e.to_string().starts_with("GENERROR")),
            Ok(files) => {
                check_generated(&files, &users);
                let (code, out) = apply(&files);
                prop_assert_eq!(code, 0);
                check_applied(&out, &users);
            }
        }
        if let Ok(files) = generate(keel_gen::BuiltIn::RootSsh, &users) {
            let text = String::from_utf8(files[0].data.clone()).unwrap();
            for line in text.lines().filter(|l| !l.starts_with('#')) {
                prop_assert!(keel_model::check_ssh_key(line).is_ok(), "{:?}", line);
            }
        }
    }

    /// The agent alone: account files with any lines are applied exactly or refused (exit 50)
    /// with the host's files untouched.
    #[test]
    fn the_agent_applies_exactly_or_refuses(lines in prop::collection::vec(hostile(), 1..6)) {
        let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
        let files: Vec<File> = ["passwd", "group", "shadow"]
            .iter()
            .map(|p| File { path: (*p).into(), mode: 0o644, data: body.clone().into_bytes() })
            .collect();
        let (code, out) = apply(&files);
        if code == 0 {
            let mut accounts = std::collections::BTreeSet::new();
            for (name, fields) in [("passwd", 7), ("group", 4), ("shadow", 9)] {
                let mut seen = std::collections::BTreeSet::new();
                for l in out[name].lines() {
                    prop_assert_eq!(l.split(':').count(), fields, "{}: {:?}", name, l);
                    let n = l.split(':').next().unwrap().to_owned();
                    prop_assert!(seen.insert(n.clone()), "{}: {} twice", name, n);
                    if name == "shadow" {
                        prop_assert!(accounts.contains(&n), "shadow: {} is no account", n);
                    }
                }
                if name == "passwd" {
                    accounts = seen;
                }
            }
        } else {
            prop_assert!(code == 50, "exit {}", code);
            prop_assert_eq!(&out["passwd"], "root:x:0:0:root:/root:/bin/bash\n");
            prop_assert_eq!(&out["shadow"], "root:*:19000:0:99999:7:::\n");
        }
    }
}

/// Machines: names and rooms through the model; the zones, dhcpd.conf and Kea file of what it
/// accepted pass the real checkers with one A record per name.
mod machines {
    use super::*;

    fn checker(cmd: &str, args: &[&str], file: &Path) -> std::process::Output {
        Command::new(cmd)
            .args(args)
            .arg(file)
            .output()
            .unwrap_or_else(|e| panic!("{cmd}: {e} (installed by .ci/run)"))
    }

    /// Mostly names the model takes, often hostile ones.
    fn name() -> impl Strategy<Value = String> {
        prop_oneof![3 => "[a-z][a-z0-9-]{0,8}[a-z0-9]", 1 => hostile()]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(cases(12)))]

        #[test]
        #[cfg_attr(not(all(has_named_checkzone, has_named_checkconf, has_dhcpd, has_kea_dhcp4)), ignore = "needs named-checkzone, named-checkconf, dhcpd, kea-dhcp4, not installed here (.ci/run installs it)")]
        fn accepted_names_make_files_the_real_checkers_load(
            raw in prop::collection::vec((name(), prop::collection::vec(name(), 0..3), name()), 1..6)
        ) {
            // The zone's NS is `gw`: it exists, as on every site.
            let gw = serde_json::json!({"hostname": "gw", "mac": "02:00:00:00:01:fe", "mtype": "service"});
            let gw = MachinePatch::from_fields(Fields::new(gw, Strictness::Strict).unwrap()).unwrap();
            let mut machines = vec![gw.create(1000, std::net::Ipv4Addr::new(192, 168, 1, 254)).unwrap()];
            let mut seen = std::collections::BTreeSet::from(["gw".to_owned()]);
            for (i, (hostname, aliases, room)) in raw.iter().enumerate() {
                let n = u8::try_from(i).unwrap() + 1;
                let v = serde_json::json!({
                    "hostname": hostname, "aliases": aliases, "room": room, "mtype": "user",
                    "mac": format!("02:00:00:00:00:{n:02x}"),
                });
                let Ok(patch) = MachinePatch::from_fields(Fields::new(v, Strictness::Strict).unwrap()) else { continue };
                let Ok(m) = patch.create(u64::from(n), std::net::Ipv4Addr::new(192, 168, 0, n)) else { continue };
                // The Snapshot keeps names unique across machines; here the test does.
                if m.names().any(|x| !seen.insert(x.to_string())) { continue; }
                machines.push(m);
            }
            prop_assume!(machines.len() > 1, "the model took none of them");
            let input = keel_gen::Input {
                facility: "lan",
                machines: machines.iter().collect(),
                reverse_zones: keel_model::Pools::default().reverse_zones(),
                networks: keel_model::Pools::default().networks(),
                serial: 1,
                ..Default::default()
            };
            let opts = keel_gen::Options::default();
            let dir = tempfile::tempdir().unwrap();
            let names: usize = machines.iter().map(|m| m.names().count()).sum();
            for f in keel_gen::BuiltIn::Dns.generate(&input, &opts).expect("accepted names generate") {
                let p = dir.path().join(&f.path);
                std::fs::write(&p, &f.data).unwrap();
                if f.path == "db.prolo" {
                    let out = checker("named-checkzone", &["-D", "prolo"], &p);
                    prop_assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
                    let a = String::from_utf8_lossy(&out.stdout).lines()
                        .filter(|l| l.split_whitespace().nth(3) == Some("A"))
                        .count();
                    prop_assert_eq!(a, names, "one A record per name");
                }
            }
            let hosts = keel_gen::BuiltIn::Hosts.generate(&input, &opts).expect("hosts");
            prop_assert_eq!(String::from_utf8_lossy(&hosts[0].data).lines().count(), machines.len());
            let mut opts = opts;
            for (format, cmd, args) in [
                (keel_gen::DhcpFormat::Isc, "dhcpd", &["-q", "-t", "-cf"][..]),
                (keel_gen::DhcpFormat::Kea, "kea-dhcp4", &["-t"][..]),
            ] {
                opts.dhcp.format = format;
                let f = &keel_gen::BuiltIn::Dhcp.generate(&input, &opts).expect("dhcp")[0];
                let p = dir.path().join(&f.path);
                std::fs::write(&p, &f.data).unwrap();
                let out = checker(cmd, args, &p);
                prop_assert!(out.status.success(), "{cmd}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            }
        }
    }
}
