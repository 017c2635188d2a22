//! The Debian packages, built by `contrib/debian/build-debs` from this build's binaries (the
//! command docs/install.md gives, with --bin-dir so CI does not build a release twice): what
//! they contain, their conffiles, and the shipped keel.service's hardening as
//! `systemd-analyze security` scores it (at most 2.0, systemd's "OK" band). Installing them on a
//! booted Debian is not done here yet (issue 22's install test).

use std::path::Path;
use std::process::Command;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_debian_packages_hold_what_an_install_needs_and_keel_service_is_hardened() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let bin_dir = Path::new(crate::support::KEEL).parent().unwrap();
    let out = tempfile::tempdir().unwrap();
    let built = run(Command::new("bash").arg(root.join("contrib/debian/build-debs")).args([
        "--bin-dir",
        bin_dir.to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
        // Debug binaries are large: compressing them would only cost time here.
        "--compress",
        "none",
    ]));
    let debs: Vec<&str> = built.lines().collect();
    assert_eq!(debs.len(), 2, "{built}");
    let contents = |deb: &str| run(Command::new("dpkg-deb").args(["-c", deb]));
    let keel = contents(debs[0]);
    for path in [
        "./usr/bin/keel",
        "./etc/keel/keel.toml",
        "./usr/lib/systemd/system/keel.service",
        "./usr/lib/sysusers.d/keel.conf",
        "./usr/lib/tmpfiles.d/keel.conf",
        "./usr/share/man/man1/keel.1.gz",
        "./usr/share/man/man1/keel-machine.1.gz",
        "./usr/share/man/man5/keel.toml.5.gz",
        "./usr/share/bash-completion/completions/keel",
        "./usr/share/keel/nginx/sso/",
        "./usr/share/keel/prometheus/keel.rules.yml",
    ] {
        assert!(keel.lines().any(|l| l.ends_with(path)), "keel lacks {path}:\n{keel}");
    }
    let agent = contents(debs[1]);
    for path in [
        "./usr/sbin/keel-agent",
        "./etc/keel/agent.toml",
        "./usr/lib/systemd/system/keel-agent.socket",
        "./usr/lib/systemd/system/keel-agent@.service",
        "./usr/share/man/man8/keel-agent.8.gz",
    ] {
        assert!(
            agent.lines().any(|l| l.ends_with(path)),
            "keel-agent lacks {path}:\n{agent}"
        );
    }
    let conffiles = run(Command::new("dpkg-deb").args(["-f", debs[0], "Package"]));
    assert_eq!(conffiles.trim(), "keel");
    let info = run(Command::new("dpkg-deb").args(["-I", debs[0], "conffiles"]));
    assert_eq!(info.trim(), "/etc/keel/keel.toml");
    // The unit as packaged, scored offline.
    let tree = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb").args(["-x", debs[0], tree.path().to_str().unwrap()]));
    let unit = tree.path().join("usr/lib/systemd/system/keel.service");
    let report = run(Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit));
    let score: f64 = report
        .lines()
        .find_map(|l| l.split("Overall exposure level for keel.service: ").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no score in:\n{report}"));
    eprintln!("systemd-analyze security keel.service: {score}");
    assert!(score <= 2.0, "keel.service scores {score}:\n{report}");
}
