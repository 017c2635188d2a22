//! `keel host …`, `keel facility …`, `keel destination …`, `keel propagation …`

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Subcommand;
use keel_client::Client;
use keel_model::{Channel, Destination, Facility, Group, Host, Login};
use keel_propagate::{DestStatus, Task};
use serde_json::json;

use crate::outln;
use crate::output::{print_json, table};
use keel_client::Records;

#[derive(Debug, Subcommand)]
pub enum HostCmd {
    /// List hosts.
    #[command(alias = "ls")]
    List,
    /// Show one host.
    Show { name: String },
    /// Add a host to a facility.
    Add {
        /// Its FQDN.
        name: String,
        #[arg(long)]
        facility: String,
        /// The Machine it is (its names become the host's too).
        #[arg(long)]
        machine: Option<String>,
        /// Other names of the host (repeat or comma-separate).
        #[arg(long, value_delimiter = ',')]
        alias: Vec<String>,
    },
    /// Remove a host.
    #[command(alias = "delete")]
    Rm { name: String },
}

#[derive(Debug, Subcommand)]
pub enum FacilityCmd {
    /// List facilities.
    #[command(alias = "ls")]
    List,
    /// Show one facility.
    Show { name: String },
    /// Create a facility (admins).
    Add {
        name: String,
        #[command(flatten)]
        fields: FacilityFields,
    },
    /// Change a facility; only the given lists are replaced.
    Edit {
        name: String,
        #[command(flatten)]
        fields: FacilityFields,
    },
    /// Remove an empty facility (admins).
    #[command(alias = "delete")]
    Rm { name: String },
}

#[derive(Debug, clap::Args)]
pub struct FacilityFields {
    /// Who manages it: API tokens and user logins, each named as such (`token:NAME`,
    /// `user:LOGIN`; a bare name is a token's).
    #[arg(long, value_delimiter = ',')]
    managers: Option<Vec<keel_model::ManagerName>>,
    /// Groups whose users it receives: user, orga, root.
    #[arg(long, value_delimiter = ',')]
    groups: Option<Vec<Group>>,
    /// Users it receives whatever their group.
    #[arg(long, value_delimiter = ',')]
    members: Option<Vec<String>>,
    /// Services enabled on it (passwd, root_ssh, homes, automount, hosts, dns, dhcp, firewall,
    /// or a custom one).
    #[arg(long, value_delimiter = ',')]
    services: Option<Vec<String>>,
    /// A home file server's facility: it receives only the users whose home is on hfsN, and its
    /// `homes` service creates them under the export root (docs/homes.md).
    #[arg(long)]
    hfs: Option<u32>,
}

#[derive(Debug, Subcommand)]
pub enum DestinationCmd {
    /// List destinations.
    #[command(alias = "ls")]
    List {
        #[arg(long)]
        facility: Option<String>,
        #[arg(long)]
        service: Option<String>,
    },
    /// Add destinations: each service × each destination.
    Add {
        #[arg(long)]
        facility: String,
        /// One or more services (comma-separated).
        #[arg(long, value_delimiter = ',', required = true)]
        service: Vec<String>,
        /// `host`, `user@host`, `host:port`, or `local`.
        #[arg(required_unless_present = "all_hosts")]
        destinations: Vec<String>,
        /// Add every host of the facility (as `root@HOST`).
        #[arg(long)]
        all_hosts: bool,
    },
    /// Remove a destination.
    #[command(alias = "delete")]
    Rm {
        #[arg(long)]
        facility: String,
        #[arg(long)]
        service: String,
        destination: String,
    },
}

/// What a block or unblock is about.
#[derive(Debug, clap::Args)]
pub struct BlockArgs {
    #[arg(long)]
    facility: String,
    #[arg(long)]
    service: String,
    /// One destination only (default: the service on the whole facility).
    #[arg(long)]
    destination: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum PropagationCmd {
    /// Each facility's services and destinations: state, last success, last error.
    Status {
        #[arg(long)]
        facility: Option<String>,
    },
    /// Propagate now, sending even unchanged files; waits for the result unless --no-wait.
    Force {
        #[arg(long)]
        facility: String,
        /// One or more services, comma-separated (default: every service of the facility).
        #[arg(long, value_delimiter = ',')]
        service: Vec<String>,
        #[arg(long)]
        no_wait: bool,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Wait until propagation has caught up with every change made so far (a facility's tasks,
    /// or all): exit 0 when each ended DONE or WARNING, 1 (with the table) when one failed.
    Wait {
        #[arg(long)]
        facility: Option<String>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Block a service on a facility, or on one destination (results show DENIED).
    Block(BlockArgs),
    /// Lift a block.
    Unblock(BlockArgs),
    /// Write the signed bundle GEN would send (to inspect it or try an agent by hand).
    Gen {
        service: String,
        #[arg(long)]
        facility: String,
        #[arg(long)]
        destination: String,
        /// Output file (`-` for stdout).
        #[arg(long)]
        out: String,
    },
    /// Print the public key agents must trust (`trusted_keys` in agent.toml).
    Key,
}

/// Deletes the record at `path` at its current version.
async fn remove(c: &Client, json: bool, kind: Records, key: &[&str], what: &str) -> anyhow::Result<()> {
    c.remove(kind, key).await?;
    print_or_json(json, &json!({"removed": what}), || format!("removed {what}"))
}

fn print_or_json<T: serde::Serialize>(json: bool, v: &T, text: impl FnOnce() -> String) -> anyhow::Result<()> {
    if json {
        print_json(v)
    } else {
        outln!("{}", text())?;
        Ok(())
    }
}

pub async fn host(c: &Client, cmd: &HostCmd, json: bool) -> anyhow::Result<()> {
    let list: Vec<Host> = match cmd {
        HostCmd::List => c.all(Records::Hosts).await?,
        HostCmd::Show { name } => vec![c.show(Records::Hosts, &[name]).await?],
        HostCmd::Add {
            name,
            facility,
            machine,
            alias,
        } => {
            let body = json!({"name": name, "facility": facility, "machine": machine, "aliases": alias});
            vec![c.create(Records::Hosts, &body).await?]
        }
        HostCmd::Rm { name } => {
            return remove(c, json, Records::Hosts, &[name], &format!("host {name}")).await;
        }
    };
    let rows = list
        .iter()
        .map(|h| {
            vec![
                h.name.clone(),
                h.facility.clone(),
                h.machine.clone().unwrap_or_default(),
                h.aliases.join(","),
            ]
        })
        .collect();
    print_or_json(json, &list, || table(&["host", "facility", "machine", "aliases"], rows))
}

pub async fn facility(c: &Client, cmd: &FacilityCmd, json: bool) -> anyhow::Result<()> {
    let list: Vec<Facility> = match cmd {
        FacilityCmd::List => c.all(Records::Facilities).await?,
        FacilityCmd::Show { name } => vec![c.show(Records::Facilities, &[name]).await?],
        FacilityCmd::Add { name, fields } => {
            let f = fields.apply(Facility {
                name: name.clone(),
                managers: Vec::new(),
                groups: Vec::new(),
                members: Vec::new(),
                services: Vec::new(),
                blocked: Vec::new(),
                hfs: None,
                version: 0,
            })?;
            vec![c.create(Records::Facilities, &serde_json::to_value(&f)?).await?]
        }
        FacilityCmd::Edit { name, fields } => {
            let current = c.show_versioned::<Facility>(Records::Facilities, &[name]).await?;
            let version = current.version.context("no ETag on the facility")?;
            let f = fields.apply(current.value)?;
            vec![
                c.replace(Records::Facilities, &[name], &serde_json::to_value(&f)?, version)
                    .await?,
            ]
        }
        FacilityCmd::Rm { name } => {
            return remove(c, json, Records::Facilities, &[name], &format!("facility {name}")).await;
        }
    };
    let rows = list
        .iter()
        .map(|f| {
            let groups: Vec<&str> = f.groups.iter().map(|g| g.as_str()).collect();
            let members: Vec<&str> = f.members.iter().map(Login::as_str).collect();
            vec![
                f.name.clone(),
                f.managers.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
                groups.join(","),
                members.join(","),
                f.services.join(","),
                f.blocked.join(","),
            ]
        })
        .collect();
    print_or_json(json, &list, || {
        table(
            &["facility", "managers", "groups", "members", "services", "blocked"],
            rows,
        )
    })
}

impl FacilityFields {
    fn apply(&self, mut f: Facility) -> anyhow::Result<Facility> {
        if let Some(v) = &self.managers {
            f.managers.clone_from(v);
        }
        if let Some(v) = &self.groups {
            f.groups.clone_from(v);
        }
        if let Some(v) = &self.members {
            f.members = v.iter().map(|m| Login::parse("members", m)).collect::<Result<_, _>>()?;
        }
        if let Some(v) = &self.services {
            f.services.clone_from(v);
        }
        if self.hfs.is_some() {
            f.hfs = self.hfs;
        }
        f.version = 0;
        Ok(f)
    }
}

pub async fn destination(c: &Client, cmd: &DestinationCmd, json: bool) -> anyhow::Result<()> {
    let list: Vec<Destination> = match cmd {
        DestinationCmd::List { facility, service } => {
            let mut filters = Vec::new();
            if let Some(f) = facility {
                filters.push(("facility", f));
            }
            if let Some(s) = service {
                filters.push(("service", s));
            }
            c.list(Records::Destinations, &filters).await?
        }
        DestinationCmd::Add {
            facility,
            service,
            destinations,
            all_hosts,
        } => {
            let mut targets = destinations.clone();
            if *all_hosts {
                let hosts: Vec<Host> = c.all(Records::Hosts).await?;
                targets.extend(
                    hosts
                        .iter()
                        .filter(|h| &h.facility == facility)
                        .map(|h| format!("root@{}", h.name)),
                );
            }
            let mut added = Vec::new();
            for s in service {
                for d in &targets {
                    let channel = if d == "local" { Channel::Local } else { Channel::Ssh };
                    let body = json!({"facility": facility, "service": s, "destination": d, "channel": channel});
                    added.push(c.create(Records::Destinations, &body).await?);
                }
            }
            added
        }
        DestinationCmd::Rm {
            facility,
            service,
            destination,
        } => {
            let what = format!("destination {destination} of {facility}/{service}");
            return remove(c, json, Records::Destinations, &[facility, service, destination], &what).await;
        }
    };
    let rows = list
        .iter()
        .map(|d| {
            vec![
                d.facility.clone(),
                d.service.clone(),
                d.destination.clone(),
                format!("{:?}", d.channel).to_lowercase(),
                if d.blocked { "blocked".into() } else { String::new() },
            ]
        })
        .collect();
    print_or_json(json, &list, || {
        table(&["facility", "service", "destination", "channel", ""], rows)
    })
}

pub async fn propagation(c: &Client, cmd: &PropagationCmd, json: bool) -> anyhow::Result<()> {
    match cmd {
        PropagationCmd::Status { facility } => {
            let tasks = status(c, facility.as_deref()).await?;
            if json {
                return print_json(&tasks);
            }
            outln!("{}", status_table(&tasks, std::io::stdout().is_terminal()))?;
            for t in &tasks {
                for note in &t.notes {
                    outln!("{}/{}: {note}", t.facility, t.service)?;
                }
            }
            Ok(())
        }
        PropagationCmd::Force {
            facility,
            service,
            no_wait,
            timeout,
        } => force(c, facility, service, !no_wait, Duration::from_secs(*timeout), json).await,
        PropagationCmd::Wait { facility, timeout } => {
            wait(c, facility.as_deref(), Duration::from_secs(*timeout), json).await
        }
        PropagationCmd::Block(a) => block(c, a, true, json).await,
        PropagationCmd::Unblock(a) => block(c, a, false, json).await,
        PropagationCmd::Gen {
            service,
            facility,
            destination,
            out,
        } => {
            let bytes = c.propagation_bundle(service, facility, destination).await?;
            if out == "-" {
                use std::io::Write;
                std::io::stdout().write_all(&bytes)?;
            } else {
                std::fs::write(out, &bytes).with_context(|| format!("cannot write {out}"))?;
                if !json {
                    eprintln!("wrote {} bytes to {out}", bytes.len());
                }
            }
            Ok(())
        }
        // Run by `key` (it may read the key file when the server cannot say).
        PropagationCmd::Key => Ok(()),
    }
}

async fn status(c: &Client, facility: Option<&str>) -> anyhow::Result<Vec<Task>> {
    let v = c.propagation_status(facility).await?;
    Ok(serde_json::from_value(v["tasks"].clone())?)
}

fn paint(s: &str, colour: bool) -> String {
    if !colour {
        return s.to_owned();
    }
    let code = match s {
        "DONE" => "32",
        "WARNING" | "PLANNED" | "SENDING" | "GENERATING" | "GENERATED" | "PENDING" => "33",
        "DENIED" | "WAITING" => "2",
        _ => "31",
    };
    format!("\x1b[{code}m{s}\x1b[0m")
}

fn status_table(tasks: &[Task], colour: bool) -> String {
    let mut rows = Vec::new();
    for t in tasks {
        if t.results.is_empty() {
            let error = t.error.clone().unwrap_or_default();
            rows.push(vec![
                t.facility.clone(),
                t.service.clone(),
                "-".into(),
                paint(t.state.as_str(), colour),
                String::new(),
                error,
            ]);
        }
        for (dest, r) in &t.results {
            let status = serde_json::to_value(r.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned));
            let last_error = if r.status == DestStatus::Done {
                String::new()
            } else {
                let first = r.stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or_default();
                format!("{} {}", r.last_error.clone().unwrap_or_default(), first)
            };
            rows.push(vec![
                t.facility.clone(),
                t.service.clone(),
                dest.clone(),
                paint(&status.unwrap_or_default(), colour),
                r.last_success.clone().unwrap_or_default(),
                last_error.trim().to_owned(),
            ]);
        }
    }
    table(
        &[
            "facility",
            "service",
            "destination",
            "state",
            "last success",
            "last error",
        ],
        rows,
    )
}

/// `keel propagation key`: the public key agents trust, from the server — or, when it is not
/// running or runs no engine (before the first start, a PostgreSQL server that is not the
/// leader), from the signing key file its configuration names.
pub async fn key(c: &Client, flags: &crate::config::Flags, json: bool) -> anyhow::Result<()> {
    let v = match c.propagation_key().await {
        Ok(v) => v,
        Err(e) => {
            let cfg = crate::config::load(flags).map_err(|errors| anyhow::anyhow!("{errors}"))?;
            let Some(p) = cfg.propagation else {
                anyhow::bail!("{e}; and propagation is off in the configuration ([propagation] enabled = false)");
            };
            let text = std::fs::read_to_string(&p.key_file)
                .with_context(|| format!("keel did not answer ({e}) and its signing key cannot be read"))?;
            let secret = keel_bundle::SecretKey::from_base64(&text)
                .with_context(|| format!("{} is not a keel signing key", p.key_file.display()))?;
            eprintln!(
                "keel: read from {} (the server did not answer: {e})",
                p.key_file.display()
            );
            serde_json::json!({ "public_key": secret.public().to_string() })
        }
    };
    print_or_json(json, &v, || v["public_key"].as_str().unwrap_or_default().to_owned())
}

async fn force(
    c: &Client,
    facility: &str,
    services: &[String],
    wait: bool,
    timeout: Duration,
    json: bool,
) -> anyhow::Result<()> {
    let before: Vec<Task> = status(c, Some(facility)).await?;
    let mut planned: Vec<String> = Vec::new();
    let mut r = serde_json::Value::Null;
    if services.is_empty() {
        r = c.propagation_force(facility, None).await?;
        planned = serde_json::from_value(r["planned"].clone())?;
    }
    for service in services {
        r = c.propagation_force(facility, Some(service)).await?;
        planned.extend(serde_json::from_value::<Vec<String>>(r["planned"].clone())?);
    }
    if services.len() > 1 {
        r = serde_json::json!({ "planned": planned });
    }
    if !wait {
        return print_or_json(json, &r, || format!("planned: {}", planned.join(", ")));
    }
    let started = |t: &Task| before.iter().find(|b| b.key() == t.key()).map(|b| b.serial);
    let bar = indicatif::ProgressBar::new(planned.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} tasks")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    if json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_message(format!("propagating {facility}"));
    let deadline = Instant::now() + timeout;
    loop {
        let now: Vec<Task> = status(c, Some(facility)).await?;
        let finished: Vec<&Task> = now
            .iter()
            .filter(|t| planned.contains(&t.service))
            .filter(|t| started(t).is_none_or(|s| t.serial > s) && !t.state.in_flight())
            .collect();
        bar.set_position(finished.len() as u64);
        if finished.len() == planned.len() {
            bar.finish_and_clear();
            let tasks: Vec<Task> = finished.into_iter().cloned().collect();
            if json {
                return print_json(&tasks);
            }
            outln!("{}", status_table(&tasks, std::io::stdout().is_terminal()))?;
            let failed = tasks
                .iter()
                .filter(|t| !matches!(t.state, keel_propagate::TaskState::Done))
                .count();
            if failed > 0 {
                anyhow::bail!("{failed} task(s) did not end DONE");
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            bar.abandon();
            anyhow::bail!(
                "still propagating after {} s; see `keel propagation status`",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls until the engine has seen every change and none of the tasks is in flight.
async fn wait(c: &Client, facility: Option<&str>, timeout: Duration, json: bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let tasks = loop {
        let v = c.propagation_status(facility).await?;
        let tasks: Vec<Task> = serde_json::from_value(v["tasks"].clone())?;
        // A change the engine has seen may wait out its debounce in the queue while its task
        // still shows the last run's state: only an idle engine has landed everything — unless
        // a task failed, whose retries keep the queue busy (that answer is final enough).
        let failed = tasks.iter().any(|t| failed(t.state));
        if v["caught_up"] == true && !tasks.iter().any(|t| t.state.in_flight()) && (v["idle"] == true || failed) {
            break tasks;
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "still propagating after {} s; see `keel propagation status`",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if json {
        print_json(&tasks)?;
    } else {
        outln!("{}", status_table(&tasks, std::io::stdout().is_terminal()))?;
    }
    let failed = tasks.iter().filter(|t| failed(t.state)).count();
    if failed > 0 {
        anyhow::bail!("{failed} task(s) failed");
    }
    Ok(())
}

fn failed(state: keel_propagate::TaskState) -> bool {
    use keel_propagate::TaskState;
    matches!(state, TaskState::Error | TaskState::Senderror | TaskState::Generror)
}

async fn block(c: &Client, a: &BlockArgs, blocked: bool, json: bool) -> anyhow::Result<()> {
    let (facility, service) = (&a.facility, &a.service);
    let r = c
        .propagation_block(facility, service, a.destination.as_deref(), blocked)
        .await?;
    let what = a.destination.as_deref().map_or_else(
        || format!("{service} on facility {facility}"),
        |d| format!("{service} to {d}"),
    );
    print_or_json(json, &r, || {
        format!("{} {what}", if blocked { "blocked" } else { "unblocked" })
    })
}
