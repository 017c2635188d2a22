//! Reading utmp: who is logged in, for the presence heartbeat. The record is glibc's `struct
//! utmp` on 64-bit Linux (384 bytes); only `ut_type`, `ut_pid` and `ut_user` are read.

use std::path::Path;

/// One record's size.
pub const RECORD: usize = 384;
const USER_PROCESS: i16 = 7;
const PID: std::ops::Range<usize> = 4..8;
const USER: std::ops::Range<usize> = 44..76;

/// The logins of live user sessions (`USER_PROCESS` records whose process still runs: a crash
/// can leave stale records behind). An unreadable file is no one.
pub fn logged_in(path: &Path) -> Vec<String> {
    let Ok(data) = std::fs::read(path) else {
        return Vec::new();
    };
    data.chunks_exact(RECORD)
        .filter_map(|r| {
            let kind = i16::from_ne_bytes([r[0], r[1]]);
            let pid = i32::from_ne_bytes(r[PID].try_into().ok()?);
            if kind != USER_PROCESS || !Path::new(&format!("/proc/{pid}")).exists() {
                return None;
            }
            let user = &r[USER];
            let end = user.iter().position(|b| *b == 0).unwrap_or(user.len());
            let login = std::str::from_utf8(&user[..end]).ok()?;
            (!login.is_empty()).then(|| login.to_owned())
        })
        .collect()
}

/// A record, as login(1) would write it (tests, and `keel bench` fixtures).
pub fn record(kind: i16, pid: i32, line: &str, user: &str) -> Vec<u8> {
    let mut r = vec![0u8; RECORD];
    r[0..2].copy_from_slice(&kind.to_ne_bytes());
    r[PID].copy_from_slice(&pid.to_ne_bytes());
    let line = line.as_bytes();
    r[8..8 + line.len().min(32)].copy_from_slice(&line[..line.len().min(32)]);
    let user = user.as_bytes();
    r[USER.start..USER.start + user.len().min(32)].copy_from_slice(&user[..user.len().min(32)]);
    r
}

/// `USER_PROCESS`, for [`record`].
pub const USER_PROCESS_TYPE: i16 = USER_PROCESS;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_user_processes_only() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id() as i32;
        let mut data = record(USER_PROCESS, me, "tty1", "alice");
        data.extend(record(6, me, "tty2", "LOGIN")); // LOGIN_PROCESS
        data.extend(record(USER_PROCESS, i32::MAX - 1, "pts/0", "ghost")); // stale
        data.extend(record(USER_PROCESS, me, "pts/1", "a_very_long_login_name_of_32_chr"));
        data.extend([1, 2, 3]); // a torn last record
        let p = dir.path().join("utmp");
        std::fs::write(&p, data).unwrap();
        assert_eq!(logged_in(&p), vec!["alice", "a_very_long_login_name_of_32_chr"]);
        assert!(logged_in(&dir.path().join("none")).is_empty());
    }
}
