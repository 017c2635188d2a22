//! HTTPS: keel serves `[tls] listen` with the site CA it makes on first start; curl (the real
//! one) trusts it with `--cacert`; keel's CLI with `--ca-file` or `--pin` — and refuses a server
//! whose certificate matches neither; cookies set over TLS are `Secure`.

use std::process::{Command, Output};

use crate::support::{wait_for_file, Keel, KEEL};

fn keel_cli(k: &Keel, args: &[&str]) -> Output {
    Command::new(KEEL)
        .args(args)
        .env("KEEL_TOKEN", &k.token)
        .env_remove("KEEL_URL")
        .env_remove("KEEL_CA_FILE")
        .env_remove("KEEL_PIN")
        .env("KEEL_CLI_CONFIG", "/nonexistent/cli.toml")
        // The system's store is Debian's bundle, which does not hold keel's site CA.
        .env_remove("SSL_CERT_FILE")
        .output()
        .expect("keel")
}

fn sha256_of_pem(path: &std::path::Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(path)
        .output()
        .expect("openssl");
    let text = String::from_utf8_lossy(&out.stdout);
    let colons = text.trim().rsplit('=').next().unwrap().to_owned();
    format!("sha256:{}", colons.replace(':', "").to_lowercase())
}

#[test]
#[cfg_attr(
    not(all(has_curl, has_openssl)),
    ignore = "needs curl, openssl, not installed here (.ci/run installs it)"
)]
fn https_with_the_site_ca_and_clients_that_check_it() {
    let k = Keel::start_with_config(
        "[tls]\nlisten = \"127.0.0.1:0\"\n[web]\nsecure_cookies = false\n",
        &["--example-site"],
    );
    let tls =
        wait_for_file(&k.data().join("tls.addr"), std::time::Duration::from_secs(30), || false).expect("tls.addr");
    let url = format!("https://{}", tls.trim());
    let ca = k.data().join("tls/ca.pem");
    // The real curl, with the CA keel made.
    let out = Command::new("curl")
        .args(["-sS", "--cacert", ca.to_str().unwrap(), &format!("{url}/healthz")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"status\":\"ok\""));
    // Without it curl refuses, as any client should.
    let out = Command::new("curl")
        .args(["-sS", &format!("{url}/healthz")])
        .output()
        .unwrap();
    assert!(!out.status.success());

    // keel's CLI: the CA, or the certificate's fingerprint.
    let pin = sha256_of_pem(&k.data().join("tls/cert.pem"));
    for trust in [["--ca-file", ca.to_str().unwrap()], ["--pin", pin.as_str()]] {
        let out = keel_cli(&k, &["--url", &url, trust[0], trust[1], "--json", "machine", "list"]);
        assert!(
            out.status.success(),
            "{trust:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // …and refuses a server that matches neither: another CA, another fingerprint, no trust.
    let other = tempfile::tempdir().unwrap();
    let other_ca = other.path().join("ca.pem");
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
        ])
        .args(["-subj", "/CN=another CA", "-keyout"])
        .arg(other.path().join("ca.key"))
        .arg("-out")
        .arg(&other_ca)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let wrong_pin = format!("sha256:{}", "0".repeat(64));
    for (args, why) in [
        (vec!["--ca-file", other_ca.to_str().unwrap()], "certificate"),
        (vec!["--pin", wrong_pin.as_str()], "not the pinned"),
        // Neither: the system's store, which does not hold keel's site CA.
        (vec![], "certificate"),
    ] {
        let mut all = vec!["--url", url.as_str()];
        all.extend(args.iter());
        all.extend(["machine", "list"]);
        let out = keel_cli(&k, &all);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(err.contains(why), "{args:?}: {err}");
    }

    // Issue 30: once the site CA is in the system's store (update-ca-certificates, here
    // SSL_CERT_FILE), the CLI needs no flag.
    let out = Command::new(KEEL)
        .args(["--url", url.as_str(), "machine", "list"])
        .env("KEEL_TOKEN", &k.token)
        .env("KEEL_CLI_CONFIG", "/nonexistent/cli.toml")
        .env_remove("KEEL_CA_FILE")
        .env_remove("KEEL_PIN")
        .env("SSL_CERT_FILE", &ca)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the system store: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The machines' presence hook over HTTPS: the site CA, or it does not talk (the presence
    // secret never goes to an unvouched server).
    let presence = |ca: &std::path::Path| {
        let cfg = other.path().join("presence.toml");
        std::fs::write(
            &cfg,
            format!(
                "url = \"{url}\"\nca_file = \"{}\"\nsecret_file = \"{}\"\nhostname = \"r00p01\"\nstate_file = \"{}\"\n",
                ca.display(),
                k.data().join("presence.secret").display(),
                other.path().join("state.json").display()
            ),
        )
        .unwrap();
        let out = Command::new(crate::propagation::agent_bin())
            .args(["presence", "--presence-config", cfg.to_str().unwrap(), "open", "zoe"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout)
    };
    // keel answers (this is not r00p01's address, so it refuses the login: but it answered).
    let answered = presence(&ca);
    assert!(
        answered.contains("keel answered 403") && answered.contains("r00p01"),
        "{answered}"
    );
    let refused = presence(&other_ca);
    assert!(refused.contains("keel is unreachable"), "{refused}");

    // A cookie set over TLS is Secure even where [web] secure_cookies is off (plain HTTP).
    let header = |base: &str| {
        let out = Command::new("curl")
            .args([
                "-sS",
                "-D",
                "-",
                "-o",
                "/dev/null",
                "--cacert",
                ca.to_str().unwrap(),
                &format!("{base}/login"),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("set-cookie"))
            .unwrap_or_default()
            .to_owned()
    };
    let plain = header(&k.url);
    assert!(!plain.is_empty() && !plain.contains("Secure"), "{plain}");
    let over_tls = header(&url);
    assert!(over_tls.contains("; Secure"), "{over_tls}");
}

/// `[tls] redirect_web`: a browser on the plain listener's pages goes to HTTPS; machines' routes
/// (RPC, netboot, the API) keep answering over plain HTTP.
#[test]
#[cfg_attr(not(has_curl), ignore = "needs curl, not installed here (.ci/run installs it)")]
fn pages_move_to_https_when_asked_and_machines_stay_on_http() {
    let k = Keel::start_with_config(
        "[tls]\nlisten = \"127.0.0.1:0\"\nredirect_web = true\n",
        &["--example-site"],
    );
    let tls =
        wait_for_file(&k.data().join("tls.addr"), std::time::Duration::from_secs(30), || false).expect("tls.addr");
    let port = tls.trim().rsplit(':').next().unwrap().to_owned();
    let status_and_location = |path: &str| {
        let out = Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{redirect_url}",
                &format!("{}{path}", k.url),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(
        status_and_location("/login?next=/machines"),
        format!("308 https://127.0.0.1:{port}/login?next=/machines")
    );
    for machine_path in ["/call/query", "/bootstrap", "/healthz", "/boot/52:54:00:00:00:01"] {
        let got = status_and_location(machine_path);
        assert!(got.starts_with("200 "), "{machine_path}: {got}");
    }
}
