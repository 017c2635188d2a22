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

/// `[homes]` of keel.toml.
#[derive(Debug, Clone)]
pub struct HomesConfig {
    /// What moves a home's files between two HFS (e.g. a script running rsync); without it, a
    /// move must say the files were copied by hand (`"copy": false`).
    pub move_hook: Option<Vec<String>>,
    /// How long a move's hook may run.
    pub move_timeout: Duration,
    /// How long a first login waits for its home to be created on the HFS: below the PAM hook's
    /// own timeout (keel-agent presence `timeout_secs`, default 5), or the machine gives up first.
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
        .env("KEEL_LOGIN", user.login.as_str())
        .env("KEEL_UID", user.uid.to_string())
        .env("KEEL_FROM_HFS", from.to_string())
        .env("KEEL_TO_HFS", to.to_string())
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
