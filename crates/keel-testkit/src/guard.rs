//! No process a test starts outlives the test binary. [`spawn`] puts the command in a process
//! group of its own and leaves a watchdog beside it: a shell that, once the test process is gone
//! (finished, panicked, killed), kills that whole group — nginx's workers, postgres's backends,
//! whatever the program forked — and removes the directory it was given. The watchdog looks once
//! a second and ends by itself when the group is gone first.

use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Spawns `cmd` in its own process group, watched over (see the module's text).
pub fn spawn(cmd: &mut Command) -> io::Result<Child> {
    spawn_cleaning(cmd, None)
}

/// The same; once the test process is gone the watchdog also removes `dir` (the state of a
/// server that is never dropped, such as the test binary's PostgreSQL cluster).
pub fn spawn_cleaning(cmd: &mut Command, dir: Option<&Path>) -> io::Result<Child> {
    cmd.process_group(0);
    let child = cmd.spawn()?;
    watch_over(std::process::id(), child.id(), dir);
    Ok(child)
}

/// Once process `test` is gone, kills process group `group` and removes `dir`.
fn watch_over(test: u32, group: u32, dir: Option<&Path>) {
    // The directory is passed as an argument, never spliced into the script. (`kill -0 -N` and
    // `kill -9 -N` name the group N; dash's kill takes no `--`.)
    let script = format!(
        "while kill -0 {test} 2>/dev/null; do kill -0 -{group} 2>/dev/null || exit 0; sleep 1; done; \
         kill -9 -{group} 2>/dev/null; [ -z \"$1\" ] || rm -rf -- \"$1\""
    );
    let mut w = Command::new("sh");
    w.args(["-c", &script, "keel-test-watchdog"])
        .arg(dir.map(Path::as_os_str).unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own group: a signal to the test's group (Ctrl-C) leaves it to do its work.
        .process_group(0);
    if let Ok(mut w) = w.spawn() {
        // Reaped when it ends, so no zombie piles up in a long test binary.
        std::thread::spawn(move || w.wait());
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;
    use std::process::Command;
    use std::time::Duration;

    fn group_alive(group: u32) -> bool {
        Command::new("sh")
            .args(["-c", &format!("kill -0 -{group} 2>/dev/null")])
            .status()
            .is_ok_and(|s| s.success())
    }

    /// A stand-in for the test binary dies: the watched group (a shell and the `sleep` it forked)
    /// dies after it, and the directory goes.
    #[test]
    fn the_group_and_its_directory_go_once_the_watched_process_is_gone() {
        let mut test = Command::new("sleep").arg("600").spawn().unwrap();
        let dir = tempfile::tempdir().unwrap().keep();
        let mut child = Command::new("sh")
            .args(["-c", "sleep 600 & wait"])
            .process_group(0)
            .spawn()
            .unwrap();
        super::watch_over(test.id(), child.id(), Some(&dir));
        assert!(
            group_alive(child.id()),
            "the group lives while the watched process does"
        );
        test.kill().unwrap();
        test.wait().unwrap();
        // The shell is this process's child: reaped here (a zombie still counts in its group).
        let gone = crate::wait_until(Duration::from_secs(10), || {
            child.try_wait().ok().flatten().is_some() && !group_alive(child.id())
        });
        assert!(gone, "the group outlived the watched process");
        assert!(
            crate::wait_until(Duration::from_secs(5), || !dir.exists()),
            "the directory stayed"
        );
    }
}
