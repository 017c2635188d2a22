//! The names of the files `keel serve` keeps in its data directory, for everything on keel's host
//! that reads them: the CLI finds the admin token there, scripts and tests the addresses actually
//! bound (with port 0). One list, so that the server, the CLI, the tests and the benchmarks cannot
//! disagree. (The files keel.toml can move — the presence secret, the signing key — are their
//! config types' defaults: `[presence] secret_file`, `[propagation] key_file`.)

/// The SQLite database (and its `-wal`, `-shm` beside it).
pub const DB: &str = "keel.db";
/// Held locked while a server runs on this directory: a second one refuses to start.
pub const LOCK: &str = "keel.lock";
/// The first admin token, written on first start (mode 0600).
pub const ADMIN_TOKEN: &str = "admin.token";
/// Written once the HTTP server listens: the address actually bound.
pub const LISTEN_ADDR: &str = "listen.addr";
/// The HTTPS address actually bound (`[tls] listen`, port 0 in tests).
pub const TLS_ADDR: &str = "tls.addr";
/// Written once the DNS listens: its address (UDP and TCP).
pub const DNS_ADDR: &str = "dns.addr";
/// Written once TFTP listens: its address.
pub const TFTP_ADDR: &str = "tftp.addr";
/// The outcome of the last reload (SIGHUP), which `keel reload` waits for.
pub const RELOAD_STATUS: &str = "reload.json";
