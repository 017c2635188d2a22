//! `keel bench propagation`: `passwd` for many users to many ssh destinations on loopback, beside
//! the cost of as many bare `ssh host true`; GEN and agent apply on their own.
//!
//! Everything runs here: a real sshd (on 127.0.0.1, killed at the end), one keel-agent config and
//! root per destination, the engine in this process on its own SQLite database.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use keel_bundle::{Encoding, SecretKey};
use keel_model::{Channel, Destination, Facility, Group, Pools, Principal, UidRange, User};
use keel_propagate::{DestStatus, Engine, EngineConfig, Senders, SshConfig};
use keel_store::{Db, SqliteStore, Write};

use crate::output::table;
use crate::server::percentile;
use keel_testkit::Sshd;

#[derive(Debug, Default, serde::Serialize)]
pub(crate) struct PropReport {
    pub users: usize,
    pub destinations: usize,
    pub gen_ms: f64,
    /// GEN of passwd for 100,000 users (the federation's size), whatever `--users` is.
    pub gen_100k_ms: f64,
    pub agent_apply_ms: f64,
    pub agent_unchanged_ms: f64,
    /// A delta of one changed password onto what the agent holds.
    pub agent_delta_ms: f64,
    /// The mean of `bare_ssh_runs`: bare ssh measured just before and just after the cold run,
    /// so that the machine's drift over the run weighs on both sides of the ratio alike.
    pub bare_ssh_secs: f64,
    pub bare_ssh_runs: [f64; 2],
    pub cold_secs: f64,
    pub warm_secs: f64,
    /// Bundle bytes keel handed each destination's agent in the warm run (before ssh; not the
    /// agent's answer): what a change costs on the wire, near enough.
    pub warm_bundle_kb_per_dest: f64,
    pub unchanged_ms: f64,
    pub unchanged_sent: usize,
    /// This process (the engine, and the bench's own users) after the warm run.
    pub engine_rss_mb: f64,
    /// ssh sessions the engine keeps open after the warm run (`[propagation.ssh] streams`).
    pub sessions_open: usize,
    /// The ssh client processes this process keeps (the sessions' clients): how many, their RSS
    /// summed (shared pages counted in each), and their PSS summed (shared pages divided).
    pub ssh_clients: usize,
    pub ssh_clients_rss_mb: f64,
    pub ssh_clients_pss_mb: f64,
    /// The most file descriptors this process held open during the warm run, and after it.
    pub fds_peak: usize,
    pub fds_after: usize,
    /// `engine.status()` of every task (what `GET /api/v1/propagation` reads), median of 20.
    pub status_ms: f64,
    pub not_done: usize,
    /// The first failure's status and stderr, when some destination is not DONE.
    pub first_failure: Option<String>,
    /// The warm forced run with every destination reinstalled (its files and agent state wiped):
    /// each refuses the delta (202) and gets the full state in the same run.
    pub warm_reinstalled: Change,
    /// One user's password changed, after the warm runs (connections kept open).
    pub password_change: Change,
    /// One user added.
    pub new_user: Change,
    /// Another password change, h000 reinstalled just before: it must converge.
    pub reinstalled_one: Change,
    /// The filesystem the agents write their files on (`/proc/mounts`), whose fsyncs they count.
    pub agents_fs: String,
}

/// What one run cost, measured around it.
#[derive(Debug, Default, serde::Serialize)]
pub(crate) struct Change {
    /// From the write to the last destination DONE.
    pub secs: f64,
    /// Bundle bytes keel handed the agents (a delta, or a refused delta and the full state).
    pub bundle_bytes_per_dest: f64,
    /// Bytes over loopback in both directions (every destination's ssh is on it), IP and TCP
    /// headers included; and the same less 52 bytes per packet (IPv4 and TCP with timestamps):
    /// the TCP payload.
    pub wire_bytes_per_dest: f64,
    pub tcp_payload_per_dest: f64,
    /// CPU of this process (the engine) and of everything else on the machine (ssh, sshd, agents).
    pub engine_cpu_ms: f64,
    pub others_cpu_ms: f64,
    /// Processes the machine started during the run (`/proc/stat`), per destination.
    pub processes_per_dest: f64,
    /// What the agents said: applies, of which deltas, refused deltas (202), their mean CPU per
    /// apply and fsyncs per apply.
    pub applies: usize,
    pub deltas: usize,
    pub refused_deltas: usize,
    pub agent_cpu_ms: f64,
    pub agent_fsyncs: f64,
    /// Destinations not DONE after it.
    pub not_done: usize,
}

/// This process's `ssh` children: how many, their summed RSS and PSS in MB.
fn ssh_children() -> (usize, f64, f64) {
    let me = std::process::id().to_string();
    let kb = |text: &str, key: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let (mut n, mut rss, mut pss) = (0, 0.0, 0.0);
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let dir = entry.path();
        let Ok(status) = std::fs::read_to_string(dir.join("status")) else {
            continue;
        };
        let ppid = status.lines().find_map(|l| l.strip_prefix("PPid:")).map(str::trim);
        let name = status.lines().find_map(|l| l.strip_prefix("Name:")).map(str::trim);
        if ppid != Some(me.as_str()) || name != Some("ssh") {
            continue;
        }
        n += 1;
        rss += kb(&status, "VmRSS:");
        pss += kb(
            &std::fs::read_to_string(dir.join("smaps_rollup")).unwrap_or_default(),
            "Pss:",
        );
    }
    (n, rss / 1024.0, pss / 1024.0)
}

/// `n` bench users, each with its own login, names and hash (`data::user`): logins counting up
/// under one prefix would flatter the bundle's compression.
fn users(n: usize) -> anyhow::Result<Vec<User>> {
    (0..u32::try_from(n)?).map(crate::data::user).collect()
}

/// `remote` replaces `keel-agent apply` on the destinations (e.g. `cat >/dev/null`, to see what
/// the transfer alone costs).
pub(crate) async fn run(
    dir: &Path,
    n_users: usize,
    n_dests: usize,
    remote: Option<&str>,
    encoding: Encoding,
    streams: bool,
) -> anyhow::Result<PropReport> {
    std::fs::create_dir_all(dir)?;
    let dir = std::fs::canonicalize(dir)?;
    let agent = agent_bin()?;
    let mut r = PropReport {
        users: n_users,
        destinations: n_dests,
        ..Default::default()
    };
    let all = users(n_users)?;
    r.gen_ms = gen_ms(&all);
    r.gen_100k_ms = if n_users == 100_000 {
        r.gen_ms
    } else {
        gen_ms(&users(100_000)?)
    };
    let key = SecretKey::generate()?;
    eprintln!("bench: keel-agent apply of passwd for {n_users} users");
    (r.agent_apply_ms, r.agent_unchanged_ms, r.agent_delta_ms) =
        agent_apply(&dir.join("apply"), &agent, &key, &all, encoding)?;
    eprintln!("bench: starting sshd and {n_dests} agents");
    let sshd = Sshd::start(&dir.join("sshd"))?;
    let names: Vec<String> = (0..n_dests).map(|i| format!("h{i:03}")).collect();
    let configs: Vec<PathBuf> = names
        .iter()
        .map(|n| make_agent(&dir.join("agents"), n, &key))
        .collect::<anyhow::Result<_>>()?;
    let pairs: Vec<(&str, &Path)> = names
        .iter()
        .map(String::as_str)
        .zip(configs.iter().map(PathBuf::as_path))
        .collect();
    let ssh_config = sshd.client_config(&pairs)?;
    eprintln!("bench: {n_dests} bare `ssh host true`, 64 at a time");
    r.bare_ssh_runs[0] = bare_ssh(&ssh_config, &names).await?;
    let db = setup_db(&dir.join("db"), &all, &names).await?;
    let ssh = |persist: &str| SshConfig {
        config_file: Some(ssh_config.clone()),
        remote_command: remote.map_or_else(|| format!("{} apply", agent.display()), str::to_owned),
        control_persist: persist.into(),
        control_dir: Some(dir.join("ctl")),
        // Every destination is the same sshd: one master each, or they would share h000's.
        control_name: "%n".into(),
        // A stand-in remote command (`cat >/dev/null`: the transfer alone) serves no stream.
        streams: streams && remote.is_none(),
        ..SshConfig::default()
    };
    std::fs::create_dir_all(dir.join("ctl"))?;
    eprintln!("bench: cold propagation (a new ssh connection per destination)");
    let (engine, secs) = start_engine(&db, ssh(""), SecretKey::from_base64(&key.to_base64())?, encoding).await?;
    r.cold_secs = secs;
    eprintln!("bench: {n_dests} bare `ssh host true` again");
    r.bare_ssh_runs[1] = bare_ssh(&ssh_config, &names).await?;
    r.bare_ssh_secs = f64::midpoint(r.bare_ssh_runs[0], r.bare_ssh_runs[1]);
    r.not_done = not_done(&engine, n_dests);
    r.first_failure = first_failure(&engine);
    eprintln!("bench: unchanged re-run");
    let before = sent_at(&engine);
    r.unchanged_ms = timed(&engine, false).await? * 1000.0;
    let after = sent_at(&engine);
    r.unchanged_sent = after.iter().filter(|(d, at)| before.get(*d) != Some(at)).count();
    engine.shutdown();
    eprintln!("bench: warm propagation (connections kept open)");
    let (engine, _) = start_engine(&db, ssh("120"), key, encoding).await?;
    timed(&engine, true).await?; // opens the master connections
    let fds = FdSampler::start();
    let sent = engine.bytes_sent();
    r.warm_secs = timed(&engine, true).await?;
    r.warm_bundle_kb_per_dest = (engine.bytes_sent() - sent) as f64 / 1024.0 / n_dests.max(1) as f64;
    r.fds_peak = fds.stop();
    r.fds_after = open_fds();
    r.engine_rss_mb = crate::server::rss_mb(std::process::id())?;
    r.sessions_open = engine.open_sessions();
    (r.ssh_clients, r.ssh_clients_rss_mb, r.ssh_clients_pss_mb) = ssh_children();
    r.status_ms = status_ms(&engine);
    r.not_done += not_done(&engine, n_dests);
    r.first_failure = r.first_failure.or_else(|| first_failure(&engine));
    r.agents_fs = filesystem_of(&dir.join("agents"));
    if remote.is_none() {
        eprintln!("bench: warm propagation to {n_dests} reinstalled destinations");
        for n in &names {
            reinstall(&dir.join("agents").join(n))?;
        }
        r.warm_reinstalled = measured(&engine, n_dests, async || timed(&engine, true).await.map(drop)).await?;
        eprintln!("bench: one password change");
        let mut changed = all[0].clone();
        let hash = |i: usize| -> anyhow::Result<String> { Ok(crate::data::user(u32::try_from(i)?)?.password_hash) };
        changed.password_hash = hash(n_users + 1)?;
        r.password_change = measured(&engine, n_dests, async || put_user(&db, &engine, &changed, None).await).await?;
        eprintln!("bench: one new user");
        let added = crate::data::user(u32::try_from(n_users)?)?;
        r.new_user = measured(&engine, n_dests, async || put_user(&db, &engine, &added, Some(0)).await).await?;
        eprintln!("bench: one password change, h000 reinstalled just before");
        reinstall(&dir.join("agents/h000"))?;
        changed.password_hash = hash(n_users + 2)?;
        r.reinstalled_one = measured(&engine, n_dests, async || put_user(&db, &engine, &changed, None).await).await?;
        ensure!(
            std::fs::read_to_string(dir.join("agents/h000/root/etc/passwd"))?
                .lines()
                .count()
                == n_users + 2,
            "the reinstalled h000 did not converge"
        );
        r.first_failure = r.first_failure.or_else(|| first_failure(&engine));
    }
    engine.shutdown();
    drop(sshd);
    Ok(r)
}

/// A destination as reinstalled: its files back to the host's own, its agent state gone.
fn reinstall(agent_dir: &Path) -> anyhow::Result<()> {
    let state = agent_dir.join("root/var/lib/keel-agent");
    if state.exists() {
        std::fs::remove_dir_all(&state)?;
    }
    std::fs::write(agent_dir.join("root/etc/passwd"), "root:x:0:0:root:/root:/bin/bash\n")?;
    std::fs::write(agent_dir.join("root/etc/group"), "root:x:0:\n")?;
    std::fs::write(agent_dir.join("root/etc/shadow"), "root:*:19000:0:99999:7:::\n")?;
    Ok(())
}

/// Writes `u` and waits for the engine to have sent it everywhere.
async fn put_user(db: &Db, engine: &Engine, u: &User, expected: Option<u64>) -> anyhow::Result<()> {
    db.write(&Principal::system(), |_, _| Ok(vec![Write::put(u, expected, false)?]))
        .await?;
    // The engine plans on the change (debounce 0); settled = planned for it and idle again.
    settle(engine).await
}

/// Runs `run` and measures around it (see [`Change`]).
async fn measured(engine: &Engine, n: usize, run: impl AsyncFnOnce() -> anyhow::Result<()>) -> anyhow::Result<Change> {
    let per = |x: f64| x / n.max(1) as f64;
    let (lo, cpu, started, sent) = (loopback(), cpu_ms(), forks(), engine.bytes_sent());
    let mine = process_cpu_ms();
    let t = Instant::now();
    run().await?;
    let secs = t.elapsed().as_secs_f64();
    let (engine_ms, all_ms) = (process_cpu_ms() - mine, cpu_ms() - cpu);
    let (bytes, packets) = (loopback().0 - lo.0, loopback().1 - lo.1);
    let mut c = Change {
        secs,
        bundle_bytes_per_dest: per((engine.bytes_sent() - sent) as f64),
        wire_bytes_per_dest: per(bytes as f64),
        tcp_payload_per_dest: per(bytes.saturating_sub(52 * packets) as f64),
        engine_cpu_ms: engine_ms,
        others_cpu_ms: (all_ms - engine_ms).max(0.0),
        processes_per_dest: per((forks() - started) as f64),
        not_done: not_done(engine, n),
        ..Change::default()
    };
    let said: Vec<String> = engine
        .status(Some("bench"))
        .into_iter()
        .flat_map(|t| t.results.into_values().map(|r| r.stdout))
        .collect();
    let (mut cpu_sum, mut fsync_sum) = (0.0, 0.0);
    for out in &said {
        let Some(line) = out.lines().find(|l| l.contains(" applied: ")) else {
            continue;
        };
        c.applies += 1;
        c.deltas += usize::from(out.contains("a delta onto serial"));
        c.refused_deltas += usize::from(out.contains("(code=202)"));
        let number_before = |what: &str| {
            line.split(", ")
                .find_map(|part| part.strip_suffix(what))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        fsync_sum += number_before(" fsync(s)");
        cpu_sum += number_before(" ms CPU");
    }
    let applies = c.applies.max(1) as f64;
    (c.agent_cpu_ms, c.agent_fsyncs) = (cpu_sum / applies, fsync_sum / applies);
    Ok(c)
}

/// Loopback's transmitted bytes and packets (every packet on lo is sent once and received once).
fn loopback() -> (u64, u64) {
    let read = |f: &str| {
        std::fs::read_to_string(format!("/sys/class/net/lo/statistics/{f}"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };
    (read("tx_bytes"), read("tx_packets"))
}

/// The machine's CPU time (user, nice, system, irq, softirq) in ms, from `/proc/stat`.
fn cpu_ms() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let jiffies: u64 = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .enumerate()
        .filter(|(i, _)| matches!(i, 0 | 1 | 2 | 5 | 6))
        .filter_map(|(_, v)| v.parse::<u64>().ok())
        .sum();
    // USER_HZ is 100 on Linux.
    jiffies as f64 * 10.0
}

/// This process's CPU time in ms.
fn process_cpu_ms() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec as f64 * 1000.0 + t.tv_nsec as f64 / 1e6
}

/// Processes started on the machine since boot (`/proc/stat`'s `processes`).
fn forks() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("processes "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The type of the filesystem `path` is on: the longest mount point of `/proc/mounts` above it.
fn filesystem_of(path: &Path) -> String {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() > 2 && path.starts_with(f[1])).then(|| (f[1].len(), format!("{} ({} on {})", f[2], f[0], f[1])))
        })
        .max()
        .map(|(_, fs)| fs)
        .unwrap_or_default()
}

/// Descriptors open in this process now.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count)
}

/// Samples [`open_fds`] every 20 ms on a thread of its own until stopped; the most seen.
struct FdSampler {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<usize>,
}

impl FdSampler {
    fn start() -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut most = open_fds();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                most = most.max(open_fds());
                std::thread::sleep(Duration::from_millis(20));
            }
            most
        });
        Self { stop, thread }
    }

    fn stop(self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

/// The median time of reading every task's state and results.
fn status_ms(engine: &Engine) -> f64 {
    let times: Vec<f64> = (0..20)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(engine.status(None));
            crate::server::ms(t)
        })
        .collect();
    percentile(&times, 0.5)
}

fn agent_bin() -> anyhow::Result<PathBuf> {
    crate::server::sibling("keel-agent")
}

/// GEN of passwd for every user: the median of 20 runs.
fn gen_ms(all: &[User]) -> f64 {
    let input = keel_gen::Input {
        facility: "bench",
        users: all.iter().collect(),
        ..Default::default()
    };
    let opts = keel_gen::Options::default();
    let times: Vec<f64> = (0..20)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(keel_gen::passwd(&input, &opts).ok());
            crate::server::ms(t)
        })
        .collect();
    percentile(&times, 0.5)
}

fn make_agent(parent: &Path, name: &str, key: &SecretKey) -> anyhow::Result<PathBuf> {
    let dir = parent.join(name);
    std::fs::create_dir_all(dir.join("root/etc"))?;
    std::fs::write(dir.join("root/etc/passwd"), "root:x:0:0:root:/root:/bin/bash\n")?;
    std::fs::write(dir.join("root/etc/group"), "root:x:0:\n")?;
    std::fs::write(dir.join("root/etc/shadow"), "root:*:19000:0:99999:7:::\n")?;
    let cfg = dir.join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "fqdn = \"{name}\"\ntrusted_keys = [\"{}\"]\nroot_dir = \"{}\"\n",
            key.public(),
            dir.join("root").display()
        ),
    )?;
    Ok(cfg)
}

/// keel-agent on a fresh root, then the same files again under a new serial: medians of 5.
fn agent_apply(
    dir: &Path,
    agent: &Path,
    key: &SecretKey,
    all: &[User],
    encoding: Encoding,
) -> anyhow::Result<(f64, f64, f64)> {
    let input = keel_gen::Input {
        facility: "bench",
        users: all.iter().collect(),
        ..Default::default()
    };
    let files = keel_gen::passwd(&input, &keel_gen::Options::default())?;
    let header = |serial| keel_bundle::Header {
        service: "passwd",
        version: keel_model::service::Version::new(1, 0),
        facility: "bench",
        destination: "h000",
        run_id: "bench",
        created: "",
        serial,
    };
    // As the engine sends it: with zstd, the agent's figure includes decompressing.
    let bundle = |serial| keel_bundle::Prepared::new(&files, encoding)?.build(key, &header(serial));
    let (first, second) = (bundle(1)?, bundle(2)?);
    // One password changed, as a delta onto serial 2.
    let mut changed = files.clone();
    let shadow = changed
        .iter_mut()
        .find(|f| f.path == "shadow")
        .context("a shadow file")?;
    // The first salt character of the first user's `$6$salt$hash`.
    let at = shadow.data.iter().position(|&b| b == b':').context("a shadow line")? + 4;
    shadow.data[at] = if shadow.data[at] == b'a' { b'b' } else { b'a' };
    let delta = {
        let prepared = keel_bundle::Prepared::new(&changed, encoding)?;
        let (head, tail) = prepared
            .delta(&changed, &files, |p| keel_model::service::patchable("passwd", p))?
            .build_parts(key, &header(3), 2)?;
        [head, tail.to_vec()].concat()
    };
    // Kept beside the runs (with --dir) to try the agent by hand.
    std::fs::create_dir_all(dir)?;
    let name = match encoding {
        Encoding::Tar => "bundle.tar",
        Encoding::Zstd => "bundle.tar.zst",
    };
    std::fs::write(dir.join(name), &first)?;
    std::fs::write(dir.join("unchanged.bundle"), &second)?;
    std::fs::write(dir.join("delta.bundle"), &delta)?;
    let (mut fresh, mut same, mut patched) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..5 {
        let cfg = make_agent(&dir.join(format!("run{i}")), "h000", key)?;
        fresh.push(apply_once(agent, &cfg, &first)?);
        same.push(apply_once(agent, &cfg, &second)?);
        patched.push(apply_once(agent, &cfg, &delta)?);
    }
    Ok((
        percentile(&fresh, 0.5),
        percentile(&same, 0.5),
        percentile(&patched, 0.5),
    ))
}

fn apply_once(agent: &Path, cfg: &Path, bundle: &[u8]) -> anyhow::Result<f64> {
    use std::io::Write as _;
    let t = Instant::now();
    let mut child = std::process::Command::new(agent)
        .arg("--config")
        .arg(cfg)
        .arg("apply")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    child.stdin.take().context("stdin")?.write_all(bundle)?;
    let out = child.wait_with_output()?;
    let ms = crate::server::ms(t);
    ensure!(
        out.status.success(),
        "keel-agent: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(ms)
}

/// `ssh host true` to every destination, 64 at a time (the engine's default): wall time.
async fn bare_ssh(cfg: &Path, names: &[String]) -> anyhow::Result<f64> {
    let limit = Arc::new(tokio::sync::Semaphore::new(64));
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for n in names {
        let (limit, cfg, n) = (limit.clone(), cfg.to_owned(), n.clone());
        set.spawn(async move {
            let _p = limit.acquire().await;
            tokio::process::Command::new("ssh")
                .args(["-o", "BatchMode=yes", "-F"])
                .arg(&cfg)
                .args([n.as_str(), "true"])
                .stdin(std::process::Stdio::null())
                .status()
                .await
        });
    }
    while let Some(s) = set.join_next().await {
        ensure!(s??.success(), "a bare ssh failed: is sshd reachable?");
    }
    Ok(t.elapsed().as_secs_f64())
}

async fn setup_db(dir: &Path, all: &[User], names: &[String]) -> anyhow::Result<Arc<Db>> {
    std::fs::create_dir_all(dir)?;
    let mut pools = Pools::default();
    pools.uids.user = UidRange {
        first: 100_000,
        last: 999_999,
    };
    let store = SqliteStore::open(&dir.join("keel.db")).await?;
    let db = Arc::new(Db::open(Arc::new(store), pools).await?);
    let who = Principal::system();
    db.write(&who, |_, _| all.iter().map(|u| Write::put(u, Some(0), false)).collect())
        .await?;
    let services: BTreeSet<String> = ["passwd".to_owned()].into();
    let facility = Facility {
        name: "bench".into(),
        managers: Vec::new(),
        groups: vec![Group::User],
        members: Vec::new(),
        services: vec!["passwd".into()],
        blocked: Vec::new(),
        hfs: None,
        version: 0,
    };
    db.put_facility(&who, facility, 0, &services).await?;
    for n in names {
        let d = Destination {
            facility: "bench".into(),
            service: "passwd".into(),
            destination: n.clone(),
            channel: Channel::Ssh,
            blocked: false,
            claimed_by: None,
            version: 0,
        };
        db.put_destination(&who, d, 0, &services).await?;
    }
    Ok(db)
}

/// Starts an engine (it plans every task at start) and waits for it to settle: seconds taken.
async fn start_engine(
    db: &Arc<Db>,
    ssh: SshConfig,
    key: SecretKey,
    encoding: Encoding,
) -> anyhow::Result<(Engine, f64)> {
    let cfg = EngineConfig {
        debounce: Duration::ZERO,
        compress: encoding == Encoding::Zstd,
        retry_min: Duration::from_secs(3600),
        ..EngineConfig::default()
    };
    let senders = Senders { ssh, local: Vec::new() };
    let t = Instant::now();
    let engine = Engine::start(
        db.clone(),
        cfg,
        key,
        Arc::new(senders),
        keel_propagate::registry(&Default::default()).map_err(anyhow::Error::msg)?,
    )
    .await?;
    settle(&engine).await?;
    Ok((engine, t.elapsed().as_secs_f64()))
}

async fn timed(engine: &Engine, force: bool) -> anyhow::Result<f64> {
    let t = Instant::now();
    engine.schedule("bench", Some("passwd"), force)?;
    settle(engine).await?;
    Ok(t.elapsed().as_secs_f64())
}

async fn settle(engine: &Engine) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    while !engine.is_settled() {
        if Instant::now() > deadline {
            bail!("propagation did not settle within 600 s");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

/// When each destination was last sent to.
fn sent_at(engine: &Engine) -> std::collections::BTreeMap<String, String> {
    engine
        .status(Some("bench"))
        .into_iter()
        .flat_map(|t| t.results.into_iter().map(|(d, r)| (d, r.at)))
        .collect()
}

fn first_failure(engine: &Engine) -> Option<String> {
    engine.status(Some("bench")).into_iter().find_map(|t| {
        let all: Vec<String> = t
            .results
            .into_iter()
            .filter(|(_, r)| r.status != DestStatus::Done)
            .map(|(d, r)| {
                format!(
                    "{d}: {:?} exit {:?} serial {}: {}",
                    r.status,
                    r.exit_code,
                    r.serial,
                    r.stderr.trim()
                )
            })
            .collect();
        (!all.is_empty()).then(|| all.join(" | "))
    })
}

fn not_done(engine: &Engine, n: usize) -> usize {
    let tasks = engine.status(Some("bench"));
    let done = tasks
        .iter()
        .flat_map(|t| t.results.values())
        .filter(|r| r.status == DestStatus::Done)
        .count();
    n.saturating_sub(done)
}

pub(crate) fn print(r: &PropReport) {
    let rows = vec![
        vec![
            format!("GEN passwd, {} users", r.users),
            format!("{:.2} ms (median of 20)", r.gen_ms),
            "< 10 ms".into(),
        ],
        vec![
            "GEN passwd, 100000 users".into(),
            format!("{:.2} ms (median of 20)", r.gen_100k_ms),
            "< 100 ms".into(),
        ],
        vec![
            format!("keel-agent apply, {} users", r.users),
            format!(
                "{:.1} ms; unchanged {:.1} ms; a one-password delta {:.1} ms (process included)",
                r.agent_apply_ms, r.agent_unchanged_ms, r.agent_delta_ms
            ),
            "< 50 ms".into(),
        ],
        vec![
            format!("cold: passwd to {} ssh destinations", r.destinations),
            format!(
                "{:.2} s = {:.2}× {} bare `ssh host true` ({:.2} s: {:.2} before, {:.2} after)",
                r.cold_secs,
                r.cold_secs / r.bare_ssh_secs.max(1e-9),
                r.destinations,
                r.bare_ssh_secs,
                r.bare_ssh_runs[0],
                r.bare_ssh_runs[1]
            ),
            "≤ 1.3×".into(),
        ],
        vec![
            format!(
                "warm forced run, nothing changed ({}), bundle bytes per destination",
                if r.sessions_open > 0 {
                    "sessions kept open"
                } else {
                    "ControlMaster kept open, a process per send"
                }
            ),
            format!("{:.2} s, {:.0} KB", r.warm_secs, r.warm_bundle_kb_per_dest),
            // A contest's 200 destinations, a federation's 1,000 (issue 23).
            if r.destinations > 200 {
                "< 10 s at 1,000"
            } else {
                "< 5 s at 200"
            }
            .into(),
        ],
        vec![
            "unchanged re-run".into(),
            format!("{:.1} ms, {} sent", r.unchanged_ms, r.unchanged_sent),
            if r.destinations > 200 {
                "< 500 ms at 1,000"
            } else {
                "< 200 ms at 200"
            }
            .into(),
        ],
        vec!["destinations not DONE".into(), r.not_done.to_string(), "0".into()],
        vec![
            "engine process: RSS, descriptors (warm run peak / after)".into(),
            format!("{:.1} MB, {} / {}", r.engine_rss_mb, r.fds_peak, r.fds_after),
            String::new(),
        ],
        vec![
            "ssh sessions kept open; their ssh clients: RSS summed / PSS summed".into(),
            format!(
                "{}; {} clients: {:.0} MB / {:.0} MB",
                r.sessions_open, r.ssh_clients, r.ssh_clients_rss_mb, r.ssh_clients_pss_mb
            ),
            "keel + clients < 150 MB at 1,000".into(),
        ],
        vec![
            format!("status of every task ({} results)", r.destinations),
            format!("{:.2} ms (median of 20)", r.status_ms),
            String::new(),
        ],
    ];
    println!("{}", table(&["measure", "result", "target"], rows));
    if r.password_change.applies > 0 {
        print_changes(r);
    }
    if let Some(f) = &r.first_failure {
        println!("first failure: {f}");
    }
}

fn print_changes(r: &PropReport) {
    let col = |c: &Change| {
        vec![
            format!("{:.2} s", c.secs),
            format!(
                "{:.0} B bundle; {:.0} B wire, {:.0} B TCP payload",
                c.bundle_bytes_per_dest, c.wire_bytes_per_dest, c.tcp_payload_per_dest
            ),
            format!("{:.0} ms; others {:.0} ms", c.engine_cpu_ms, c.others_cpu_ms),
            format!("{:.2}", c.processes_per_dest),
            format!(
                "{} ({} deltas, {} refused); {:.2} ms CPU, {:.1} fsyncs each",
                c.applies, c.deltas, c.refused_deltas, c.agent_cpu_ms, c.agent_fsyncs
            ),
            c.not_done.to_string(),
        ]
    };
    let names = [
        "to the last DONE",
        "per destination (both directions)",
        "engine CPU; the rest of the machine",
        "processes started per destination",
        "agent applies (their own figures)",
        "not DONE",
    ];
    let cols = [
        col(&r.warm_reinstalled),
        col(&r.password_change),
        col(&r.new_user),
        col(&r.reinstalled_one),
    ];
    let rows = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mut row = vec![(*n).to_owned()];
            row.extend(cols.iter().map(|c| c[i].clone()));
            row
        })
        .collect();
    println!(
        "{}",
        table(
            &[
                "",
                "all reinstalled (forced)",
                "one password change",
                "one new user",
                "a password, h000 reinstalled",
            ],
            rows
        )
    );
    println!(
        "targets: one change to 1,000 destinations < 2 s, < 2 KB per destination, 0 processes per send. Agents write on {}.",
        r.agents_fs
    );
}
