//! `keel setting …`

use clap::Subcommand;
use keel_client::Client;
use serde_json::{json, Value};

use crate::outln;
use crate::output::{print_json, table};
use keel_client::Records;

#[derive(Debug, Subcommand)]
pub enum SettingCmd {
    /// List every setting with its value and what it does.
    #[command(alias = "ls")]
    List,
    /// Print one setting's value.
    Get { key: String },
    /// Set a setting (true/false).
    Set { key: String, value: String },
}

pub async fn run(c: &Client, cmd: &SettingCmd, json: bool) -> anyhow::Result<()> {
    match cmd {
        SettingCmd::List => {
            let list: Vec<Value> = c.all(Records::Settings).await?;
            if json {
                return print_json(&list);
            }
            let rows = list
                .iter()
                .map(|s| {
                    vec![
                        s["key"].as_str().unwrap_or("").to_owned(),
                        s["value"].to_string(),
                        s["help"].as_str().unwrap_or("").to_owned(),
                    ]
                })
                .collect();
            outln!("{}", table(&["key", "value", "meaning"], rows))?;
        }
        SettingCmd::Get { key } => {
            let s: Value = c.show(Records::Settings, &[key]).await?;
            if json {
                return print_json(&s);
            }
            outln!("{}", s["value"])?;
        }
        SettingCmd::Set { key, value } => {
            let value = match value.as_str() {
                "true" | "on" | "yes" | "1" => json!(true),
                "false" | "off" | "no" | "0" => json!(false),
                other => json!(other),
            };
            let s: Value = c.put(Records::Settings, &[key], &json!({ "value": value })).await?;
            if json {
                return print_json(&s);
            }
            outln!("{key} = {}", s["value"])?;
        }
    }
    Ok(())
}
