//! Admin commands: glue over keel-client, printing tables or JSON.

pub mod backup;
pub mod conntrack;
pub mod import;
pub mod log;
pub mod machine;
pub mod migrate;
pub mod passwd;
pub mod propagation;
pub mod setting;
pub mod switch;
pub mod token;
pub mod users;
pub mod watch;

/// Percent-encodes one path segment (a hostname, a key) for a URL.
pub fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
