//! Homes on home file servers (docs/homes.md): a first login waits for the user's home to exist
//! on its HFS, and `POST /api/v1/users/{login}/move-home` moves a home from one HFS to another
//! through the site's hook.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use crate::{ApiError, AppState, Caller};

/// The `[homes]` table of keel.toml: homes on home file servers. Its `Default` is the one place
/// these defaults are written.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct HomesConfig {
    /// The program (and arguments) that moves a home's files between two HFS (e.g. a script
    /// running rsync), run by `keel users move-home` with KEEL_LOGIN, KEEL_UID, KEEL_FROM_HFS,
    /// KEEL_TO_HFS set; without it, a move must say the files were copied by hand.
    pub move_hook: Option<Vec<String>>,
    /// How long a move's hook may run.
    #[serde(rename = "move_timeout_secs", with = "keel_limits::duration::secs")]
    #[schemars(with = "u64")]
    pub move_timeout: Duration,
    /// How long a first login waits for its home to be created on its HFS: below the PAM hook's
    /// own timeout (keel-agent presence `timeout_secs`, default 5), or the machine gives up first.
    #[serde(rename = "login_wait_secs", with = "keel_limits::duration::secs")]
    #[schemars(with = "u64")]
    pub login_wait: Duration,
}

impl Default for HomesConfig {
    fn default() -> Self {
        Self {
            move_hook: None,
            move_timeout: Duration::from_secs(3600),
            login_wait: Duration::from_secs(3),
        }
    }
}

/// After a first login gave `login` a home on `hfs`: runs the `homes` service of that HFS's
/// facilities now and waits for it (bounded), so the home is there before the login answers.
/// A failure is logged, not returned: the session is open, and the home will follow.
pub(crate) async fn first_login(st: &AppState, login: &str, hfs: u32) {
    let Some(engine) = st.engine() else { return };
    let homes = keel_gen::BuiltIn::Homes.name();
    let snap = st.db.snapshot();
    let facilities = snap
        .facilities()
        .filter(|f| f.hfs == Some(hfs) && f.services.iter().any(|s| s == homes));
    for f in facilities {
        use keel_propagate::TaskState::{Done, Warning};
        match engine.deliver(&f.name, homes, st.config.homes.login_wait).await {
            Ok(Done | Warning) => tracing::info!(%login, hfs, facility = %f.name, "first login: home delivered"),
            Ok(state) => tracing::warn!(
                %login, hfs, facility = %f.name, state = state.as_str(),
                "first login: the home's delivery failed; propagation retries it"
            ),
            Err(e) => {
                tracing::warn!(%login, hfs, facility = %f.name, error = %e, "first login: the home is not delivered yet")
            }
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveBody {
    hfs: u32,
    /// Whether keel runs the move hook (default); `false`: the files were moved by other means.
    #[serde(default = "yes")]
    copy: bool,
}

fn yes() -> bool {
    true
}

/// `POST /api/v1/users/{login}/move-home` (admins): runs the site's move hook, then records the
/// new HFS. A failed hook changes nothing.
#[utoipa::path(post, path = "/users/{login}/move-home", tag = "users", params(("login" = String, Path)), responses((status = 200, description = "the user, on its new HFS", body = keel_model::wire::PublicUser)))]
pub(crate) async fn move_home(
    State(st): State<AppState>,
    caller: Caller,
    Path(login): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let who = caller.admin()?.clone();
    let body: MoveBody = crate::json_body(&body)?;
    let user = st
        .db
        .snapshot()
        .user(&login)
        .cloned()
        .ok_or_else(|| ApiError::NotFound(format!("user {login}")))?;
    if user.hfs == Some(body.hfs) {
        return Ok((StatusCode::OK, Json(user.public_json())).into_response());
    }
    if let (Some(from), true) = (user.hfs, body.copy) {
        let hook = st.config.homes.move_hook.as_ref().ok_or_else(|| {
            ApiError::Conflict(
                "no [homes] move_hook is configured, so keel cannot move the files: set one, or move them \
                 yourself and send \"copy\": false (docs/homes.md)"
                    .into(),
            )
        })?;
        run_hook(hook, st.config.homes.move_timeout, &user, from, body.hfs).await?;
    }
    // The version now, not before the hook: only the hfs is written, and only if it is still
    // where the hook moved it from.
    let current = st
        .db
        .snapshot()
        .user(&login)
        .cloned()
        .ok_or_else(|| ApiError::NotFound(format!("user {login}")))?;
    if current.hfs != user.hfs {
        return Err(ApiError::Conflict(format!(
            "{login}'s home was moved by someone else meanwhile; nothing recorded"
        )));
    }
    let moved = st.db.move_home(&who, &login, current.version, body.hfs).await?;
    tracing::info!(%login, from = ?user.hfs, to = body.hfs, by = %who.name, copied = body.copy, "home moved");
    Ok((StatusCode::OK, Json(moved.public_json())).into_response())
}

/// What of keel's own environment a hook sees: where programs and the keel user's home are, and
/// the locale. Nothing else — keel's environment may hold a database URL with its password, and
/// systemd's `NOTIFY_SOCKET`, which a hook must not speak on.
const HOOK_PASSES: [&str; 7] = ["PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ"];

/// Where a hook looks for programs when keel has no PATH (systemd always gives one).
const HOOK_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The hook's whole environment: [`HOOK_PASSES`] from keel's (`keel_env`), then the move, each
/// value a login or a number (the model's checks): nothing a shell would read twice.
fn hook_env(
    user: &keel_model::User,
    from: u32,
    to: u32,
    keel_env: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Vec<(String, std::ffi::OsString)> {
    let mut env: Vec<(String, std::ffi::OsString)> = HOOK_PASSES
        .iter()
        .filter_map(|k| keel_env(k).map(|v| ((*k).to_owned(), v)))
        .collect();
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), HOOK_PATH.into()));
    }
    env.extend([
        ("KEEL_LOGIN".into(), user.login.as_str().into()),
        ("KEEL_UID".into(), user.uid.to_string().into()),
        ("KEEL_FROM_HFS".into(), from.to_string().into()),
        ("KEEL_TO_HFS".into(), to.to_string().into()),
    ]);
    env
}

/// The hook, with the move in its environment; its failure (exit code, stderr's end) is the error.
async fn run_hook(
    hook: &[String],
    timeout: Duration,
    user: &keel_model::User,
    from: u32,
    to: u32,
) -> Result<(), ApiError> {
    let (prog, args) = hook
        .split_first()
        .ok_or_else(|| ApiError::Failed("[homes] move_hook is empty".into()))?;
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(args)
        .env_clear()
        .envs(hook_env(user, from, to, |k| std::env::var_os(k)))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(timeout, cmd.output())
        .await
        .map_err(|_| {
            ApiError::Failed(format!(
                "the move hook ran longer than {} s; nothing recorded",
                timeout.as_secs()
            ))
        })?
        .map_err(|e| ApiError::Failed(format!("cannot run the move hook {prog}: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: String = stderr
        .trim()
        .chars()
        .rev()
        .take(500)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    Err(ApiError::Failed(format!(
        "the move hook failed ({}); nothing recorded: {tail}",
        out.status
    )))
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use proptest::prelude::*;

    use super::*;

    fn user(login: &str, uid: u32) -> keel_model::User {
        keel_model::User {
            login: keel_model::Login::parse("login", login).unwrap(),
            firstname: "$(reboot)\n".into(),
            lastname: "`id`;".into(),
            group: keel_model::Group::User,
            uid,
            shell: "/bin/sh".into(),
            ssh_keys: Vec::new(),
            password_hash: String::new(),
            password_changed: false,
            hfs: Some(1),
            version: 1,
        }
    }

    proptest! {
        /// Issue 31: whatever keel's own environment holds, and whoever the user is, the hook sees
        /// only the passed-through names and the move, each value the record's own.
        #[test]
        fn fuzz_move_home_environment(
            login in "[a-z_][a-z0-9_]{0,30}",
            uid in any::<u32>(),
            from in any::<u32>(),
            to in any::<u32>(),
            keel_env in proptest::collection::btree_map("[A-Z_]{1,12}|NOTIFY_SOCKET|KEEL_DATABASE|PATH|HOME|LD_PRELOAD|KEEL_LOGIN", any::<String>(), 0..12),
        ) {
            let env = hook_env(&user(&login, uid), from, to, |k| keel_env.get(k).map(OsString::from));
            let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.to_str().unwrap().to_owned());
            for (name, value) in &env {
                let ours = name.starts_with("KEEL_");
                prop_assert!(ours || HOOK_PASSES.contains(&name.as_str()), "{} reached the hook", name);
                if !ours && name != "PATH" {
                    let theirs = keel_env.get(name).map(OsString::from);
                    prop_assert_eq!(Some(value), theirs.as_ref());
                }
            }
            prop_assert_eq!(env.iter().filter(|(n, _)| n == "KEEL_LOGIN").count(), 1, "keel's own KEEL_LOGIN never shadows the move's");
            prop_assert_eq!(get("KEEL_LOGIN"), Some(login));
            prop_assert_eq!(get("KEEL_UID").map(|u| u.parse::<u32>().unwrap()), Some(uid));
            prop_assert_eq!(get("KEEL_FROM_HFS").map(|u| u.parse::<u32>().unwrap()), Some(from));
            prop_assert_eq!(get("KEEL_TO_HFS").map(|u| u.parse::<u32>().unwrap()), Some(to));
            prop_assert!(get("PATH").is_some());
        }
    }

    /// The real hook, run as keel runs it: its environment is the move and the passed-through
    /// names, not the test process's own (`CARGO_*`, here; a database URL, under keel).
    #[tokio::test]
    async fn the_hook_runs_with_the_move_and_nothing_else_of_keels() {
        assert!(
            std::env::var_os("CARGO_MANIFEST_DIR").is_some(),
            "cargo gives tests its variables"
        );
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("env");
        let hook = vec![
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            format!("env > {}", out.display()),
        ];
        run_hook(&hook, Duration::from_secs(10), &user("zoe", 10_001), 1, 2)
            .await
            .unwrap();
        let seen = std::fs::read_to_string(&out).unwrap();
        for want in [
            "KEEL_LOGIN=zoe",
            "KEEL_UID=10001",
            "KEEL_FROM_HFS=1",
            "KEEL_TO_HFS=2",
            "PATH=",
        ] {
            assert!(seen.lines().any(|l| l.starts_with(want)), "{want} missing: {seen}");
        }
        assert!(
            !seen.contains("CARGO_"),
            "keel's own environment reached the hook: {seen}"
        );
    }
}
