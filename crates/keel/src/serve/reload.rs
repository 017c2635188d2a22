//! A reload (SIGHUP, which `keel reload` and the unit's `ExecReload=` send): keel.toml is read and
//! checked again by the same `config::load` a start uses; a file with errors changes nothing (they
//! are logged and reported); otherwise what can change live changes —
//!
//! - `[pools]` (and `[propagation.generators.dhcp] unknown_range`, never allocated): later writes
//!   allocate from the new pools; the DNS's reverse zones follow; machines
//!   and users outside the new pools keep their addresses and uids and are counted in the log;
//! - `[propagation.services]` and `[propagation.generators]` (the firewall's settings among them):
//!   the engine's services and options, every task planned once;
//! - `[presence]`: timeout, recovery, secret, map_public, proof, trusted_proxies;
//! - `[logging] level`;
//! - the TLS certificate, read again from its files (a renewed certificate needs no restart);
//!
//! and every other key that changed is named in the log as kept until the next restart. systemd
//! hears `RELOADING=1` then `READY=1`; the outcome is written to DATA_DIR/reload.json, which
//! `keel reload` waits for, so a refused file makes `systemctl reload keel` fail.

use std::sync::Arc;

use anyhow::Context;
use keel_client::data_dir as files;
use keel_dns::LiveZones;
use keel_server::AppState;
use keel_store::Db;
use serde::{Deserialize, Serialize};

use super::notify::notify;
use super::tls::LiveCert;
use crate::config::ServeConfig;

/// Keys (and everything under them) a reload applies; every other change waits for a restart.
const RELOADABLE: [&str; 7] = [
    "pools",
    "propagation.services",
    "propagation.generators",
    "presence",
    "logging",
    "tls.cert_file",
    "tls.key_file",
];

/// What a reload can reach in the running server.
pub(in crate::serve) struct Live {
    pub db: Arc<Db>,
    pub state: AppState,
    pub zones: Option<LiveZones>,
    pub cert: Option<Arc<LiveCert>>,
    pub logging: crate::logging::Logging,
    /// `[presence] proof` when the file does not set it (the database's age decides, once).
    pub proof_default: keel_model::ProofPolicy,
}

/// The outcome of one reload, as DATA_DIR/reload.json holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The server that reloaded, and its count of reloads: `keel reload` waits for the next one.
    pub pid: u32,
    pub generation: u64,
    pub ok: bool,
    /// RFC 3339.
    pub at: String,
    /// Why the file was refused (each with its file and line).
    pub errors: Vec<String>,
    /// What changed now.
    pub applied: Vec<String>,
    /// Keys that changed in the file but take effect at the next restart.
    pub kept: Vec<String>,
}

impl Report {
    /// The last report in `data_dir`, if any.
    pub fn read(data_dir: &std::path::Path) -> Option<Self> {
        let text = std::fs::read_to_string(data_dir.join(files::RELOAD_STATUS)).ok()?;
        serde_json::from_str(&text).ok()
    }
}

/// Listens for SIGHUP from now on (before READY=1, so a reload asked right after the start is
/// not the default disposition's kill) and reloads on each.
pub(in crate::serve) fn listen(live: Live, cfg: ServeConfig) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
    tokio::spawn(async move {
        let mut running = cfg;
        let mut generation = 0;
        while hup.recv().await.is_some() {
            generation += 1;
            notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
            let mut report = live.reload(&mut running);
            report.pid = std::process::id();
            report.generation = generation;
            report.at = keel_store::now_rfc3339();
            let status = if report.ok {
                "serving; configuration reloaded".to_owned()
            } else {
                format!(
                    "serving with the previous configuration: reload refused ({} errors)",
                    report.errors.len()
                )
            };
            if let Err(e) = write_report(&running.data_dir, &report) {
                tracing::error!(error = %format!("{e:#}"), "cannot write the reload's outcome");
            }
            notify(&format!("READY=1\nSTATUS={status}"));
        }
    });
    Ok(())
}

fn write_report(data_dir: &std::path::Path, report: &Report) -> anyhow::Result<()> {
    let path = data_dir.join(files::RELOAD_STATUS);
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(report)?)?;
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

/// CLOCK_MONOTONIC in microseconds, which systemd pairs with RELOADING=1.
fn monotonic_usec() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000 + u64::try_from(t.tv_nsec).unwrap_or(0) / 1_000
}

impl Live {
    /// Reads keel.toml again and applies what can change live; `running` becomes what now runs.
    fn reload(&self, running: &mut ServeConfig) -> Report {
        tracing::info!(file = ?running.file, "reloading the configuration");
        let new = match crate::config::load(&running.flags) {
            Ok(c) => c,
            Err(errors) => {
                for e in &errors.0 {
                    tracing::error!(error = %e, "reload refused: the configuration stays as it was");
                }
                return Report {
                    errors: errors.0.iter().map(ToString::to_string).collect(),
                    ..Report::default()
                };
            }
        };
        let mut report = Report {
            ok: true,
            ..Report::default()
        };
        let changed = changed_keys(&running.raw, &new.raw, "");
        let (now, later): (Vec<String>, Vec<String>) = changed.into_iter().partition(|k| reloadable(k));
        for key in &later {
            tracing::warn!(key = %key, "changed in the config file: takes effect at the next restart");
        }
        report.kept = later;
        let touched = |prefix: &str| now.iter().any(|k| k == prefix || k.starts_with(&format!("{prefix}.")));
        // The DHCP range for unknown machines is part of the pools (never allocated), so a change
        // of `[propagation.generators.dhcp]` can change them too.
        if new.pools != running.pools {
            self.db.set_pools(new.pools.clone());
            running.pools = new.pools.clone();
            report_outside_pools(&self.db);
            report.applied.push("pools".into());
        }
        if touched("pools") || touched("propagation.generators") {
            self.replace_zones(running, &new);
        }
        if touched("propagation.services") || touched("propagation.generators") || touched("pools") {
            self.reconfigure_engine(running, &new, &mut report);
        }
        self.reload_presence(running, &new, &mut report);
        if touched("logging") {
            match self.logging.set_level(&new.log_level) {
                Ok(true) => report.applied.push(format!("log level {}", new.log_level)),
                Ok(false) => report
                    .applied
                    .push("log level (RUST_LOG is set and stays in force)".into()),
                Err(e) => report.errors.push(e),
            }
            running.log_level = new.log_level.clone();
        }
        if let Some(cert) = &self.cert {
            match cert.reload() {
                Ok(fingerprint) => report.applied.push(format!("TLS certificate {fingerprint}")),
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "the TLS certificate was not reloaded; the previous one is served");
                    report.errors.push(format!("TLS certificate: {e:#}"));
                }
            }
        }
        for key in RELOADABLE {
            copy_path(&mut running.raw, &new.raw, key);
        }
        report.ok = report.errors.is_empty();
        tracing::info!(applied = ?report.applied, kept = ?report.kept, "configuration reloaded");
        report
    }

    /// The DNS's zones for the new pools (reverse zones, default forward clients) and the new
    /// range of unknown machines' names; `[dns]` itself stays until a restart.
    fn replace_zones(&self, running: &mut ServeConfig, new: &ServeConfig) {
        let (Some(zones), Some(dns), Some(new_dns)) = (&self.zones, &mut running.dns, &new.dns) else {
            return;
        };
        dns.config.dynamic.clone_from(&new_dns.config.dynamic);
        let next = keel_dns::Zones::new(dns.config.clone(), &self.db.pools());
        zones.store(Arc::new(next));
    }

    fn reconfigure_engine(&self, running: &mut ServeConfig, new: &ServeConfig, report: &mut Report) {
        let (Some(p), Some(new_p)) = (&mut running.propagation, &new.propagation) else {
            return;
        };
        p.services.clone_from(&new_p.services);
        p.engine.gen.clone_from(&new_p.engine.gen);
        if let Some(engine) = self.state.engine() {
            engine.reconfigure(p.services.clone(), p.engine.gen.clone());
            report
                .applied
                .push("propagation services and generator options (every task planned)".into());
        }
    }

    /// Presence's settings, and its secret read again (a rotated secret applies without a restart).
    fn reload_presence(&self, running: &mut ServeConfig, new: &ServeConfig, report: &mut Report) {
        let mut presence = new.server.presence.clone();
        presence.proof = new.presence_proof.unwrap_or(self.proof_default);
        if presence.secret.is_none() {
            match super::data_dir::read_or_create_secret(&new.server.presence.secret_file) {
                Ok(s) => presence.secret = Some(s.into()),
                Err(e) => {
                    report.errors.push(format!("presence secret: {e:#}"));
                    return;
                }
            }
        }
        let before = self.state.presence.config();
        let same = before.timeout == presence.timeout
            && before.recovery == presence.recovery
            && before.map_public == presence.map_public
            && before.secret == presence.secret
            && before.proof == presence.proof
            && before.client_addr.trusted_proxies == presence.client_addr.trusted_proxies;
        if !same {
            report.applied.push("presence settings".into());
        }
        self.state.presence.reconfigure(presence.clone());
        running.server.presence = presence;
    }
}

/// Logs how many machines and users lie outside today's pools (they keep their addresses and
/// uids; `keel machine list --outside-pools` lists them, `keel machine renumber` moves them).
pub(in crate::serve) fn report_outside_pools(db: &Db) {
    let snap = db.snapshot();
    let pools = db.pools();
    let machines = snap.machines_outside(&pools).count();
    if machines > 0 {
        tracing::warn!(
            machines,
            "machines have addresses outside today's pools: they keep them (keel machine list --outside-pools; keel machine renumber moves them)"
        );
    }
    let users = snap.users_outside(&pools.uids).count();
    if users > 0 {
        tracing::warn!(
            users,
            "users have uids outside today's uid pools: they keep them; new users get uids from the pools"
        );
    }
}

fn reloadable(key: &str) -> bool {
    RELOADABLE
        .iter()
        .any(|p| key == *p || key.strip_prefix(p).is_some_and(|rest| rest.starts_with('.')))
}

/// The dotted keys whose values differ between two files (a table's keys one by one).
fn changed_keys(old: &toml::Table, new: &toml::Table, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for k in keys {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match (old.get(k), new.get(k)) {
            (Some(toml::Value::Table(a)), Some(toml::Value::Table(b))) => out.extend(changed_keys(a, b, &path)),
            (a, b) if a != b => out.push(path),
            _ => {}
        }
    }
    out
}

/// Makes `to`'s value at the dotted `path` what `from` has there (removed when `from` has none).
fn copy_path(to: &mut toml::Table, from: &toml::Table, path: &str) {
    let (head, rest) = path.split_once('.').map_or((path, None), |(h, r)| (h, Some(r)));
    match rest {
        None => match from.get(head) {
            Some(v) => {
                to.insert(head.to_owned(), v.clone());
            }
            None => {
                to.remove(head);
            }
        },
        Some(rest) => {
            let empty = toml::Table::new();
            let sub_from = from.get(head).and_then(toml::Value::as_table).unwrap_or(&empty);
            let entry = to
                .entry(head.to_owned())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let Some(sub_to) = entry.as_table_mut() {
                copy_path(sub_to, sub_from, rest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(s: &str) -> toml::Table {
        toml::from_str(s).unwrap()
    }

    #[test]
    fn changed_keys_are_named_one_by_one_and_split_by_what_reloads() {
        let old = table("listen = \"127.0.0.1:1\"\n[dns]\nzone = \"a\"\n[pools.user]\nnetwork = \"10.0.0.0/24\"\n");
        let new = table("listen = \"127.0.0.1:2\"\n[dns]\nzone = \"a\"\nttl = 5\n[pools.user]\nnetwork = \"10.1.0.0/24\"\n[logging]\nlevel = \"debug\"\n");
        let changed = changed_keys(&old, &new, "");
        assert_eq!(changed, ["dns.ttl", "listen", "logging", "pools.user.network"]);
        let now: Vec<&String> = changed.iter().filter(|k| reloadable(k)).collect();
        assert_eq!(now, ["logging", "pools.user.network"]);
        assert!(!reloadable("poolsx"), "a prefix is a whole key");
    }

    #[test]
    fn copied_paths_make_the_running_file_match_what_runs() {
        let mut running = table("[pools.user]\nnetwork = \"10.0.0.0/24\"\n[dns]\nzone = \"a\"\n");
        let new = table("[dns]\nzone = \"b\"\n[tls]\ncert_file = \"/c\"\n");
        copy_path(&mut running, &new, "pools");
        copy_path(&mut running, &new, "tls.cert_file");
        assert_eq!(running, table("[dns]\nzone = \"a\"\n[tls]\ncert_file = \"/c\"\n"));
    }
}
