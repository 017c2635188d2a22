//! `keel users …`: list, show, remove, and the batch import of prologin's `batchimport`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use keel_client::{Client, ClientError};
use keel_model::login::{base_login, LoginAllocator, RESERVED_LOGINS};
use keel_model::{Group, Login, ValidationError};
use serde_json::{json, Value};

use crate::outln;
use crate::output::{print_json, table};
use keel_client::Records;

#[derive(Debug, Subcommand)]
pub enum UsersCmd {
    /// List users (filters as FIELD=VALUE, e.g. group=orga, login__startswith=j).
    #[command(alias = "ls")]
    List { filters: Vec<String> },
    /// Show one user.
    Show { login: String },
    /// Add one user: the login from the names by prologin's rule (or --login), the uid the next
    /// of the group's pool. With --sheet, a password is generated and written on a one-person
    /// sheet (PREFIX.tsv and PREFIX.pdf, 0600); without it the account has no password until
    /// `keel users sheet` or `keel passwd` gives one.
    Add(AddArgs),
    /// Change a user's names, shell, SSH keys or home server (login, group and uid are fixed).
    Edit(EditArgs),
    /// Remove a user (its uid is never given again).
    #[command(alias = "delete")]
    Rm { login: String },
    /// Import users from a file, all or nothing, like prologin's batchimport.
    Import(ImportArgs),
    /// Issue fresh passwords and write the sheets (prologin's pwdsheetdata step). Leaves alone
    /// users who changed their own password, unless --force; asks before resetting.
    Sheet(SheetArgs),
    /// Move a user's home to another home file server: the server runs the site's
    /// `[homes] move_hook` (e.g. rsync) and records the new HFS only if it succeeds
    /// (docs/homes.md). A user without a home yet just gets the HFS.
    MoveHome {
        login: String,
        /// The HFS number the home moves to.
        #[arg(long)]
        hfs: u32,
        /// The files were moved by other means: record the new HFS without running the hook.
        #[arg(long)]
        no_copy: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// The group: user, orga or root.
    #[arg(long = "type", default_value = "user")]
    pub group: String,
    #[arg(long)]
    pub firstname: Option<String>,
    #[arg(long)]
    pub lastname: Option<String>,
    /// The login (default: from the first and last names, as an import makes it).
    #[arg(long)]
    pub login: Option<String>,
    #[arg(long)]
    pub shell: Option<String>,
    /// An SSH public key (repeatable).
    #[arg(long = "ssh-key")]
    pub ssh_keys: Vec<String>,
    /// The home file server.
    #[arg(long)]
    pub hfs: Option<u32>,
    /// Generate a password and write it on a sheet: PREFIX.tsv and PREFIX.pdf (mode 0600).
    #[arg(long, value_name = "PREFIX")]
    pub sheet: Option<PathBuf>,
    /// Length of the generated password.
    #[arg(long, default_value_t = 8)]
    pub pwdlen: usize,
}

#[derive(Debug, clap::Args)]
pub struct EditArgs {
    pub login: String,
    #[arg(long)]
    pub firstname: Option<String>,
    #[arg(long)]
    pub lastname: Option<String>,
    #[arg(long)]
    pub shell: Option<String>,
    /// The SSH public keys (repeatable; replaces the list; `--ssh-key ''` empties it).
    #[arg(long = "ssh-key")]
    pub ssh_keys: Option<Vec<String>>,
    /// The home file server, for a user who has none yet (a home moves with `move-home`).
    #[arg(long)]
    pub hfs: Option<u32>,
}

#[derive(Debug, clap::Args)]
pub struct SheetArgs {
    /// The group: user, orga or root.
    #[arg(long = "type")]
    pub group: String,
    /// These users (comma-separated logins).
    #[arg(long, value_delimiter = ',', conflicts_with = "all")]
    pub users: Vec<String>,
    /// Every user of the group.
    #[arg(long)]
    pub all: bool,
    /// Write PREFIX.tsv and PREFIX.pdf (mode 0600).
    #[arg(long, value_name = "PREFIX")]
    pub sheet: PathBuf,
    /// Also reset users who changed their own password.
    #[arg(long)]
    pub force: bool,
    /// Do not ask for confirmation (for scripts).
    #[arg(long)]
    pub yes: bool,
    /// Length of the generated passwords.
    #[arg(long, default_value_t = 8)]
    pub pwdlen: usize,
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// One person per line: `first name<TAB>last name` (or a login with --logins), optionally
    /// ending in `:password` (with --passwords). UTF-8; a BOM and CRLF are accepted.
    pub file: PathBuf,
    /// The group: user, orga or root.
    #[arg(long = "type", default_value = "user")]
    pub group: String,
    /// Each line is a login (first and last name default to it).
    #[arg(long)]
    pub logins: bool,
    /// Each line ends with `:password` (otherwise passwords are generated).
    #[arg(long)]
    pub passwords: bool,
    /// Length of generated passwords.
    #[arg(long, default_value_t = 8)]
    pub pwdlen: usize,
    /// Update users that already exist instead of refusing the file.
    #[arg(long, conflicts_with = "ignore")]
    pub update: bool,
    /// Skip users that already exist.
    #[arg(long)]
    pub ignore: bool,
    /// Show what would happen; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// More logins never to hand out, besides root and the usual system accounts (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub reserved: Vec<String>,
    /// Write the password sheets PREFIX.tsv (real name, login, password) and PREFIX.pdf (printable
    /// cards), mode 0600. Only at import do passwords exist in clear: keel keeps only their hashes.
    #[arg(long, value_name = "PREFIX")]
    pub sheet: Option<PathBuf>,
    /// The home file server of everyone in the file (e.g. one file per room, each with its HFS);
    /// without it, a user's HFS is set at their first login, from the machine's.
    #[arg(long)]
    pub hfs: Option<u32>,
}

pub async fn run(c: &Client, cmd: &UsersCmd, json: bool) -> anyhow::Result<()> {
    match cmd {
        UsersCmd::List { filters } => {
            let list: Vec<Value> = c.list(Records::Users, &super::filters(filters)?).await?;
            print_users(&list, json)
        }
        UsersCmd::Show { login } => {
            let u: Value = c.show(Records::Users, &[login]).await?;
            print_users(&[u], json)
        }
        UsersCmd::Add(args) => add(c, args, json).await,
        UsersCmd::Edit(args) => edit(c, args, json).await,
        UsersCmd::Rm { login } => {
            let _: Value = c.remove(Records::Users, &[login]).await?;
            if !json {
                outln!("removed user {login}")?;
            }
            Ok(())
        }
        UsersCmd::Import(args) => import(c, args, json).await,
        UsersCmd::Sheet(args) => sheet(c, args, json).await,
        UsersCmd::MoveHome { login, hfs, no_copy } => {
            let u = c.move_home(login, *hfs, !no_copy).await?;
            if json {
                return print_json(&u);
            }
            outln!("{login}'s home is on hfs{hfs}")?;
            Ok(())
        }
    }
}

fn print_users(list: &[Value], json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&list);
    }
    let s = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
    let rows = list
        .iter()
        .map(|u| {
            let keys = u["ssh_keys"].as_array().map_or(0, Vec::len);
            vec![
                s(&u["login"]),
                s(&u["uid"]),
                s(&u["group"]),
                format!("{} {}", s(&u["firstname"]), s(&u["lastname"])),
                s(&u["shell"]),
                keys.to_string(),
                s(&u["has_password"]),
                u["hfs"].as_u64().map_or_else(|| "-".to_owned(), |n| format!("hfs{n}")),
            ]
        })
        .collect();
    outln!(
        "{}",
        table(
            &["login", "uid", "group", "name", "shell", "ssh keys", "password", "home"],
            rows
        )
    )?;
    Ok(())
}

/// One line of an import file, understood.
#[derive(Debug, Clone)]
struct Person {
    line: usize,
    first: String,
    last: String,
    login: String,
    password: String,
}

async fn import(c: &Client, args: &ImportArgs, json: bool) -> anyhow::Result<()> {
    let group: Group = args
        .group
        .parse()
        .map_err(|e: ValidationError| anyhow::anyhow!("--type: {}", e.message))?;
    let text = std::fs::read_to_string(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?;
    let existing: Vec<Value> = c.all(Records::Users).await?;
    let existing = existing.iter().filter_map(|u| u["login"].as_str().map(str::to_owned));
    let reserved: Vec<&str> = RESERVED_LOGINS
        .iter()
        .copied()
        .chain(args.reserved.iter().map(String::as_str))
        .collect();
    let people =
        parse_people(&text, args, LoginAllocator::new(existing, &reserved)).map_err(|errs| report(&args.file, errs))?;
    let hashes = if args.dry_run {
        vec![String::new(); people.len()]
    } else {
        hash_all(&people)?
    };
    let rows: Vec<Value> = people
        .iter()
        .zip(&hashes)
        .map(|(p, h)| {
            let mut row = json!({"line": p.line, "login": p.login, "firstname": p.first, "lastname": p.last, "group": group.as_str()});
            if !h.is_empty() {
                row["password_hash"] = json!(h);
            }
            if let Some(n) = args.hfs {
                row["hfs"] = json!(n);
            }
            row
        })
        .collect();
    let sheet = match (&args.sheet, args.dry_run) {
        (Some(prefix), false) => Some(write_sheet(prefix, &people)?),
        _ => None,
    };
    let on_existing = if args.update {
        "update"
    } else if args.ignore {
        "ignore"
    } else {
        "refuse"
    };
    let body = json!({"on_existing": on_existing, "dry_run": args.dry_run, "users": rows});
    // On any error the sheets are dropped, which removes them: their passwords were never set.
    let answer = match c.import_users(&body).await {
        Ok(a) => a,
        Err(ClientError::Api { errors, .. }) if !errors.is_empty() => return Err(report(&args.file, errors)),
        Err(e) => return Err(e.into()),
    };
    let written = match sheet {
        Some(s) => s.commit()?,
        None => Vec::new(),
    };
    summarize(&answer, args, &written, json)
}

/// `keel users add`: one user, with a one-person password sheet if asked.
async fn add(c: &Client, args: &AddArgs, json: bool) -> anyhow::Result<()> {
    let group: Group = args
        .group
        .parse()
        .map_err(|e: ValidationError| anyhow::anyhow!("--type: {}", e.message))?;
    let login = match (&args.login, &args.firstname, &args.lastname) {
        (Some(l), _, _) => Login::parse("login", l)
            .map_err(|e| anyhow::anyhow!("--login: {}", e.message))?
            .to_string(),
        (None, Some(first), Some(last)) => {
            let base = base_login(first, last)
                .ok_or_else(|| anyhow::anyhow!("the names give no login (no Latin letter): give --login"))?;
            let existing: Vec<Value> = c.all(Records::Users).await?;
            let existing = existing.iter().filter_map(|u| u["login"].as_str().map(str::to_owned));
            LoginAllocator::new(existing, RESERVED_LOGINS).take(&base)
        }
        _ => anyhow::bail!("give --firstname and --lastname (the login is made from them), or --login"),
    };
    let mut body = json!({
        "login": login,
        "group": group.as_str(),
        "firstname": args.firstname.clone().unwrap_or_else(|| login.clone()),
        "lastname": args.lastname.clone().unwrap_or_else(|| login.clone()),
    });
    if let Some(shell) = &args.shell {
        body["shell"] = json!(shell);
    }
    if !args.ssh_keys.is_empty() {
        body["ssh_keys"] = json!(args.ssh_keys);
    }
    if let Some(n) = args.hfs {
        body["hfs"] = json!(n);
    }
    let sheet = match &args.sheet {
        Some(prefix) => {
            let person = Person {
                line: 1,
                first: body["firstname"].as_str().unwrap_or_default().to_owned(),
                last: body["lastname"].as_str().unwrap_or_default().to_owned(),
                login: login.clone(),
                password: keel_password::generate(args.pwdlen)?,
            };
            body["password_hash"] = json!(hash_all(std::slice::from_ref(&person))?.remove(0));
            Some(write_sheet(prefix, &[person])?)
        }
        None => None,
    };
    // A refused user drops the sheet unwritten: its password was never set.
    let user: Value = c.create(Records::Users, &body).await?;
    let written = match sheet {
        Some(s) => s.commit()?,
        None => Vec::new(),
    };
    if json {
        return print_json(&user);
    }
    print_users(std::slice::from_ref(&user), false)?;
    for p in written {
        outln!("password sheet: {} (mode 0600)", p.display())?;
    }
    Ok(())
}

/// `keel users edit`: the fields given, nothing else.
async fn edit(c: &Client, args: &EditArgs, json: bool) -> anyhow::Result<()> {
    let mut body = serde_json::Map::new();
    for (k, v) in [
        ("firstname", &args.firstname),
        ("lastname", &args.lastname),
        ("shell", &args.shell),
    ] {
        if let Some(v) = v {
            body.insert(k.into(), json!(v));
        }
    }
    if let Some(keys) = &args.ssh_keys {
        let keys: Vec<&String> = keys.iter().filter(|k| !k.is_empty()).collect();
        body.insert("ssh_keys".into(), json!(keys));
    }
    if let Some(n) = args.hfs {
        body.insert("hfs".into(), json!(n));
    }
    anyhow::ensure!(!body.is_empty(), "nothing to change: give a field (see --help)");
    let user: Value = c.update(Records::Users, &[&args.login], &Value::Object(body)).await?;
    print_users(&[user], json)
}

async fn sheet(c: &Client, args: &SheetArgs, json: bool) -> anyhow::Result<()> {
    let group: Group = args
        .group
        .parse()
        .map_err(|e: ValidationError| anyhow::anyhow!("--type: {}", e.message))?;
    let members: Vec<Value> = c.list(Records::Users, &[("group", group.as_str())]).await?;
    let chosen: Vec<&Value> = if args.all {
        members.iter().collect()
    } else if args.users.is_empty() {
        anyhow::bail!("say which users: --users a,b or --all");
    } else {
        let missing: Vec<&String> = args
            .users
            .iter()
            .filter(|l| !members.iter().any(|u| u["login"] == l.as_str()))
            .collect();
        if !missing.is_empty() {
            anyhow::bail!(
                "no {group} user named {}",
                missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            );
        }
        members
            .iter()
            .filter(|u| args.users.iter().any(|l| u["login"] == l.as_str()))
            .collect()
    };
    let (reset, kept): (Vec<&Value>, Vec<&Value>) = chosen
        .into_iter()
        .partition(|u| args.force || u["password_changed"] != true);
    if reset.is_empty() {
        outln!(
            "nothing to do: {} user(s) chose their own password (--force to reset them too)",
            kept.len()
        )?;
        return Ok(());
    }
    confirm(reset.len(), kept.len(), group, args.yes)?;
    let text = |u: &Value, k: &str| u[k].as_str().unwrap_or("").to_owned();
    let people: Vec<Person> = reset
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let password = keel_password::generate(args.pwdlen)?;
            Ok(Person {
                line: i + 1,
                first: text(u, "firstname"),
                last: text(u, "lastname"),
                login: text(u, "login"),
                password,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let hashes = hash_all(&people)?;
    let rows: Vec<Value> = people
        .iter()
        .zip(&hashes)
        .map(|(p, h)| json!({"line": p.line, "login": p.login, "password_hash": h, "password_changed": false}))
        .collect();
    let sheets = write_sheet(&args.sheet, &people)?;
    let body = json!({"on_existing": "update", "users": rows});
    let answer = c.import_users(&body).await?;
    let written = sheets.commit()?;
    if json {
        return print_json(&answer);
    }
    outln!("reset {} passwords ({} left alone)", people.len(), kept.len())?;
    for p in written {
        outln!("password sheet: {} (mode 0600)", p.display())?;
    }
    Ok(())
}

/// Asks before resetting passwords: one command must not log out a room by accident.
fn confirm(n: usize, kept: usize, group: Group, yes: bool) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    eprintln!("about to reset {n} password(s) of group {group}; {kept} chosen by their users are left alone");
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("not resetting without confirmation: run on a terminal or add --yes");
    }
    eprint!("reset them? [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        anyhow::bail!("nothing changed")
    }
}

fn summarize(answer: &Value, args: &ImportArgs, sheets: &[PathBuf], json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(answer);
    }
    let n = |k: &str| answer[k].as_array().map_or(0, Vec::len);
    let verb = if args.dry_run { "would create" } else { "created" };
    outln!(
        "{verb} {} users, updated {}, ignored {} ({})",
        n("created"),
        n("updated"),
        n("ignored"),
        args.file.display()
    )?;
    if args.dry_run {
        for u in answer["created"].as_array().into_iter().flatten() {
            outln!(
                "  {}\t{} {}",
                u["login"].as_str().unwrap_or(""),
                u["firstname"].as_str().unwrap_or(""),
                u["lastname"].as_str().unwrap_or("")
            )?;
        }
    }
    for p in sheets {
        outln!("password sheet: {} (mode 0600)", p.display())?;
    }
    Ok(())
}

/// Reads every line; all errors are collected, each with its line number.
fn parse_people(
    text: &str,
    args: &ImportArgs,
    mut logins: LoginAllocator,
) -> Result<Vec<Person>, Vec<ValidationError>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut people = Vec::new();
    let mut errors = Vec::new();
    for (i, raw) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        match parse_line(i + 1, raw, args, &mut logins) {
            Ok(p) => people.push(p),
            Err(e) => errors.push(e.at_line(i + 1)),
        }
    }
    if errors.is_empty() {
        Ok(people)
    } else {
        Err(errors)
    }
}

fn parse_line(
    line: usize,
    raw: &str,
    args: &ImportArgs,
    logins: &mut LoginAllocator,
) -> Result<Person, ValidationError> {
    let (rest, password) = if args.passwords {
        let (rest, pw) = raw
            .rsplit_once(':')
            .ok_or_else(|| ValidationError::new("password", "expected the line to end with :password"))?;
        if pw.is_empty() {
            return Err(ValidationError::new("password", "is empty"));
        }
        (rest, pw.to_owned())
    } else {
        (
            raw,
            keel_password::generate(args.pwdlen).map_err(|e| ValidationError::new("password", e.to_string()))?,
        )
    };
    if args.logins {
        let login = Login::parse("login", rest.trim())?.to_string();
        return Ok(Person {
            line,
            first: login.clone(),
            last: login.clone(),
            login,
            password,
        });
    }
    let (first, last) = rest
        .split_once('\t')
        .ok_or_else(|| ValidationError::new("line", "expected first name<TAB>last name"))?;
    let (first, last) = (first.trim().to_owned(), last.trim().to_owned());
    let base = base_login(&first, &last)
        .ok_or_else(|| ValidationError::new("login", "the names give no login (no Latin letter)"))?;
    let login = logins.take(&base);
    Login::parse("login", &login)?;
    Ok(Person {
        line,
        first,
        last,
        login,
        password,
    })
}

/// Prints every bad line and returns the error that fails the command.
fn report(file: &Path, errors: Vec<ValidationError>) -> anyhow::Error {
    for e in &errors {
        eprintln!("{}:{e}", file.display());
    }
    anyhow::anyhow!("{} error(s) in {}: nothing was imported", errors.len(), file.display())
}

/// Hashes every password on all cores, with a progress bar on a terminal.
fn hash_all(people: &[Person]) -> anyhow::Result<Vec<String>> {
    let bar = indicatif::ProgressBar::new(people.len() as u64).with_message("hashing passwords");
    let threads = std::thread::available_parallelism().map_or(2, usize::from);
    let chunk = people.len().div_ceil(threads).max(1);
    let results: Vec<anyhow::Result<Vec<String>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = people
            .chunks(chunk)
            .map(|part| {
                let bar = bar.clone();
                scope.spawn(move || {
                    part.iter()
                        .map(|p| {
                            let h = keel_password::hash(&p.password).map_err(anyhow::Error::from);
                            bar.inc(1);
                            h
                        })
                        .collect::<anyhow::Result<Vec<_>>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a hashing thread failed")))
            })
            .collect()
    });
    bar.finish_and_clear();
    Ok(results
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?
        .into_iter()
        .flatten()
        .collect())
}

/// Writes the sheets for `people` — `PREFIX.tsv` (prologin's pwdsheetdata format: real name,
/// login, password) and `PREFIX.pdf` (printable cards), both sorted by name, mode 0600 — under
/// temporary names: they are renamed into place only once the import succeeded.
fn write_sheet(prefix: &Path, people: &[Person]) -> anyhow::Result<Sheets> {
    let mut sorted: Vec<&Person> = people.iter().collect();
    sorted.sort_by(|a, b| (&a.last, &a.first, &a.login).cmp(&(&b.last, &b.first, &b.login)));
    let names: Vec<String> = sorted
        .iter()
        .map(|p| format!("{} {}", p.first, p.last).trim().to_owned())
        .collect();
    let tsv: String = sorted
        .iter()
        .zip(&names)
        .map(|(p, n)| format!("{n}\t{}\t{}\n", p.login, p.password))
        .collect();
    let cards: Vec<crate::sheet::Card<'_>> = sorted
        .iter()
        .zip(&names)
        .map(|(p, n)| crate::sheet::Card {
            name: n,
            login: &p.login,
            password: &p.password,
        })
        .collect();
    let mut sheets = Sheets(Vec::new());
    for (ext, bytes) in [("tsv", tsv.into_bytes()), ("pdf", crate::sheet::pdf(&cards))] {
        let path = PathBuf::from(format!("{}.{ext}", prefix.display()));
        let partial = PathBuf::from(format!("{}.{ext}.partial", prefix.display()));
        crate::private_file::write(&partial, &bytes).with_context(|| format!("cannot write {}", partial.display()))?;
        sheets.0.push((partial, path));
    }
    Ok(sheets)
}

/// Sheets written under temporary names, removed unless `commit` renames them into place.
struct Sheets(Vec<(PathBuf, PathBuf)>);

impl Sheets {
    fn commit(mut self) -> anyhow::Result<Vec<PathBuf>> {
        let done = std::mem::take(&mut self.0);
        for (partial, path) in &done {
            std::fs::rename(partial, path).with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(done.into_iter().map(|(_, p)| p).collect())
    }
}

impl Drop for Sheets {
    fn drop(&mut self) {
        for (partial, _) in &self.0 {
            let _ = std::fs::remove_file(partial);
        }
    }
}

/// Issue 19: the people file's parser on any text (`fuzz_*`, see docs/security.md): no panic,
/// every error names its line, and every login it hands out is a valid one.
#[cfg(test)]
mod fuzz {
    use clap::Parser;
    use proptest::prelude::*;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ImportArgs,
    }

    proptest! {
        #[test]
        fn fuzz_people_file_parser(
            t in prop_oneof![any::<String>(), "([A-Za-zé :\t\r]{0,20}\n){0,6}"],
            logins in any::<bool>(),
            passwords in any::<bool>(),
        ) {
            let mut argv = vec!["import", "people.txt"];
            if logins { argv.push("--logins"); }
            if passwords { argv.push("--passwords"); }
            let args = Cli::try_parse_from(argv).unwrap().args;
            match parse_people(&t, &args, LoginAllocator::new(Vec::new(), &[])) {
                Ok(people) => {
                    for p in people {
                        prop_assert!(keel_model::Login::parse("login", &p.login).is_ok(), "{:?}", p.login);
                    }
                }
                Err(errors) => prop_assert!(errors.iter().all(|e| e.line.is_some()), "{errors:?}"),
            }
        }
    }
}
