//! Hooks: `<hooks_dir>/<service>.d/{pre,mid,post}_*`, run in name order, directly (never through
//! a shell), with the run's facts in `KEEL_*` variables.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::out::{Code, Fail, Out};

#[derive(Debug, Clone, Copy)]
pub(crate) enum Phase {
    /// Before anything is written; failing stops the run.
    Pre,
    /// After the files are in place; failing rolls them back.
    Mid,
    /// After the run is final; failing is a warning.
    Post,
}

impl Phase {
    fn prefix(self) -> &'static str {
        match self {
            Self::Pre => "pre_",
            Self::Mid => "mid_",
            Self::Post => "post_",
        }
    }
}

/// Whether a service has any hook at all.
pub(crate) fn any(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| {
        d.any(|e| {
            e.is_ok_and(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                n.starts_with("pre_") || n.starts_with("mid_") || n.starts_with("post_")
            })
        })
    })
}

/// Runs a phase's hooks; the first failure stops the phase.
pub(crate) fn run(dir: &Path, phase: Phase, env: &[(&str, String)], out: &mut Out<'_>) -> Result<(), Fail> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Ok(()); // no hooks for this service
    };
    let mut hooks: Vec<_> = read
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(phase.prefix()))
        .map(|e| e.path())
        .collect();
    hooks.sort();
    let code = match phase {
        Phase::Post => Code::PostHookFailed,
        _ => Code::HookFailed,
    };
    for hook in hooks {
        let name = hook
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let meta = std::fs::symlink_metadata(&hook).map_err(|e| Fail::new(code, format!("hook {name}: {e}")))?;
        let mode = meta.permissions().mode();
        if !meta.is_file() || mode & 0o111 == 0 {
            out.info(&format!("hook {name} skipped: not an executable regular file"));
            continue;
        }
        if mode & 0o022 != 0 {
            return Err(Fail::new(
                code,
                format!("hook {name} is writable by group or others; refusing to run it"),
            ));
        }
        let result = Command::new(&hook)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| Fail::new(code, format!("hook {name}: {e}")))?;
        for line in String::from_utf8_lossy(&result.stdout).lines() {
            out.info(&format!("{name}: {line}"));
        }
        if !result.status.success() {
            let why = String::from_utf8_lossy(&result.stderr).trim().to_owned();
            return Err(Fail::new(
                code,
                format!("hook {name} failed ({}): {why}", result.status),
            ));
        }
        if !result.stderr.is_empty() {
            out.warning(&format!("{name}: {}", String::from_utf8_lossy(&result.stderr).trim()));
        }
    }
    Ok(())
}
