//! `keel switch …`

use clap::Subcommand;
use keel_client::Client;
use keel_model::Switch;
use serde_json::{Map, Value};

use crate::outln;
use crate::output::{print_json, table};
use keel_client::Records;

#[derive(Debug, Subcommand)]
pub enum SwitchCmd {
    /// List switches.
    #[command(alias = "ls")]
    List,
    /// Show one switch.
    Show { name: String },
    /// Add a switch.
    Add {
        name: String,
        #[command(flatten)]
        fields: SwitchFields,
    },
    /// Edit a switch; only the given fields change.
    Edit {
        name: String,
        #[command(flatten)]
        fields: SwitchFields,
    },
    /// Remove a switch.
    #[command(alias = "delete")]
    Rm { name: String },
}

#[derive(Debug, clap::Args)]
pub struct SwitchFields {
    /// LLDP chassis id.
    #[arg(long)]
    chassis: Option<String>,
    #[arg(long)]
    room: Option<String>,
    #[arg(long)]
    rfs: Option<u32>,
    #[arg(long)]
    hfs: Option<u32>,
}

impl SwitchFields {
    fn to_json(&self, name: Option<&str>) -> Value {
        let mut m = Map::new();
        if let Some(n) = name {
            m.insert("name".into(), n.into());
        }
        if let Some(v) = &self.chassis {
            m.insert("chassis".into(), v.as_str().into());
        }
        if let Some(v) = &self.room {
            m.insert("room".into(), v.as_str().into());
        }
        if let Some(v) = self.rfs {
            m.insert("rfs".into(), v.into());
        }
        if let Some(v) = self.hfs {
            m.insert("hfs".into(), v.into());
        }
        Value::Object(m)
    }
}

pub async fn run(c: &Client, cmd: &SwitchCmd, json: bool) -> anyhow::Result<()> {
    let list = match cmd {
        SwitchCmd::List => c.all::<Switch>(Records::Switches).await?,
        SwitchCmd::Show { name } => vec![c.show(Records::Switches, &[name]).await?],
        SwitchCmd::Add { name, fields } => {
            vec![c.create(Records::Switches, &fields.to_json(Some(name))).await?]
        }
        SwitchCmd::Edit { name, fields } => {
            vec![c.update(Records::Switches, &[name], &fields.to_json(None)).await?]
        }
        SwitchCmd::Rm { name } => {
            let _: Value = c.remove(Records::Switches, &[name]).await?;
            if !json {
                outln!("removed switch {name}")?;
            }
            return Ok(());
        }
    };
    if json {
        return print_json(&list);
    }
    let rows = list
        .iter()
        .map(|s| {
            vec![
                s.name.to_string(),
                s.chassis.clone(),
                s.room.clone(),
                s.rfs.to_string(),
                s.hfs.to_string(),
            ]
        })
        .collect();
    outln!("{}", table(&["name", "chassis", "room", "rfs", "hfs"], rows))?;
    Ok(())
}
