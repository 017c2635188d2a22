//! `keel setting …` and `keel registration …` (the `allow_self_registration` setting, opened for
//! a time on day one).

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

#[derive(Debug, Subcommand)]
pub enum RegistrationCmd {
    /// Let unknown machines register themselves from the iPXE menu, for a time: the server
    /// stores the end time (by its clock) and closes registration itself then; the change log
    /// records both.
    Open {
        /// How long: 2h, 90m, 1h30m, 45s, 1d. Default 2h.
        #[arg(long = "for", value_name = "DURATION", conflicts_with = "until", value_parser = parse_duration)]
        duration: Option<u32>,
        /// Until this time instead (RFC 3339, e.g. 2026-06-01T18:00:00+02:00).
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        /// No end: open until `keel registration close`.
        #[arg(long, conflicts_with_all = ["duration", "until"])]
        no_end: bool,
    },
    /// Close self-registration now.
    Close,
    /// Whether self-registration is open, and until when.
    Status,
}

/// `2h`, `90m`, `1h30m`, `45s`, `1d` → seconds.
fn parse_duration(text: &str) -> Result<u32, String> {
    let bad = || format!("{text:?} is not a duration such as 2h, 90m, 1h30m or 45s");
    let (mut total, mut number) = (0u64, String::new());
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        total = total.saturating_add(n.saturating_mul(unit));
        number.clear();
    }
    if !number.is_empty() || total == 0 {
        return Err(bad());
    }
    u32::try_from(total).map_err(|_| bad())
}

pub async fn registration(c: &Client, cmd: &RegistrationCmd, json: bool) -> anyhow::Result<()> {
    const KEY: &str = "allow_self_registration";
    let body = match cmd {
        RegistrationCmd::Open { no_end: true, .. } => Some(json!({"value": true})),
        RegistrationCmd::Open { until: Some(time), .. } => Some(json!({ "value": time })),
        RegistrationCmd::Open { duration, .. } => Some(json!({"value": true, "for_secs": duration.unwrap_or(7200)})),
        RegistrationCmd::Close => Some(json!({"value": false})),
        RegistrationCmd::Status => None,
    };
    let s: Value = match body {
        Some(body) => c.put(Records::Settings, &[KEY], &body).await?,
        None => c.show(Records::Settings, &[KEY]).await?,
    };
    let until = s["value"].as_str().map(str::to_owned);
    let now = keel_model::rfc3339(time::OffsetDateTime::now_utc());
    let open = match &until {
        Some(end) => now < *end,
        None => s["value"].as_bool().unwrap_or(false),
    };
    if json {
        return print_json(&json!({ "open": open, "until": until, "version": s["version"] }));
    }
    match (open, until) {
        (true, Some(end)) => outln!("self-registration is open until {end}")?,
        (true, None) => outln!("self-registration is open, with no end: `keel registration close` closes it")?,
        (false, _) => outln!("self-registration is closed")?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("2h"), Ok(7200));
        assert_eq!(parse_duration("1h30m"), Ok(5400));
        assert_eq!(parse_duration("90m"), Ok(5400));
        assert_eq!(parse_duration("45s"), Ok(45));
        assert_eq!(parse_duration("1d"), Ok(86_400));
        for bad in ["", "2", "h", "2x", "0h", "-1h", "99999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
