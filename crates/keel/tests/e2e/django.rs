//! contrib/django against a real keel and a real Django (from PyPI, in the virtualenv `.ci/run`
//! makes; `KEEL_DJANGO_PYTHON` names another): `manage.py keel_sync` follows keel's watch stream
//! with a facility manager's token, and a user added in keel logs in to the app by the SSO header
//! and by the login form (keel's `$6$` hash, checked by keel_django's hasher).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::{req, Keel};

fn wait_until(secs: u64, what: &str, ok: impl FnMut() -> bool) {
    assert!(
        keel_testkit::wait_until(std::time::Duration::from_secs(secs), ok),
        "timed out waiting for {what}"
    );
}

fn python() -> PathBuf {
    let p = std::env::var_os("KEEL_DJANGO_PYTHON").map_or_else(
        || PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/keel-django-venv/bin/python"),
        PathBuf::from,
    );
    assert!(
        p.exists(),
        "{}: no Python with Django; .ci/run makes it (python3 -m venv ~/.cache/keel-django-venv && \
         ~/.cache/keel-django-venv/bin/pip install Django), or set KEEL_DJANGO_PYTHON",
        p.display()
    );
    p
}

fn manage(env: &[(&str, String)], args: &[&str]) -> Command {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../contrib/django/tests");
    let mut c = Command::new(python());
    c.current_dir(&dir)
        .arg("manage.py")
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v)));
    c
}

fn run(env: &[(&str, String)], args: &[&str]) -> String {
    let out = manage(env, args).output().expect("python");
    assert!(
        out.status.success(),
        "manage.py {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The sync process, killed when the test ends however it ends.
struct Sync(Child);

impl Drop for Sync {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn in_app(db: &std::path::Path, login: &str) -> bool {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg(format!(
            "select count(*) from auth_user where username = '{login}' and is_active"
        ))
        .output()
        .expect("sqlite3 (see .ci/run)");
    String::from_utf8_lossy(&out.stdout).trim() == "1"
}

#[tokio::test]
#[cfg_attr(
    not(all(has_django, has_sqlite3)),
    ignore = "needs Django (KEEL_DJANGO_PYTHON), sqlite3, not installed here (.ci/run installs it)"
)]
async fn a_keel_user_appears_in_a_django_app_and_logs_in_by_sso_and_by_form() {
    let k = Keel::start(&["--example-site"]);
    let dir = tempfile::tempdir().unwrap();
    // The app's credential: a manager of the facility `web`, which receives contestants.
    let out = k.cli(&["facility", "add", "web", "--groups", "user", "--managers", "django"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = k.cli(&[
        "token",
        "create",
        "--name",
        "django",
        "--role",
        "manager",
        "--facility",
        "web",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token_file = dir.path().join("keel.token");
    std::fs::write(&token_file, &out.stdout).unwrap();
    let db = dir.path().join("app.sqlite3");
    let env = [
        ("KEEL_DJANGO_DB", db.display().to_string()),
        ("KEEL_URL", k.url.clone()),
        ("KEEL_TOKEN_FILE", token_file.display().to_string()),
    ];
    run(&env, &["migrate", "-v", "0"]);
    let sync = Sync(
        keel_testkit::guard::spawn(
            manage(&env, &["keel_sync"])
                .stdout(Stdio::null())
                .stderr(Stdio::inherit()),
        )
        .expect("python"),
    );
    // The example site's admin arrives with the snapshot: the sync is following.
    wait_until(30, "the snapshot in the app", || in_app(&db, "admin"));

    let hash = keel_password::hash("Zoe-pass-1").unwrap();
    let body =
        json!({"login": "zoe", "group": "user", "firstname": "Zoé", "lastname": "Martin", "password_hash": hash});
    let (status, _) = req(&k, Some(&k.token), Method::POST, "/api/v1/users", Some(body), &[]).await;
    assert_eq!(status, 201);
    let added = Instant::now();
    wait_until(10, "zoe in the app's users", || in_app(&db, "zoe"));
    eprintln!(
        "zoe reached the Django app {} ms after keel acknowledged her",
        added.elapsed().as_millis()
    );

    let seen: Value = serde_json::from_str(&run(&env, &["login_check", "zoe", "Zoe-pass-1"])).unwrap();
    assert_eq!(seen["sso"], json!([200, "zoe"]), "{seen}");
    assert_eq!(seen["anonymous"], 302, "without the header nobody is logged in: {seen}");
    assert_eq!(seen["form"], json!([200, 200, "zoe"]), "{seen}");
    assert_eq!(seen["wrong_password"], 403, "{seen}");
    // Removed in keel: deactivated in the app, and SSO no longer logs her in.
    let out = k.cli(&["users", "rm", "zoe"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_until(10, "zoe deactivated in the app", || !in_app(&db, "zoe"));
    let seen: Value = serde_json::from_str(&run(&env, &["login_check", "zoe", "Zoe-pass-1"])).unwrap();
    assert_eq!(seen["sso"][0], 302, "{seen}");
    drop(sync);
}
