//! `passwd` (passwd, group, shadow), `root_ssh` (authorized_keys) and `homes`.
//!
//! These files hold keel's accounts only; the agent merges them with the host's own accounts.

use std::fmt::Write as _;

use keel_bundle::File;
use keel_model::{Group, User};

use crate::{file, Input, Options};

/// Users in a fixed order: uid, then login.
fn sorted<'a>(input: &Input<'a>) -> Vec<&'a User> {
    let mut users = input.users.clone();
    users.sort_by(|a, b| (a.uid, &a.login).cmp(&(b.uid, &b.login)));
    users
}

/// A passwd field: no separator, no line break (validation keeps them out; this makes sure).
fn field(s: &str) -> String {
    s.chars()
        .map(|c| if c == ':' || c == ',' || c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// passwd, group and shadow for the facility's users.
pub fn passwd(input: &Input<'_>, opts: &Options) -> Vec<File> {
    let users = sorted(input);
    let mut passwd = String::with_capacity(users.len() * 80);
    let mut shadow = String::with_capacity(users.len() * 120);
    for u in &users {
        let gecos = field(&format!("{} {}", u.firstname, u.lastname));
        let gid = opts.group(u.group).gid;
        let shell = field(&u.shell);
        let _ = writeln!(
            passwd,
            "{}:x:{}:{gid}:{gecos}:{}/{}:{shell}",
            u.login, u.uid, opts.home_root, u.login
        );
        // No password yet: locked (`!`), so the account exists but cannot log in with one.
        let hash = if u.password_hash.is_empty() {
            "!"
        } else {
            &u.password_hash
        };
        // lastchg is left empty: aging is off, and the file stays the same from day to day.
        let _ = writeln!(shadow, "{}:{hash}::0:99999:7:::", u.login);
    }
    let mut group = String::new();
    for g in Group::ALL {
        let hg = opts.group(g);
        let members: Vec<&str> = users
            .iter()
            .filter(|u| u.group == g)
            .map(|u| u.login.as_str())
            .collect();
        let _ = writeln!(group, "{}:x:{}:{}", hg.name, hg.gid, members.join(","));
    }
    vec![
        file("group", 0o644, group),
        file("passwd", 0o644, passwd),
        file("shadow", 0o640, shadow),
    ]
}

/// root's authorized_keys: every key of every user of group `root`, by login, each key once.
pub fn root_ssh(input: &Input<'_>) -> Vec<File> {
    let mut roots: Vec<&User> = input.users.iter().copied().filter(|u| u.group == Group::Root).collect();
    roots.sort_by(|a, b| a.login.cmp(&b.login));
    let mut out = String::from("# Managed by keel (service root_ssh): the keys of the root group.\n");
    let mut seen = std::collections::HashSet::new();
    for u in roots {
        for key in &u.ssh_keys {
            let key = key.trim();
            if !key.is_empty() && !key.contains('\n') && seen.insert(key) {
                let _ = writeln!(out, "{key}");
            }
        }
    }
    vec![file("authorized_keys", 0o600, out)]
}

/// One line per home: `path uid gid mode` (octal). The agent creates the missing ones; it never
/// deletes a home.
pub fn homes(input: &Input<'_>, opts: &Options) -> Vec<File> {
    let mut out = String::new();
    for u in sorted(input) {
        let gid = opts.group(u.group).gid;
        let _ = writeln!(
            out,
            "{}/{} {} {gid} {:04o}",
            opts.home_root, u.login, u.uid, opts.home_mode
        );
    }
    vec![file("homes", 0o644, out)]
}
