//! `keel role …`: what a machine is for — the gateway (keel's own host), the NFS root server of
//! RFS N, the home file server of HFS N, keel's service names. Netboot, automount, DNS, the hosts
//! files and the rights rules read these, never a machine's name.

use clap::Subcommand;
use keel_client::{Client, ClientError, Records};
use serde_json::{json, Value};

use crate::outln;
use crate::output::{print_json, table};

#[derive(Debug, Subcommand)]
pub enum RoleCmd {
    /// Every role given, and to which machine.
    #[command(alias = "ls")]
    List,
    /// Give ROLE to MACHINE (taking it from the machine that had it): `gateway`, `rfs/N`,
    /// `hfs/N`, or `service/NAME` (mdb, udb, mdbsync, udbsync, netboot, sso, map, presencesync).
    Set { role: String, machine: String },
    /// Take ROLE back: no machine has it.
    #[command(alias = "remove")]
    Rm { role: String },
}

pub async fn run(c: &Client, cmd: &RoleCmd, json: bool) -> anyhow::Result<()> {
    match cmd {
        RoleCmd::List => {
            let list: Vec<Value> = c.all(Records::Roles).await?;
            if json {
                return print_json(&list);
            }
            let s = |v: &Value| v.as_str().unwrap_or("-").to_owned();
            let rows = list.iter().map(|r| vec![s(&r["role"]), s(&r["machine"])]).collect();
            outln!("{}", table(&["role", "machine"], rows))?;
        }
        RoleCmd::Set { role, machine } => {
            // A role no machine has yet is at version 0.
            let version = match c.show_versioned::<Value>(Records::Roles, &[role]).await {
                Ok(v) => v.version.unwrap_or(0),
                Err(ClientError::Api { status: 404, .. }) => 0,
                Err(e) => return Err(e.into()),
            };
            let r: Value = c
                .replace(Records::Roles, &[role], &json!({ "machine": machine }), version)
                .await?;
            if json {
                return print_json(&r);
            }
            outln!(
                "{} → {}",
                r["role"].as_str().unwrap_or(role),
                r["machine"].as_str().unwrap_or(machine)
            )?;
        }
        RoleCmd::Rm { role } => {
            let _ = c.remove(Records::Roles, &[role]).await?;
            if !json {
                outln!("no machine has the role {role} now")?;
            }
        }
    }
    Ok(())
}
