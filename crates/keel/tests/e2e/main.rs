//! keel's end-to-end tests: the real `keel` binary, started on a free port with a fresh data
//! directory, driven over HTTP, by its CLI, and by real tools (curl).
//!
//! Modules:
//! - `browser`: a headless Chromium over WebDriver (chromium-driver), screenshots as artifacts.
//! - `support`: the `Keel` harness (start, restart, kill -9, CLI) and helpers.
//! - `foundation`: the README's commands, validation, versions (412/428), tokens and roles.
//! - `dns`: the built-in DNS with the real `dig` (A, PTR, NXDOMAIN, TCP, read-your-writes, upstream).
//! - `hostile`: what an anonymous client can make keel hold (connections, huge logins, file modes).
//! - `durability`: kill -9 inside a transaction, backup under load and restore.
//! - `cli`: the admin CLI (tables, --json, import naming every bad line, errors).
//! - `users`: users in the database (uids, validation, hashes never shown).
//! - `users_import`: `keel users import` (login rule, sheets, all or nothing).
//! - `netboot`: iPXE scripts by state and boot mode, registration, switch table, Range requests.
//! - `operable`: `serve --check`, reload (keel reload, SIGHUP), journal lines, escaped values.
//! - `postgres`: two servers on one real PostgreSQL (shared log, one engine, takeover), migrate-db.
//! - `presence`: sessions, SSO through a real nginx, the firewall with the real nft in a netns.
//! - `propagation`: the engine and the real keel-agent (local child process; ssh to a real sshd).
//! - `tftp`: the TFTP server with `curl`, directly and through a lossy, duplicating proxy.
//! - `watch`: the change feed (resume, snapshots, slow consumers, /poll, `keel watch`).
//! - `qemu`: a QEMU guest network-boots through keel (TFTP, /boot/{mac}, kernel + initrd over HTTP).
//! - `web`: the administration pages in a headless Chromium (login, machines, CSRF, screenshots).
//! - `regression`: one test per fixed bug, named after its issue.

// A test binary exports nothing.
#![allow(unreachable_pub)]
// Test helpers may unwrap: a panic there is a failed test.
#![allow(clippy::unwrap_used)]

mod api_clients;
mod browser;
mod cli;
mod django;
mod dns;
mod durability;
mod foundation;
mod homes;
mod hostile;
mod netboot;
mod operable;
mod packaging;
mod postgres;
mod presence;
mod propagation;
mod qemu;
mod regression;
mod support;
mod tftp;
mod tls;
mod users;
mod users_import;
mod watch;
mod web;
