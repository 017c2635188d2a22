//! `keel machine …`

use clap::Subcommand;
use keel_client::Client;
use keel_model::Machine;
use serde_json::{Map, Value};

use crate::outln;
use crate::output::{print_json, table};
use keel_client::Records;

#[derive(Debug, Subcommand)]
pub enum MachineCmd {
    /// List machines, optionally filtered (FIELD=VALUE, Django-style: hostname__startswith=r00).
    #[command(alias = "ls")]
    List {
        filters: Vec<String>,
        /// Only the machines whose address lies outside today's pools (the pools changed since
        /// they got it; `keel machine renumber` moves them).
        #[arg(long)]
        outside_pools: bool,
    },
    /// Show one machine (by hostname or alias).
    Show { name: String },
    /// Add a machine; its IP comes from its type's pool unless --ip is given.
    Add(MachineFields),
    /// Edit a machine; only the given fields change (safe against concurrent edits).
    Edit {
        name: String,
        #[command(flatten)]
        fields: MachineFields,
    },
    /// Remove a machine.
    #[command(alias = "delete")]
    Rm { name: String },
    /// Import machines from a CSV (with a header row) or JSON file: all or nothing.
    Import(super::import::ImportArgs),
    /// Move machines to free addresses of their types' pools: those named, or every machine
    /// outside today's pools. Without --apply, only shows where each would go; with it, all in
    /// one commit or none, each move in the change log. Nothing else moves an address: an edit
    /// keeps it, even after the pools changed.
    Renumber {
        /// The machines (hostnames or aliases); default: every machine outside the pools.
        names: Vec<String>,
        /// Make the moves (default: a dry run).
        #[arg(long)]
        apply: bool,
    },
}

#[derive(Debug, Default, clap::Args)]
pub struct MachineFields {
    #[arg(long)]
    pub hostname: Option<String>,
    /// aa:bb:cc:dd:ee:ff, AA-BB-CC-DD-EE-FF or aabb.ccdd.eeff.
    #[arg(long)]
    pub mac: Option<String>,
    /// user, orga, cluster or service.
    #[arg(long)]
    pub mtype: Option<String>,
    #[arg(long)]
    pub ip: Option<String>,
    /// Comma-separated aliases (replaces the list).
    #[arg(long)]
    pub aliases: Option<String>,
    #[arg(long)]
    pub room: Option<String>,
    #[arg(long)]
    pub rfs: Option<u32>,
    #[arg(long)]
    pub hfs: Option<u32>,
    /// Mark faulty (true) or repaired (false).
    #[arg(long)]
    pub faulty: Option<bool>,
    /// Why it is faulty.
    #[arg(long)]
    pub reason: Option<String>,
    /// Network boot: nfsroot, local, install, or auto (by type: nfsroot for user machines).
    #[arg(long)]
    pub boot: Option<String>,
}

impl MachineFields {
    fn to_json(&self) -> Value {
        let mut m = Map::new();
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                m.insert(k.to_owned(), v);
            }
        };
        put("hostname", self.hostname.clone().map(Value::from));
        put("mac", self.mac.clone().map(Value::from));
        put("mtype", self.mtype.clone().map(Value::from));
        put("ip", self.ip.clone().map(Value::from));
        put(
            "aliases",
            self.aliases
                .as_deref()
                .map(|a| Value::from(keel_model::input::split_list(a))),
        );
        put("room", self.room.clone().map(Value::from));
        put("rfs", self.rfs.map(Value::from));
        put("hfs", self.hfs.map(Value::from));
        put("is_faulty", self.faulty.map(Value::from));
        put("faulty_reason", self.reason.clone().map(Value::from));
        put("boot", self.boot.clone().map(Value::from));
        Value::Object(m)
    }
}

pub async fn run(c: &Client, cmd: &MachineCmd, json: bool) -> anyhow::Result<()> {
    match cmd {
        MachineCmd::List { filters, outside_pools } => {
            let mut filters = super::filters(filters)?;
            if *outside_pools {
                filters.push(("outside_pools", "true"));
            }
            let list: Vec<Machine> = c.list(Records::Machines, &filters).await?;
            print_machines(&list, json)
        }
        MachineCmd::Show { name } => {
            let m: Machine = c.show(Records::Machines, &[name]).await?;
            print_machines(&[m], json)
        }
        MachineCmd::Add(f) => {
            let m: Machine = c.create(Records::Machines, &f.to_json()).await?;
            print_machines(&[m], json)
        }
        MachineCmd::Edit { name, fields } => {
            let m: Machine = c.update(Records::Machines, &[name], &fields.to_json()).await?;
            print_machines(&[m], json)
        }
        MachineCmd::Rm { name } => {
            let _: Value = c.remove(Records::Machines, &[name]).await?;
            if !json {
                outln!("removed machine {name}")?;
            }
            Ok(())
        }
        MachineCmd::Import(args) => super::import::run(c, args, json).await,
        MachineCmd::Renumber { names, apply } => renumber(c, names, *apply, json).await,
    }
}

async fn renumber(c: &Client, names: &[String], apply: bool, json: bool) -> anyhow::Result<()> {
    let names = (!names.is_empty()).then_some(names);
    let answer = c.renumber_machines(names, !apply).await?;
    if json {
        return print_json(&answer);
    }
    let moved = answer["moved"].as_array().cloned().unwrap_or_default();
    if moved.is_empty() {
        outln!("nothing to renumber: every machine named is inside its pool")?;
        return Ok(());
    }
    let rows = moved
        .iter()
        .map(|m| {
            ["hostname", "mtype", "from", "to"]
                .iter()
                .map(|k| m[*k].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .collect();
    outln!("{}", table(&["hostname", "type", "from", "to"], rows))?;
    if apply {
        outln!("{} machines renumbered (see keel log)", moved.len())?;
    } else {
        outln!(
            "dry run: {} machines would move; run again with --apply to move them (all or none)",
            moved.len()
        )?;
    }
    Ok(())
}

pub fn print_machines(list: &[Machine], json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&list);
    }
    let rows = list
        .iter()
        .map(|m| {
            vec![
                m.hostname.to_string(),
                m.ip.to_string(),
                m.mac.to_string(),
                m.mtype.to_string(),
                m.room.clone(),
                m.rfs.to_string(),
                m.hfs.to_string(),
                m.aliases.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
                if m.is_faulty {
                    format!("yes: {}", m.faulty_reason)
                } else {
                    String::new()
                },
            ]
        })
        .collect();
    outln!(
        "{}",
        table(
            &["hostname", "ip", "mac", "type", "room", "rfs", "hfs", "aliases", "faulty"],
            rows
        )
    )?;
    Ok(())
}
