//! The build-time probe of the programs tests need (as cargo's own `requires_*`). A crate's
//! `build.rs` calls [`programs`]; each program becomes a cfg, `has_<name>` (`-` and `.` as `_`),
//! set when the program is found — and always under `CI`, where a test that cannot run must fail,
//! never skip. Tests say what they need with
//! `#[cfg_attr(not(has_nginx), ignore = "needs nginx (.ci/run installs it)")]`: `cargo test`
//! lists such a test as ignored, with that reason, on a machine without it.
//!
//! The build script reruns when `CI` or `PATH` changes, or a directory of `PATH` does (a program
//! installed), so the decision follows the machine.

use std::path::{Path, PathBuf};

/// The cfg a program sets: `has_` and its name with `-` and `.` as `_`.
pub fn cfg_name(program: &str) -> String {
    let name: String = program
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("has_{name}")
}

/// Whether `CI` asks every test to run (set and neither empty, `0` nor `false`).
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// Prints the build script's lines: a `has_*` cfg for each of `programs` found (every one under
/// CI), the check-cfg declaring them all, and when to probe again.
pub fn programs(programs: &[&str]) {
    println!("cargo::rerun-if-env-changed=CI");
    println!("cargo::rerun-if-env-changed=PATH");
    println!("cargo::rerun-if-env-changed=KEEL_DJANGO_PYTHON");
    let dirs = path_dirs();
    for d in dirs.iter().filter(|d| d.is_dir()) {
        println!("cargo::rerun-if-changed={}", d.display());
    }
    let ci = under_ci();
    for program in programs {
        let cfg = cfg_name(program);
        println!("cargo::rustc-check-cfg=cfg({cfg})");
        if ci || found(program, &dirs) {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
}

fn path_dirs() -> Vec<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default()
}

/// Found on `PATH`; `initdb` also where Debian keeps PostgreSQL's programs, `sshd` where
/// keel-testkit runs it (`/usr/sbin`); `django` is the
/// Python `KEEL_DJANGO_PYTHON` names (a virtualenv with Django, made by `.ci/run`).
fn found(program: &str, dirs: &[PathBuf]) -> bool {
    match program {
        "django" => std::env::var_os("KEEL_DJANGO_PYTHON").is_some_and(|p| executable(Path::new(&p))),
        "initdb" => postgres_bin().is_some() || dirs.iter().any(|d| executable(&d.join(program))),
        // Where keel-testkit's `Sshd` runs it from.
        "sshd" => executable(Path::new("/usr/sbin/sshd")),
        // PATH only: the tests run programs by name. (Debian keeps daemons — sshd, dhcpd, nft —
        // in /usr/sbin, which a user's PATH may lack: their tests are then ignored.)
        _ => dirs.iter().any(|d| executable(&d.join(program))),
    }
}

fn postgres_bin() -> Option<PathBuf> {
    std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path().join("bin"))
        .find(|b| executable(&b.join("initdb")))
}

fn executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn cfg_names_are_identifiers() {
        assert_eq!(super::cfg_name("named-checkzone"), "has_named_checkzone");
        assert_eq!(super::cfg_name("kea-dhcp4"), "has_kea_dhcp4");
        assert_eq!(super::cfg_name("qemu-system-x86_64"), "has_qemu_system_x86_64");
    }
}
