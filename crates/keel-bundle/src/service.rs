//! The services whose files keel-agent merges into the host itself, named and versioned once for
//! both sides: keel-gen generates them under these names at these majors, keel-agent implements
//! them. (The network services — dns, dhcp, firewall — and custom ones are applied as
//! directories of files with hooks, and need nothing of the agent's code.)

pub const PASSWD: &str = "passwd";
pub const ROOT_SSH: &str = "root_ssh";
pub const HOMES: &str = "homes";
pub const HOSTS: &str = "hosts";
pub const AUTOMOUNT: &str = "automount";

/// Each of them with the major version its bundles carry: another major is refused by the
/// agent (exit 200), so a change of format must raise it here, on both sides at once.
pub const AGENT_BUILT_IN: [(&str, u32); 5] = [(PASSWD, 1), (ROOT_SSH, 1), (HOMES, 1), (HOSTS, 1), (AUTOMOUNT, 1)];

/// The major an agent built-in is implemented at, if `service` is one.
pub fn agent_major(service: &str) -> Option<u32> {
    AGENT_BUILT_IN.iter().find(|(n, _)| *n == service).map(|(_, m)| *m)
}
