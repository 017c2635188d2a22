#![allow(clippy::unwrap_used)]
//! The golden files pass the real checkers: `named-checkzone`, `named-checkconf` (Debian
//! bind9-utils), `dhcpd -t` (isc-dhcp-server), `kea-dhcp4 -t` (kea-dhcp4-server). `.ci/run`
//! installs them, and `nft` (nftables); a missing one fails the test, it never skips.

use std::path::{Path, PathBuf};
use std::process::Command;

fn data(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(p)
}

fn run(cmd: &str, args: &[&str], file: &Path) {
    let mut c = Command::new(cmd);
    c.args(args);
    if !file.as_os_str().is_empty() {
        c.arg(file);
    }
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e} (install it: see .ci/run)"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} {}:\n{}{}",
        file.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn zones_pass_named_checkzone_and_the_fragment_named_checkconf() {
    let entries = std::fs::read_dir(data("dns"))
        .unwrap()
        .chain(std::fs::read_dir(data("dns-unknown")).unwrap());
    for entry in entries {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if let Some(zone) = name.strip_prefix("db.") {
            run("named-checkzone", &["-q", zone], &path);
        }
    }
    run("named-checkconf", &[], &data("dns/named.conf.keel"));
}

#[test]
fn dhcp_configs_pass_dhcpd_and_kea() {
    run("dhcpd", &["-q", "-t", "-cf"], &data("dhcp/dhcpd.conf"));
    run("dhcpd", &["-q", "-t", "-cf"], &data("dhcp-isc-unknown/dhcpd.conf"));
    run("kea-dhcp4", &["-t"], &data("dhcp-kea/kea-dhcp4.conf"));
}

/// `nft -c` (nftables) accepts the rulesets, inside a network namespace of its own so nothing
/// touches this machine's firewall even by mistake; applying them twice in a row works too (the
/// table is replaced, not added to).
#[test]
fn firewall_rulesets_pass_nft_check_and_apply_twice() {
    for dir in ["firewall", "firewall-open", "firewall-contest"] {
        let f = data(dir).join("keel.nft");
        let f = f.display();
        run(
            "unshare",
            &[
                "-n",
                "sh",
                "-ec",
                &format!("nft -c -f {f}; nft -f {f}; nft -f {f}; nft list table inet keel"),
            ],
            Path::new(""),
        );
    }
}

/// autofs (Debian autofs) reads the `auto.home` map as keel means it: each login a key, its options
/// and `hfsN:/export/home/login` the entry. `automount -m` dumps the maps of `/etc/auto.master`
/// only, so a private mount namespace puts a master map naming ours there (nothing of this
/// machine's autofs configuration is touched).
#[test]
fn the_automount_map_is_read_by_autofs() {
    let dir = tempfile::tempdir().unwrap();
    let master = dir.path().join("auto.master");
    let map = data("automount/auto.home");
    std::fs::write(&master, format!("/home file:{}\n", map.display())).unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let script = format!(
        "mount --bind {} /etc/auto.master && mount --bind {} /etc/auto.master.d && automount -m",
        master.display(),
        empty.display()
    );
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .output()
        .expect("unshare (util-linux) and automount (autofs): see .ci/run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let entries: Vec<&str> = text.lines().map(str::trim).filter(|l| l.contains(" | ")).collect();
    let want: Vec<String> = std::fs::read_to_string(&map)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.replacen(' ', " | ", 1))
        .collect();
    assert!(!want.is_empty());
    assert_eq!(entries, want, "autofs's reading of the map:\n{text}");
}
