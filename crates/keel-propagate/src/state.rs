//! Task and result states, as shown to admins and kept across restarts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Perun's task states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TaskState {
    /// Nothing scheduled.
    Waiting,
    /// Scheduled: a change or a force is waiting out the debounce.
    Planned,
    Generating,
    /// GEN failed: nothing was sent.
    Generror,
    Generated,
    Sending,
    /// Every destination is DONE, or blocked here by an admin.
    Done,
    /// At least one destination failed to receive the bundle.
    Senderror,
    /// At least one destination refused it (its whitelist included), failed to apply it, or
    /// applied only part of it (a post hook or a home failed).
    Error,
    /// Every destination applied it, some with remarks (exit 0 and lines on stderr).
    Warning,
}

impl TaskState {
    pub const ALL: [Self; 10] = [
        Self::Waiting,
        Self::Planned,
        Self::Generating,
        Self::Generror,
        Self::Generated,
        Self::Sending,
        Self::Done,
        Self::Senderror,
        Self::Error,
        Self::Warning,
    ];

    /// States a restart must resume from.
    pub fn in_flight(self) -> bool {
        matches!(self, Self::Planned | Self::Generating | Self::Generated | Self::Sending)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "WAITING",
            Self::Planned => "PLANNED",
            Self::Generating => "GENERATING",
            Self::Generror => "GENERROR",
            Self::Generated => "GENERATED",
            Self::Sending => "SENDING",
            Self::Done => "DONE",
            Self::Senderror => "SENDERROR",
            Self::Error => "ERROR",
            Self::Warning => "WARNING",
        }
    }
}

/// The outcome at one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DestStatus {
    /// Never sent yet.
    Pending,
    /// Applied: exit 0, nothing on stderr.
    Done,
    /// Applied, with remarks: exit 0 and lines on stderr.
    Warning,
    /// The agent failed, refused or applied only part (a post hook, a home); or the bundle did
    /// not get there (no exit code, or ssh's 255).
    Error,
    /// Blocked here by an admin (no exit code), or refused by the agent's whitelist (exit 2).
    Denied,
}

impl DestStatus {
    /// Applied whole: the only outcomes that count as a success anywhere (last success, failure
    /// counters, metrics, alerts, pages).
    pub fn succeeded(self) -> bool {
        matches!(self, Self::Done | Self::Warning)
    }
}

/// The last result at one destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestResult {
    pub status: DestStatus,
    /// The agent's exit code; none when it never ran (connection failed, timeout).
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub duration_ms: u64,
    /// Digest of the files last applied here (DONE/WARNING), so an unchanged state is not resent.
    pub digest: String,
    pub serial: u64,
    /// RFC 3339.
    pub at: String,
    pub last_success: Option<String>,
    pub last_error: Option<String>,
    /// Failures in a row (the retry backoff grows with it).
    pub failures: u32,
    /// Unix seconds of the next retry, after a failure.
    pub retry_at: Option<u64>,
}

impl DestResult {
    pub fn pending() -> Self {
        Self {
            status: DestStatus::Pending,
            exit_code: None,
            stdout: String::new(),
            stderr: String::new(),
            duration_ms: 0,
            digest: String::new(),
            serial: 0,
            at: String::new(),
            last_success: None,
            last_error: None,
            failures: 0,
            retry_at: None,
        }
    }

    /// Applied with the given digest: nothing to send while the digest stays the same.
    pub fn holds(&self, digest: &str) -> bool {
        self.status.succeeded() && self.digest == digest
    }

    /// Blocked by an admin here (nothing was sent).
    pub fn blocked_here(&self) -> bool {
        self.status == DestStatus::Denied && self.exit_code.is_none()
    }

    /// The host's agent refused the bundle (its whitelist): a failure, unlike an admin's block.
    pub fn refused_by_host(&self) -> bool {
        self.status == DestStatus::Denied && self.exit_code.is_some()
    }
}

/// One (service, facility) task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub facility: String,
    pub service: String,
    pub state: TaskState,
    /// The serial of the last GEN; the next one is above it, also across restarts.
    pub serial: u64,
    pub digest: String,
    /// Why GEN failed, when it did.
    pub error: Option<String>,
    /// What the last GEN noticed in the data (machines outside the pools, for `dhcp` and `dns`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    pub started: Option<String>,
    pub finished: Option<String>,
    /// By destination (as written).
    pub results: BTreeMap<String, DestResult>,
}

impl Task {
    pub fn new(facility: &str, service: &str) -> Self {
        Self {
            facility: facility.into(),
            service: service.into(),
            state: TaskState::Waiting,
            serial: 0,
            digest: String::new(),
            error: None,
            notes: Vec::new(),
            started: None,
            finished: None,
            results: BTreeMap::new(),
        }
    }

    /// The key the task is stored under.
    pub fn key(&self) -> String {
        task_key(&self.facility, &self.service)
    }
}

pub(crate) fn task_key(facility: &str, service: &str) -> String {
    format!("task/{facility}/{service}")
}
