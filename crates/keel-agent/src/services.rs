//! What each service does to the host: from a checked bundle and the host's current files to the
//! list of file changes. Built-ins merge with what the host already has; any other service's files
//! go to its directory.

use std::collections::BTreeMap;
use std::path::PathBuf;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use keel_bundle::Bundle;
use keel_model::service;

use crate::config::Config;
use crate::fsops::{read_target, Change};
use crate::out::{Code, Fail};

/// What the agent remembers per (facility, service) — itself one of the run's targets.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct State {
    pub(crate) serial: u64,
    pub(crate) digest: String,
    /// Names keel put on the host, by file ("passwd" → logins, "files" → paths, …): what the next
    /// run may replace or remove. Everything else on the host is the host's own.
    #[serde(default)]
    pub(crate) managed: BTreeMap<String, Vec<String>>,
}

/// A home directory to create if it is missing.
#[derive(Debug, Clone)]
pub(crate) struct Home {
    pub(crate) path: PathBuf,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) mode: u32,
}

/// The changes a run makes.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub(crate) changes: Vec<Change>,
    pub(crate) managed: BTreeMap<String, Vec<String>>,
    pub(crate) homes: Vec<Home>,
    /// What the run chose to leave undone, said in its output (e.g. a host group it lacks).
    pub(crate) notes: Vec<String>,
}

fn data_err(msg: impl Into<String>) -> Fail {
    Fail::new(Code::ServiceData, msg)
}

fn text<'a>(b: &'a Bundle, name: &str) -> Result<&'a str, Fail> {
    let data = b
        .files
        .get(name)
        .ok_or_else(|| data_err(format!("the bundle has no {name:?} file")))?;
    std::str::from_utf8(data).map_err(|_| data_err(format!("{name} is not UTF-8")))
}

/// The host's files a run reads, each read and checked as UTF-8 once: a delta's base is read
/// back from them, then the plan merges into them.
#[derive(Default)]
pub(crate) struct HostFiles(std::cell::RefCell<HashMap<PathBuf, Option<std::rc::Rc<String>>>>);

impl HostFiles {
    /// A target as text (`None`: it does not exist), or why not.
    fn text(&self, cfg: &Config, target: &str) -> Result<Option<std::rc::Rc<String>>, Fail> {
        let path = cfg.target(target);
        if let Some(hit) = self.0.borrow().get(&path) {
            return Ok(hit.clone());
        }
        let data = read_target(&path)?
            .map(|b| String::from_utf8(b).map_err(|_| data_err(format!("{target} is not UTF-8"))))
            .transpose()?
            .map(std::rc::Rc::new);
        self.0.borrow_mut().insert(path, data.clone());
        Ok(data)
    }
}

pub(crate) fn plan(cfg: &Config, b: &Bundle, state: &State, disk: &HostFiles) -> Result<Plan, Fail> {
    match b.manifest.service.as_str() {
        service::PASSWD => passwd(cfg, b, state, disk),
        service::HOMES => homes(cfg, b),
        s => match BLOCKS.iter().find(|(name, ..)| *name == s) {
            Some((_, file, target, mode)) => block(cfg, b, (file, target, *mode), disk),
            None => custom(cfg, b, state),
        },
    }
}

/// The account files of the passwd service: bundle file, fields per line, target, mode.
const ACCOUNT_FILES: [(&str, usize, &str, u32); 3] = [
    ("passwd", 7, "/etc/passwd", 0o644),
    ("group", 4, "/etc/group", 0o644),
    ("shadow", 9, "/etc/shadow", 0o640),
];

/// The marker-block services: service, bundle file, target, mode.
const BLOCKS: [(&str, &str, &str, u32); 3] = [
    (
        service::ROOT_SSH,
        "authorized_keys",
        "/root/.ssh/authorized_keys",
        0o600,
    ),
    (service::HOSTS, "hosts", "/etc/hosts", 0o644),
    (service::AUTOMOUNT, "auto.home", "/etc/auto.home", 0o644),
];

/// The file `path` of `service` as keel last wrote it, read back from the host as it is now —
/// a delta's base (`keel_model::service::patchable` says which files have one): keel's lines of
/// an account file (the names the state says it manages, in the file's order), the lines of a
/// marker block, a custom service's file. `None`: this host holds no such file. A hand edit of
/// keel's lines shows here, so the delta is refused and the full state sent.
pub(crate) fn held(
    cfg: &Config,
    service: &str,
    path: &str,
    state: &State,
    disk: &HostFiles,
) -> Result<Option<Vec<u8>>, Fail> {
    if !service::patchable(service, path) {
        return Ok(None);
    }
    let read = |target: &str| disk.text(cfg, target);
    if service == service::PASSWD {
        let Some((_, _, target, _)) = ACCOUNT_FILES.iter().find(|(f, ..)| *f == path) else {
            return Ok(None);
        };
        let Some(current) = read(target)? else { return Ok(None) };
        let managed = state.managed.get(path).map_or(&[][..], Vec::as_slice);
        return Ok(keel_lines(&current, managed).map(String::into_bytes));
    }
    if let Some((_, _, target, _)) = BLOCKS.iter().find(|(s, ..)| *s == service) {
        return Ok(read(target)?
            .and_then(|current| block_body(&current))
            .map(String::into_bytes));
    }
    let managed = state.managed.get("files").is_some_and(|f| f.iter().any(|p| p == path));
    if !managed || keel_bundle::check_rel_path(path).is_err() {
        return Ok(None);
    }
    read_target(&cfg.service_dir(service).join(path))
}

/// keel's lines of an account file, in the order keel wrote them: the lines named `managed[0]`,
/// `managed[1]`… in turn, skipping the host's own (any line whose name is not the next expected).
/// `None` if some name is missing. Names are compared in order, not looked up in a set: a
/// one-line change at 10,000 accounts should not hash 10,000 names.
fn keel_lines(current: &str, managed: &[String]) -> Option<String> {
    let mut out = String::with_capacity(current.len());
    let mut next = managed.iter().peekable();
    for (name, line) in lines(current) {
        if next.peek().is_some_and(|n| n.as_str() == name) {
            next.next();
            out.push_str(line);
            out.push('\n');
        }
    }
    next.peek().is_none().then_some(out)
}

/// The lines between keel's markers, each ended by a newline; `None` without a whole block.
fn block_body(current: &str) -> Option<String> {
    split_block(current).ok()?.1
}

/// A marker-block file's lines before keel's block, inside it (`None`: there is no block) and
/// after it, each ended by a newline; `Err` when the block is opened and never closed.
fn split_block(current: &str) -> Result<(String, Option<String>, String), ()> {
    let (mut head, mut body, mut tail) = (String::new(), None::<String>, String::new());
    let mut closed = false;
    for line in current.lines() {
        let part = match (&mut body, closed) {
            (None, _) if line == BEGIN => {
                body = Some(String::new());
                continue;
            }
            (Some(_), false) if line == END => {
                closed = true;
                continue;
            }
            (None, _) => &mut head,
            (Some(b), false) => b,
            (Some(_), true) => &mut tail,
        };
        part.push_str(line);
        part.push('\n');
    }
    if body.is_some() && !closed {
        return Err(());
    }
    Ok((head, body, tail))
}

/// A `name:…` line file (passwd, group, shadow) split into (name, line).
fn lines(s: &str) -> Vec<(&str, &str)> {
    s.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| (l.split(':').next().unwrap_or(""), l))
        .collect()
}

fn check_account_line(file: &str, line: &str, fields: usize) -> Result<(), Fail> {
    if !well_formed(line, fields) {
        return Err(data_err(format!("{file}: malformed line {line:?}")));
    }
    Ok(())
}

/// `fields` colon-separated fields, a name of `[a-z_][a-z0-9_.-]*` first, and no control
/// character (`char::is_control`: U+0000–U+001F and U+007F–U+009F). Passes over the bytes that
/// the compiler vectorizes: this runs on every line of every account file (30,000 lines for
/// 10,000 users), and a `char` walk was a sixth of an apply.
fn well_formed(line: &str, fields: usize) -> bool {
    let bytes = line.as_bytes();
    let name = &bytes[..bytes.iter().position(|&c| c == b':').unwrap_or(bytes.len())];
    let name_ok = name.first().is_some_and(|c| c.is_ascii_lowercase() || *c == b'_')
        && name
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-' | b'.'));
    let colons: usize = bytes.iter().map(|&c| usize::from(c == b':')).sum();
    let ascii_control = bytes.iter().fold(false, |any, &c| any | (c < 0x20) | (c == 0x7f));
    // U+0080–U+009F are C2 80–C2 9F in UTF-8; C2 is never a continuation byte.
    let c1_control = !line.is_ascii() && bytes.windows(2).any(|w| w[0] == 0xc2 && (0x80..=0x9f).contains(&w[1]));
    name_ok && colons + 1 == fields && !ascii_control && !c1_control
}

/// The host's own lines of an account file (those keel did not write last time), and which of
/// their names keel's new lines also have. Both are built from the host's lines, a handful, never
/// from keel's thousands: the merge and the id check look keel's names up in them.
struct HostLines<'a> {
    own: Vec<(&'a str, &'a str)>,
    /// Keel's new line for each of the host's names it also has.
    shared: HashMap<&'a str, &'a str>,
}

impl<'a> HostLines<'a> {
    fn of(current: &'a str, before: &HashSet<&str>, new: &[(&'a str, &'a str)]) -> Self {
        let own: Vec<_> = lines(current)
            .into_iter()
            .filter(|(n, _)| !before.contains(n))
            .collect();
        let names: HashSet<&str> = own.iter().map(|(n, _)| *n).collect();
        let shared = new.iter().copied().filter(|(n, _)| names.contains(n)).collect();
        Self { own, shared }
    }
}

/// Merges keel's entries into one of the host's account files. Lines keel did not write are
/// kept in place; keel's follow, in the bundle's order. A name the host already has for itself is
/// refused unless the line is identical (then keel adopts it).
fn merge_accounts(current: &str, host: &HostLines, new: &[(&str, &str)], file: &str) -> Result<String, Fail> {
    let mut out = String::with_capacity(current.len() + new.iter().map(|(_, l)| l.len() + 1).sum::<usize>());
    for (name, line) in &host.own {
        match host.shared.get(name) {
            Some(l) if l == line => continue, // identical: adopted
            Some(_) => {
                return Err(data_err(format!(
                    "{file}: {name:?} exists on this host and is not keel's; refusing to replace it"
                )))
            }
            None => {}
        }
        out.push_str(line);
        out.push('\n');
    }
    for (_, line) in new {
        out.push_str(line);
        out.push('\n');
    }
    Ok(out)
}

/// Numeric ids (field 2 of passwd and group) of kept host lines and of keel's: uid 0 and
/// duplicates are refused unless the host's policy allows them.
fn check_ids(cfg: &Config, file: &str, host: &HostLines, new: &[(&str, &str)]) -> Result<(), Fail> {
    let id = |line: &str| -> Result<u32, Fail> {
        line.split(':')
            .nth(2)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| data_err(format!("{file}: malformed id in {line:?}")))
    };
    // id → (name, whether it is the host's own); formatted only for an error.
    let mut seen: HashMap<u32, (&str, bool)> = HashMap::with_capacity(new.len() + host.own.len());
    for (name, line) in &host.own {
        if !host.shared.contains_key(name) {
            if let Ok(i) = id(line) {
                seen.insert(i, (name, true));
            }
        }
    }
    for (name, line) in new {
        let i = id(line)?;
        if i == 0 && !(file == "passwd" && cfg.passwd.allow_uid0) {
            return Err(data_err(format!(
                "{file}: {name:?} has id 0; refused (passwd.allow_uid0 = true allows it)"
            )));
        }
        if let Some((other, host_own)) = seen.insert(i, (name, false)) {
            if !cfg.passwd.allow_duplicate_uids {
                let whose = if host_own { "the host's " } else { "" };
                return Err(data_err(format!(
                    "{file}: {name:?} has id {i}, already used by {whose}{other:?}; refused (passwd.allow_duplicate_uids = true allows it)"
                )));
            }
        }
    }
    Ok(())
}

/// The account files' own consistency, whatever the server sent (invariant 10, third
/// layer): a name once per file, and every name of shadow and every member of a group an account
/// of passwd. A second `admin1` line slipped into shadow through some field would otherwise be
/// the one `getspnam` finds first.
fn check_accounts(passwd: &[(&str, &str)], group: &[(&str, &str)], shadow: &[(&str, &str)]) -> Result<(), Fail> {
    let mut accounts = HashSet::with_capacity(passwd.len());
    for (file, list) in [("passwd", passwd), ("group", group), ("shadow", shadow)] {
        let mut seen = HashSet::with_capacity(list.len());
        for (name, _) in list {
            if !seen.insert(*name) {
                return Err(data_err(format!("{file}: {name:?} appears twice; refused")));
            }
        }
        if file == "passwd" {
            accounts = seen;
        }
    }
    for (name, _) in shadow {
        if !accounts.contains(name) {
            return Err(data_err(format!(
                "shadow: {name:?} is not an account of passwd; refused"
            )));
        }
    }
    for (name, line) in group {
        let members = line.rsplit(':').next().unwrap_or("");
        for m in members.split(',').filter(|m| !m.is_empty()) {
            if !accounts.contains(m) {
                return Err(data_err(format!(
                    "group: {name:?} lists {m:?}, which is not an account of passwd; refused"
                )));
            }
        }
    }
    Ok(())
}

fn passwd(cfg: &Config, b: &Bundle, state: &State, disk: &HostFiles) -> Result<Plan, Fail> {
    let mut plan = Plan::default();
    let files = ACCOUNT_FILES;
    let mut parsed = Vec::with_capacity(files.len());
    for (file, fields, _, _) in files {
        let all = text(b, file)?;
        for line in changed_lines(b, file, all) {
            check_account_line(file, line, fields)?;
        }
        parsed.push(lines(all));
    }
    check_accounts(&parsed[0], &parsed[1], &parsed[2])?;
    let joins = host_group_joins(b, &parsed[0], &parsed[1])?;
    for ((file, _, target, mode), new) in files.into_iter().zip(parsed) {
        let path = cfg.target(target);
        let current = disk.text(cfg, target)?;
        let on_disk = current.as_deref().map_or("", String::as_str);
        // The host's own groups with keel's users joined (sudo, wheel…); the rest as on disk.
        let current = if file == "group" {
            join_host_groups(on_disk, &joins, state, &new, &mut plan)
        } else {
            on_disk.to_owned()
        };
        let before: HashSet<&str> = state
            .managed
            .get(file)
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        let host = HostLines::of(&current, &before, &new);
        if file != "shadow" {
            check_ids(cfg, file, &host, &new)?;
        }
        let merged = merge_accounts(&current, &host, &new, file)?;
        plan.managed
            .insert(file.into(), new.iter().map(|(n, _)| (*n).to_owned()).collect());
        if merged.as_bytes() != on_disk.as_bytes() {
            plan.changes.push(Change {
                target: path,
                data: Some(merged.into_bytes()),
                mode,
            });
        }
    }
    Ok(plan)
}

/// The lines of `file` (all of it, `all`) that this run must check one by one: for a delta's
/// file, those its patch added — the rest is the base this host holds, checked line by line when
/// it was applied (the same bytes pass the same checks); the checks across lines (names, ids,
/// members) still see the whole file. For a whole file, every line.
fn changed_lines<'a>(b: &Bundle, file: &str, all: &'a str) -> Vec<&'a str> {
    let added = b
        .added
        .get(file)
        .and_then(|ranges| ranges.iter().map(|r| all.get(r.clone())).collect::<Option<Vec<_>>>());
    added
        .unwrap_or_else(|| vec![all])
        .into_iter()
        .flat_map(str::lines)
        .filter(|l| !l.trim().is_empty())
        .collect()
}

/// The bundle's `group-members` (`group:login,login`; absent from older servers' bundles): each
/// group once, never one of keel's own groups, each login an account of the bundle's passwd.
fn host_group_joins<'a>(
    b: &'a Bundle,
    passwd: &[(&str, &str)],
    group: &[(&str, &str)],
) -> Result<Vec<(&'a str, Vec<&'a str>)>, Fail> {
    if !b.files.contains_key("group-members") {
        return Ok(Vec::new());
    }
    let accounts: HashSet<&str> = passwd.iter().map(|(n, _)| *n).collect();
    let own: HashSet<&str> = group.iter().map(|(n, _)| *n).collect();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (name, line) in lines(text(b, "group-members")?) {
        check_account_line("group-members", line, 2)?;
        if own.contains(name) || !seen.insert(name) {
            return Err(data_err(format!(
                "group-members: {name:?} is keel's own group or listed twice; refused"
            )));
        }
        let members: Vec<&str> = line[name.len() + 1..].split(',').filter(|m| !m.is_empty()).collect();
        if let Some(m) = members.iter().find(|m| !accounts.contains(*m)) {
            return Err(data_err(format!(
                "group-members: {name:?} lists {m:?}, which is not an account of passwd; refused"
            )));
        }
        out.push((name, members));
    }
    Ok(out)
}

/// Puts keel's users into the host's own groups (`sudo`, `wheel`…), keeping the members the host
/// put there itself and taking out those keel added before and no longer lists. The pairs keel is
/// now answerable for (`group:login`, the ones the host did not have itself) are remembered, so
/// the next run can take them out again; a group the host lacks is skipped with a note.
fn join_host_groups(
    current: &str,
    joins: &[(&str, Vec<&str>)],
    state: &State,
    keel_lines: &[(&str, &str)],
    plan: &mut Plan,
) -> String {
    let added_before: HashSet<&str> = state
        .managed
        .get("group-members")
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect();
    let keel_groups: HashSet<&str> = state
        .managed
        .get("group")
        .into_iter()
        .flatten()
        .map(String::as_str)
        .chain(keel_lines.iter().map(|(n, _)| *n))
        .collect();
    let mut added_now = Vec::new();
    let mut found = HashSet::new();
    let mut out = String::with_capacity(current.len() + 64);
    for line in current.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        let name = fields[0];
        let wanted = joins.iter().find(|(g, _)| *g == name).map(|(_, m)| m.as_slice());
        let touched = wanted.is_some()
            || added_before
                .iter()
                .any(|p| p.split_once(':').is_some_and(|(g, _)| g == name));
        if fields.len() != 4 || keel_groups.contains(name) || !touched {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        found.insert(name);
        let mut members: Vec<&str> = fields[3]
            .split(',')
            .filter(|m| !m.is_empty() && !added_before.contains(format!("{name}:{m}").as_str()))
            .collect();
        for m in wanted.unwrap_or_default() {
            if !members.contains(m) {
                members.push(m);
                added_now.push(format!("{name}:{m}"));
            }
        }
        out.push_str(&format!(
            "{}:{}:{}:{}\n",
            fields[0],
            fields[1],
            fields[2],
            members.join(",")
        ));
    }
    for (g, _) in joins
        .iter()
        .filter(|(g, _)| !found.contains(g) && !keel_groups.contains(g))
    {
        plan.notes
            .push(format!("group-members: this host has no group {g:?}; skipped"));
    }
    plan.managed.insert("group-members".into(), added_now);
    out
}

/// One line of a marker-block file, re-parsed: never a marker (it would end keel's block early
/// and leave the rest as the host's own), never a control character, and of the file's grammar —
/// hosts: an IPv4 address then host names; authorized_keys: a comment or a key of a known type.
fn check_block_line(file: &str, line: &str) -> Result<(), Fail> {
    let bad = |why: &str| {
        data_err(format!(
            "{file}: {why}: {:?}",
            line.chars().take(80).collect::<String>()
        ))
    };
    if line == BEGIN || line == END || line.chars().any(char::is_control) {
        return Err(bad("a line is a marker or holds a control character"));
    }
    if line.trim().is_empty() || line.starts_with('#') {
        return Ok(());
    }
    let mut words = line.split(' ');
    let ok = match file {
        "hosts" => {
            words.next().is_some_and(|ip| ip.parse::<std::net::Ipv4Addr>().is_ok())
                && words.all(|n| keel_bundle::Hostname::parse("hosts", n).is_ok())
        }
        "auto.home" => automount_entry(&words.collect::<Vec<_>>()),
        _ => keel_bundle::check_ssh_key(line).is_ok(),
    };
    if ok {
        Ok(())
    } else {
        Err(bad("malformed line"))
    }
}

/// An `auto.home` entry as keel writes it: a login, autofs options (`-…`) or none, and
/// `server:/absolute/path` where the server is a host name and the path a plain one (no `..`, no
/// spaces, nothing autofs would expand: `&`, `$`).
fn automount_entry(words: &[&str]) -> bool {
    let (login, location) = match words {
        [login, opts, location] if opts.starts_with('-') && opts.len() > 1 && !opts.contains(['$', '&']) => {
            (login, location)
        }
        [login, location] => (login, location),
        _ => return false,
    };
    let login_ok = login
        .bytes()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == b'_')
        && login
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_');
    let Some((server, path)) = location.split_once(':') else {
        return false;
    };
    let path_ok = path
        .strip_prefix('/')
        .is_some_and(|rel| keel_bundle::check_rel_path(rel).is_ok() && !rel.contains(['&', '$', '\\']));
    login_ok && keel_bundle::Hostname::parse("server", server).is_ok() && path_ok
}

const BEGIN: &str = "# BEGIN keel: lines up to END keel are rewritten by keel; edit outside them";
const END: &str = "# END keel";

/// Puts the bundle file between keel's markers in a host file, keeping every line outside them.
fn block(cfg: &Config, b: &Bundle, (file, target, mode): (&str, &str, u32), disk: &HostFiles) -> Result<Plan, Fail> {
    let body = text(b, file)?;
    for line in body.lines() {
        check_block_line(file, line)?;
    }
    let current = disk.text(cfg, target)?;
    let current = current.as_deref().map_or("", String::as_str);
    let (head, _, tail) = split_block(current)
        .map_err(|()| data_err(format!("{target}: \"{BEGIN}\" has no \"{END}\"; fix the file by hand")))?;
    let merged = format!("{head}{BEGIN}\n{body}{END}\n{tail}");
    let mut plan = Plan::default();
    if merged != current {
        plan.changes.push(Change {
            target: cfg.target(target),
            data: Some(merged.into_bytes()),
            mode,
        });
    }
    Ok(plan)
}

/// `path uid gid mode` lines: homes to create when missing.
fn homes(cfg: &Config, b: &Bundle) -> Result<Plan, Fail> {
    let mut plan = Plan::default();
    for line in text(b, "homes")?.lines().filter(|l| !l.trim().is_empty()) {
        let bad = || data_err(format!("homes: malformed line {line:?}"));
        let parts: Vec<&str> = line.split(' ').collect();
        let [path, uid, gid, mode] = parts[..] else {
            return Err(bad());
        };
        let rel = path.strip_prefix('/').ok_or_else(bad)?;
        keel_bundle::check_rel_path(rel).map_err(|e| data_err(format!("homes: {path:?}: {e}")))?;
        let uid: u32 = uid.parse().map_err(|_| bad())?;
        let gid: u32 = gid.parse().map_err(|_| bad())?;
        let mode = u32::from_str_radix(mode, 8).map_err(|_| bad())?;
        if uid == 0 || mode > 0o777 {
            return Err(bad());
        }
        plan.homes.push(Home {
            path: cfg.target(path),
            uid,
            gid,
            mode,
        });
    }
    Ok(plan)
}

/// Any other service: its files, as they are, in its directory; files of the last run that are
/// no longer in the bundle are removed.
fn custom(cfg: &Config, b: &Bundle, state: &State) -> Result<Plan, Fail> {
    let dir = cfg.service_dir(&b.manifest.service);
    let mut plan = Plan::default();
    for f in &b.manifest.files {
        let path = dir.join(&f.path);
        let data = &b.files[&f.path];
        let same = read_target(&path)?.is_some_and(|cur| &cur == data)
            && std::fs::symlink_metadata(&path)
                .is_ok_and(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777 == f.mode);
        if !same {
            plan.changes.push(Change {
                target: path,
                data: Some(data.to_vec()),
                mode: f.mode,
            });
        }
    }
    let now: Vec<String> = b.manifest.files.iter().map(|f| f.path.clone()).collect();
    for old in state.managed.get("files").into_iter().flatten() {
        if !now.contains(old) && keel_bundle::check_rel_path(old).is_ok() {
            plan.changes.push(Change {
                target: dir.join(old),
                data: None,
                mode: 0,
            });
        }
    }
    plan.managed.insert("files".into(), now);
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    /// The definition `well_formed` computes in one pass.
    fn reference(line: &str, fields: usize) -> bool {
        let name = line.split(':').next().unwrap_or("");
        let name_ok = name.bytes().next().is_some_and(|c| c.is_ascii_lowercase() || c == b'_')
            && name
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-' | b'.'));
        name_ok && !line.chars().any(char::is_control) && line.matches(':').count() + 1 == fields
    }

    #[test]
    fn account_lines() {
        for (line, ok) in [
            ("alice:x:1000:1000:Alice:/home/alice:/bin/bash", true),
            ("alice:x:1000:1000:Al\u{85}ce:/home/alice:/bin/bash", false),
            ("alice:x:1000:1000:Al\u{a0}ce:/home/alice:/bin/bash", true),
            ("alice:x:1000:1000:Alice\n:/home/alice:/bin/bash", false),
            ("Alice:x:1000:1000:Alice:/home/alice:/bin/bash", false),
            ("alice:x:1000:1000:Alice:/home/alice", false),
        ] {
            assert_eq!(super::well_formed(line, 7), ok, "{line:?}");
            assert_eq!(reference(line, 7), ok, "{line:?}");
        }
    }

    proptest! {
        #[test]
        fn one_pass_agrees_with_the_definition(
            name in "[a-zA-Z_:.-][a-z0-9_:.-]{0,6}",
            before in "[a-z:é ]{0,12}",
            odd in "[\\x00-\\x20\\x7e-\\u{a1}\\u{2028}\\u{feff}]?",
            after in "[a-z:é ]{0,12}",
            fields in proptest::option::of(1usize..9),
        ) {
            // One odd character at most, and as often as not the right number of fields, so
            // that each rule decides some cases alone.
            let line = format!("{name}{before}{odd}{after}");
            let fields = fields.unwrap_or(line.matches(':').count() + 1);
            prop_assert_eq!(super::well_formed(&line, fields), reference(&line, fields));
        }
    }
}
