//! `keel token …`

use clap::Subcommand;
use keel_client::Client;
use keel_client::Records;
use serde_json::{json, Value};

use crate::outln;
use crate::output::{print_json, table};

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create a token; it is printed once and never stored in clear.
    Create {
        /// Who the token is for (recorded in the change log).
        #[arg(long)]
        name: String,
        /// admin, manager, readonly or agent.
        #[arg(long)]
        role: String,
        /// For managers: a facility they manage (repeatable).
        #[arg(long = "facility")]
        facilities: Vec<String>,
        /// For agents: the host they act for.
        #[arg(long)]
        host: Option<String>,
        /// Expiry as an RFC 3339 time (e.g. 2026-12-31T23:59:59Z).
        #[arg(long, conflicts_with = "expires_in_days")]
        expires: Option<String>,
        /// Expiry in days from now.
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// List tokens (never their secrets).
    #[command(alias = "ls")]
    List,
    /// Revoke a token by id.
    Revoke { id: String },
}

pub async fn run(c: &Client, cmd: &TokenCmd, json: bool) -> anyhow::Result<()> {
    match cmd {
        TokenCmd::Create {
            name,
            role,
            facilities,
            host,
            expires,
            expires_in_days,
        } => {
            let expires = match (expires, expires_in_days) {
                (Some(e), _) => Some(e.clone()),
                (None, Some(d)) => Some(
                    (time::OffsetDateTime::now_utc() + time::Duration::days(i64::from(*d)))
                        .format(&time::format_description::well_known::Rfc3339)?,
                ),
                (None, None) => None,
            };
            let body = json!({"name": name, "role": role, "facilities": facilities, "host": host, "expires": expires});
            let t: Value = c.create(Records::Tokens, &body).await?;
            if json {
                return print_json(&t);
            }
            outln!("{}", t["token"].as_str().unwrap_or(""))?;
            eprintln!(
                "token {} for {name} ({role}); keep it now: it is not shown again",
                t["id"].as_str().unwrap_or("")
            );
        }
        TokenCmd::List => {
            let list: Vec<Value> = c.all(Records::Tokens).await?;
            if json {
                return print_json(&list);
            }
            let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
            let rows = list
                .iter()
                .map(|t| {
                    vec![
                        s(&t["id"]),
                        s(&t["name"]),
                        s(&t["role"]),
                        s(&t["created"]),
                        s(&t["expires"]),
                        s(&t["revoked"]),
                    ]
                })
                .collect();
            outln!(
                "{}",
                table(&["id", "name", "role", "created", "expires", "revoked"], rows)
            )?;
        }
        TokenCmd::Revoke { id } => {
            c.revoke_token(id).await?;
            if !json {
                outln!("revoked token {id}")?;
            }
        }
    }
    Ok(())
}
