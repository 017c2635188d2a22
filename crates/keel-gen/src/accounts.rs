//! `passwd` (passwd, group, shadow), `root_ssh` (authorized_keys), `homes` and `automount`.
//!
//! These files hold keel's accounts only; the agent merges them with the host's own accounts.

use std::fmt::Write as _;

use keel_model::service::File;
use keel_model::{Group, User};

use crate::check::{self, GenError};
use crate::{file, Input, Options};

/// Users in a fixed order: uid, then login.
fn sorted<'a>(input: &Input<'a>) -> Vec<&'a User> {
    let mut users = input.users.clone();
    users.sort_by(|a, b| (a.uid, &a.login).cmp(&(b.uid, &b.login)));
    users
}

/// Checks what a user puts in passwd, group and shadow: each value one field (no `:`, no line
/// break), GECOS without its own `,`, the hash exactly `$6$…` or empty.
fn check_user(u: &User) -> Result<(), GenError> {
    let who = u.login.as_str();
    check::field("passwd", who, "firstname", &u.firstname, &[':', ','])?;
    check::field("passwd", who, "lastname", &u.lastname, &[':', ','])?;
    check::field("passwd", who, "shell", &u.shell, &[':', ' ', '\t'])?;
    if !u.password_hash.is_empty() && !keel_model::is_sha512_crypt(&u.password_hash) {
        return Err(GenError::new("shadow", who, "password_hash", "is not a $6$ hash"));
    }
    Ok(())
}

/// passwd, group and shadow for the facility's users.
pub fn passwd(input: &Input<'_>, opts: &Options) -> Result<Vec<File>, GenError> {
    check::option("passwd", "home_root", &opts.home_root, &[':', ' ', '\t'])?;
    for g in opts.groups.values() {
        check::option("group", "groups", &g.name, &[':', ',', ' ', '\t'])?;
    }
    let users = sorted(input);
    let mut passwd = String::with_capacity(users.len() * 80);
    let mut shadow = String::with_capacity(users.len() * 120);
    // Per group, not per user: 100,000 users are one pass with no allocation of its own per user.
    let gids: Vec<(Group, u32)> = Group::ALL.iter().map(|g| (*g, opts.group(*g).gid)).collect();
    let mut gecos = String::new();
    for u in &users {
        check_user(u)?;
        let gid = gids.iter().find(|(g, _)| *g == u.group).map_or(65534, |(_, gid)| *gid);
        gecos.clear();
        let _ = write!(gecos, "{} {}", u.firstname, u.lastname);
        let _ = writeln!(
            passwd,
            "{}:x:{}:{gid}:{}:{}/{}:{}",
            u.login,
            u.uid,
            gecos.trim(),
            opts.home_root,
            u.login,
            u.shell
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
    let members = host_group_members(&users, opts)?;
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
    Ok(vec![
        file("group", 0o644, group),
        file("group-members", 0o644, members),
        file("passwd", 0o644, passwd),
        file("shadow", 0o640, shadow),
    ])
}

/// `group-members`: `hostgroup:login,login` for each of the host's groups keel's users join
/// (`member_of`), in name order. A host group keel also defines itself is refused: the agent
/// would be asked to both own and amend one line.
fn host_group_members(users: &[&User], opts: &Options) -> Result<String, GenError> {
    let own: Vec<String> = Group::ALL.iter().map(|g| opts.group(*g).name).collect();
    let mut joined: std::collections::BTreeMap<String, Vec<&str>> = std::collections::BTreeMap::new();
    for g in Group::ALL {
        for host_group in opts.group(g).member_of {
            check::option("group-members", "groups.member_of", &host_group, &[':', ',', ' ', '\t'])?;
            if host_group.is_empty() || own.contains(&host_group) {
                return Err(GenError::new(
                    "group-members",
                    &host_group,
                    "groups.member_of",
                    "must name a group of the host, not one of keel's",
                ));
            }
            let list = joined.entry(host_group).or_default();
            list.extend(users.iter().filter(|u| u.group == g).map(|u| u.login.as_str()));
        }
    }
    let mut out = String::new();
    for (host_group, mut logins) in joined {
        logins.sort_unstable();
        logins.dedup();
        let _ = writeln!(out, "{host_group}:{}", logins.join(","));
    }
    Ok(out)
}

/// root's authorized_keys: every key of every user of group `root`, by login, each key once.
/// A key that is not one OpenSSH public key line is refused, not skipped: root's access must not
/// silently differ from what keel shows.
pub fn root_ssh(input: &Input<'_>) -> Result<Vec<File>, GenError> {
    let mut roots: Vec<&User> = input.users.iter().copied().filter(|u| u.group == Group::Root).collect();
    roots.sort_by(|a, b| a.login.cmp(&b.login));
    let mut out = String::from("# Managed by keel (service root_ssh): the keys of the root group.\n");
    let mut seen = std::collections::HashSet::new();
    for u in roots {
        for key in &u.ssh_keys {
            let key = keel_model::check_ssh_key(key)
                .map_err(|e| GenError::new("authorized_keys", u.login.as_str(), "ssh_keys", e.message))?;
            if seen.insert(key.clone()) {
                let _ = writeln!(out, "{key}");
            }
        }
    }
    Ok(vec![file("authorized_keys", 0o600, out)])
}

/// One line per home: `path uid gid mode` (octal). The agent creates the missing ones (from its
/// skeleton); it never deletes a home. On a home file server's facility (`hfs` set) the homes are
/// under the export root, and only its users' (the facility receives no one else).
pub fn homes(input: &Input<'_>, opts: &Options) -> Result<Vec<File>, GenError> {
    let (root, name) = match input.hfs {
        Some(_) => (&opts.automount.export_root, "automount.export_root"),
        None => (&opts.home_root, "home_root"),
    };
    check::option("homes", name, root, &[' ', '\t'])?;
    let mut out = String::new();
    for u in sorted(input) {
        let gid = opts.group(u.group).gid;
        let _ = writeln!(out, "{root}/{} {} {gid} {:04o}", u.login, u.uid, opts.home_mode);
    }
    Ok(vec![file("homes", 0o644, out)])
}

/// autofs's `auto.home` map for the machines: `login options server:export_root/login` for every
/// user of the facility whose home has an HFS (the others have no home to mount yet). Logins are
/// validated words; the options, server and root are checked as one word each here.
pub fn automount(input: &Input<'_>, opts: &Options) -> Result<Vec<File>, GenError> {
    let a = &opts.automount;
    check::option("auto.home", "automount.options", &a.options, &[' ', '\t', '#'])?;
    check::option(
        "auto.home",
        "automount.export_root",
        &a.export_root,
        &[' ', '\t', '#', ':'],
    )?;
    if !a.options.is_empty() && !a.options.starts_with('-') {
        return Err(GenError::new(
            "auto.home",
            "automount",
            "options",
            "must start with '-' (autofs options)",
        ));
    }
    let mut out = String::from("# Managed by keel (service automount): each user's home on its HFS.\n");
    let mut users = input.users.clone();
    users.sort_by(|a, b| a.login.cmp(&b.login));
    for u in users {
        // A user's home is on the machine with the role `hfs/N`, never on whatever machine is
        // named like it; a user whose HFS has no machine yet gets no entry (the task's notes say so).
        let Some((n, hfs)) = u.hfs.and_then(|n| Some((n, *input.hfs_servers.get(&n)?))) else {
            continue;
        };
        let server = a
            .server
            .replace("{hfs}", &n.to_string())
            .replace("{host}", hfs.hostname.as_str())
            .replace("{ip}", &hfs.ip.to_string());
        let valid = keel_model::propagation::check_fqdn("server", &server).is_ok()
            || server.parse::<std::net::Ipv4Addr>().is_ok();
        if !valid {
            return Err(GenError::new(
                "auto.home",
                u.login.as_str(),
                "automount.server",
                format!("{server:?} is neither a host name nor an IPv4 address"),
            ));
        }
        let sep = if a.options.is_empty() { "" } else { " " };
        let _ = writeln!(
            out,
            "{}{sep}{} {server}:{}/{}",
            u.login, a.options, a.export_root, u.login
        );
    }
    Ok(vec![file("auto.home", 0o644, out)])
}
