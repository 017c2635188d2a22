//! The Debian packages, built by `contrib/debian/build-debs` (debhelper) from this build's
//! binaries (the command docs/install.md gives, with --bin-dir so CI does not build a release
//! twice): what they contain, their conffiles and maintainer scripts, stripped binaries with
//! -dbgsym packages, lintian without an error or warning, and the shipped keel.service's
//! hardening as `systemd-analyze security` scores it (at most 2.0, systemd's "OK" band).
//! Installing, upgrading, purging and reinstalling them on a booted Debian is `.ci/install-test`.

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
#[cfg_attr(
    not(all(feature = "man", has_lintian, has_dh, has_dpkg_deb, has_systemd_analyze)),
    ignore = "needs lintian, dh, dpkg-deb, systemd-analyze (.ci/run installs them) and keel built with --features man"
)]
fn the_debian_packages_hold_what_an_install_needs_pass_lintian_and_keel_service_is_hardened() {
    crate::support::require_tool("lintian");
    crate::support::require_tool("dh");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let bin_dir = Path::new(crate::support::KEEL).parent().unwrap();
    let out = tempfile::tempdir().unwrap();
    // The maintainer must be said: no package goes out under a made-up address.
    let refused = Command::new("bash")
        .arg(root.join("contrib/debian/build-debs"))
        .args([
            "--bin-dir",
            bin_dir.to_str().unwrap(),
            "--out",
            out.path().to_str().unwrap(),
        ])
        .env_remove("DEBEMAIL")
        .env_remove("DEBFULLNAME")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--maintainer"));
    let built = run(Command::new("bash").arg(root.join("contrib/debian/build-debs")).args([
        "--bin-dir",
        bin_dir.to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
        "--maintainer",
        "keel developers <keel@keel.example.org>",
        // gzip: lintian refuses uncompressed packages, and xz of debug binaries takes minutes.
        "--compress",
        "gzip",
    ]));
    let debs: Vec<&str> = built.lines().collect();
    assert_eq!(debs.len(), 4, "keel, keel-agent and their -dbgsym: {built}");
    assert!(
        debs[2].contains("keel-dbgsym_") && debs[3].contains("keel-agent-dbgsym_"),
        "{built}"
    );
    let contents = |deb: &str| run(Command::new("dpkg-deb").args(["-c", deb]));
    let keel = contents(debs[0]);
    for path in [
        "./usr/bin/keel",
        "./etc/keel/keel.toml",
        "./lib/systemd/system/keel.service",
        "./lib/systemd/system/keel-conntrack-log.service",
        "./lib/systemd/system/keel-agent.socket",
        "./lib/systemd/system/keel-agent@.service",
        "./usr/lib/sysusers.d/keel.conf",
        "./usr/lib/tmpfiles.d/keel.conf",
        "./usr/share/doc/keel/changelog.gz",
        "./usr/share/doc/keel/copyright",
        "./usr/share/man/man1/keel.1.gz",
        "./usr/share/man/man1/keel-machine.1.gz",
        "./usr/share/man/man1/keel-users-import.1.gz",
        "./usr/share/man/man5/keel.toml.5.gz",
        "./usr/share/bash-completion/completions/keel",
        "./usr/share/keel/nginx/sso/",
        "./usr/share/keel/prometheus/keel.rules.yml",
        "./usr/share/keel/python/keel_api.py",
        "./usr/share/keel/python/keel_inventory.py",
    ] {
        assert!(keel.lines().any(|l| l.ends_with(path)), "keel lacks {path}:\n{keel}");
    }
    let agent = contents(debs[1]);
    for path in [
        "./usr/sbin/keel-agent",
        "./etc/keel/agent.toml",
        "./lib/systemd/system/keel-presence-heartbeat.service",
        "./usr/share/pam-configs/keel-presence",
        "./usr/share/man/man8/keel-agent.8.gz",
        "./usr/share/man/man8/keel-agent-apply.8.gz",
    ] {
        assert!(
            agent.lines().any(|l| l.ends_with(path)),
            "keel-agent lacks {path}:\n{agent}"
        );
    }
    assert!(
        !agent.contains("keel-agent.socket"),
        "the root agent's socket is keel's host's, not every destination's:\n{agent}"
    );
    let field = |deb: &str, f: &str| run(Command::new("dpkg-deb").args(["-f", deb, f])).trim().to_owned();
    assert_eq!(field(debs[0], "Maintainer"), "keel developers <keel@keel.example.org>");
    assert!(
        field(debs[0], "Depends").contains("keel-agent (= "),
        "{}",
        field(debs[0], "Depends")
    );
    let info = run(Command::new("dpkg-deb").args(["-I", debs[0], "conffiles"]));
    assert_eq!(info.trim(), "/etc/keel/keel.toml");
    // Maintainer scripts by debhelper: systemctl only through deb-systemd-helper/-invoke.
    for deb in &debs[..2] {
        let scripts = tempfile::tempdir().unwrap();
        run(Command::new("dpkg-deb").args(["-e", deb, scripts.path().to_str().unwrap()]));
        let postinst = std::fs::read_to_string(scripts.path().join("postinst")).unwrap();
        assert!(postinst.contains("deb-systemd-helper"), "{deb}: {postinst}");
    }
    // Stripped: the debug symbols are in the -dbgsym package.
    let tree = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb").args(["-x", debs[0], tree.path().to_str().unwrap()]));
    let sections = run(Command::new("readelf")
        .args(["-S", "-W"])
        .arg(tree.path().join("usr/bin/keel")));
    assert!(!sections.contains(".debug_info"), "keel ships unstripped");
    // lintian, as Debian runs it: no error, no warning (the info tags are the dependencies' strings).
    let lint = Command::new("lintian")
        .args(["--fail-on", "error,warning", "--tag-display-limit", "0"])
        .args(&debs[..2])
        .output()
        .unwrap();
    assert!(
        lint.status.success(),
        "lintian:\n{}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
    // The unit as packaged, scored offline.
    let unit = tree.path().join("lib/systemd/system/keel.service");
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
