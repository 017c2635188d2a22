//! The engine: Changes in, tasks planned (debounced), GEN once per task, SEND to every destination
//! in parallel, results recorded, failures retried.
//!
//! One loop owns the schedule. A Change plans the (facility, service) tasks it can affect, due
//! after the service's debounce (counted from the first change: a burst becomes one run, and a
//! steady trickle still runs every debounce). Due tasks run on their own tokio tasks, never two of
//! the same (facility, service) at once. A task's serial is made durable before anything is sent,
//! so no two different bundles ever carry the same serial, even across a crash; a restart replans
//! every task, and destinations whose last result already holds the current digest are skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

// tokio's clock, not std's: tests can pause and advance it.
use tokio::time::Instant;

use keel_bundle::{Delta, Encoding, Prepared, SecretKey};
use keel_model::service::File;
use keel_model::{Change, Destination, Facility, Kind, Snapshot};
use keel_store::Db;
use parking_lot::Mutex;
use tokio::sync::{broadcast, Notify, Semaphore};

use crate::send::{self, Outcome, Sender};
use crate::services::{self, Service};
use crate::state::{task_key, DestResult, DestStatus, Task, TaskState};
use crate::EngineError;
use crate::{GenError, ResolveError};

/// The `[propagation]` table of keel.toml: the engine that pushes services to destinations. Its
/// `Default` is the one place these defaults are written.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Run the engine.
    pub enabled: bool,
    /// Wait this long after a change before generating, so a burst becomes one run.
    #[serde(rename = "debounce_ms", with = "keel_limits::duration::millis")]
    #[schemars(with = "u64")]
    pub debounce: Duration,
    /// Sends in flight at once, over all tasks.
    pub parallel: usize,
    /// A send that takes longer is killed and counted as failed.
    #[serde(rename = "send_timeout_secs", with = "keel_limits::duration::secs")]
    #[schemars(with = "u64")]
    pub send_timeout: Duration,
    /// How often failed destinations are looked at again.
    #[serde(rename = "recheck_secs", with = "keel_limits::duration::secs")]
    #[schemars(with = "u64")]
    pub recheck: Duration,
    /// Resend everything this often, changed or not; 0: never.
    #[serde(rename = "refresh_secs", with = "keel_limits::duration::secs_or_never")]
    #[schemars(with = "u64")]
    pub refresh: Option<Duration>,
    /// The first retry after a failure; each next one waits twice as long, up to `retry_max_secs`.
    #[serde(rename = "retry_min_secs", with = "keel_limits::duration::secs")]
    #[schemars(with = "u64")]
    pub retry_min: Duration,
    /// The longest wait between retries.
    #[serde(rename = "retry_max_secs", with = "keel_limits::duration::secs")]
    #[schemars(with = "u64")]
    pub retry_max: Duration,
    /// Send bundles zstd-compressed (a 10,000-user `passwd` goes from 2.2 to 0.9 MB). False only
    /// while some destination still runs a keel-agent that reads plain tars only.
    pub compress: bool,
    /// The ed25519 key bundles are signed with, made at first start; a relative path is under
    /// the data directory.
    pub key_file: PathBuf,
    /// The agent command for `local` destinations (default: `keel-agent apply`, the keel-agent
    /// installed beside keel when there is one).
    pub local_command: Option<Vec<String>>,
    /// How `ssh` destinations are reached.
    pub ssh: crate::SshConfig,
    /// Site choices the built-in services' generators follow.
    #[serde(rename = "generators")]
    pub gen: keel_gen::Options,
    /// Custom services: `[propagation.services.NAME] command = [...]`.
    pub services: BTreeMap<String, crate::CustomService>,
}

impl EngineConfig {
    /// How bundles travel.
    pub fn encoding(&self) -> Encoding {
        if self.compress {
            Encoding::Zstd
        } else {
            Encoding::Tar
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            debounce: Duration::from_secs(2),
            parallel: 64,
            send_timeout: Duration::from_secs(120),
            recheck: Duration::from_secs(3600),
            refresh: Some(Duration::from_secs(86_400)),
            retry_min: Duration::from_secs(5),
            retry_max: Duration::from_secs(3600),
            compress: true,
            key_file: PathBuf::from("bundle.key"),
            local_command: None,
            ssh: crate::SshConfig::default(),
            gen: keel_gen::Options::default(),
            services: BTreeMap::new(),
        }
    }
}

type TaskId = (String, String);

#[derive(Debug, Clone)]
struct Planned {
    due: Instant,
    force: bool,
}

struct Inner {
    db: Arc<Db>,
    cfg: EngineConfig,
    key: SecretKey,
    sender: Arc<dyn Sender>,
    /// What GEN runs and with which site options; replaced whole by a reload of keel.toml.
    generation: arc_swap::ArcSwap<Generation>,
    tasks: Mutex<BTreeMap<TaskId, Task>>,
    queue: Mutex<BTreeMap<TaskId, Planned>>,
    running: Mutex<BTreeSet<TaskId>>,
    sends: Semaphore,
    wake: Notify,
    stopped: std::sync::atomic::AtomicBool,
    /// The seq of the last change the loop has planned for: with an empty queue and nothing
    /// running, the engine has done all it will do for the database up to there.
    seen: std::sync::atomic::AtomicU64,
    /// Every run's end, for callers waiting on one ([`Engine::deliver`]).
    finished: broadcast::Sender<Finished>,
    /// Bundle bytes handed to destinations' agents since the start (metrics).
    sent_bytes: std::sync::atomic::AtomicU64,
    /// One session per ssh destination (`[propagation.ssh] streams`); none: a process per send.
    channels: Option<crate::channel::Channels>,
    /// Per task, its last few states (digest and files), newest last: what deltas are made against.
    states: Mutex<BTreeMap<TaskId, std::collections::VecDeque<KeptState>>>,
    /// Destinations whose agent answered a delta with "unknown format" (older than deltas): full
    /// states for an hour.
    no_deltas: crate::older::OlderAgents,
}

/// How many states of a task the engine keeps to make deltas against (a destination that last
/// applied an older one gets the full state). A 10,000-user `passwd` state is about 2.2 MB.
const KEPT_STATES: usize = 4;

/// A task's state as kept for deltas: its digest and its files.
type KeptState = (String, Arc<Vec<File>>);

/// A bundle to send in its two parts (see [`Prepared::build_parts`]).
type Parts = (Vec<u8>, Arc<Vec<u8>>);

/// The services the engine knows and the options their generators follow.
struct Generation {
    services: BTreeMap<String, Service>,
    gen: keel_gen::Options,
}

/// A task run has ended.
#[derive(Debug, Clone)]
struct Finished {
    id: TaskId,
    /// When the run started: a waiter wants a run that began after its write.
    started: Instant,
    state: TaskState,
}

/// A handle on the running engine (cheap to clone).
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

fn now() -> String {
    keel_store::now_rfc3339()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Engine {
    /// The ssh sessions kept open, one per destination (`[propagation.ssh] streams`).
    pub fn open_sessions(&self) -> usize {
        self.inner
            .channels
            .as_ref()
            .map_or(0, crate::channel::Channels::open_count)
    }

    /// Loads the saved task states, plans every task once (to catch up with changes made while
    /// keel was down, and to resume tasks a crash interrupted), and starts the loop.
    pub async fn start(
        db: Arc<Db>,
        cfg: EngineConfig,
        key: SecretKey,
        sender: Arc<dyn Sender>,
        services: BTreeMap<String, Service>,
    ) -> Result<Self, EngineError> {
        let mut tasks = BTreeMap::new();
        for (k, v) in db.store().prop_state().await? {
            if !k.starts_with("task/") {
                continue;
            }
            match serde_json::from_str::<Task>(&v) {
                Ok(t) => {
                    tasks.insert((t.facility.clone(), t.service.clone()), t);
                }
                Err(e) => tracing::warn!(key = %k, %e, "unreadable propagation state; starting that task afresh"),
            }
        }
        let resumed = tasks.values().filter(|t| t.state.in_flight()).count();
        if resumed > 0 {
            tracing::info!(resumed, "resuming propagation tasks interrupted by a stop");
        }
        let parallel = cfg.parallel.max(1);
        let generation = arc_swap::ArcSwap::from_pointee(Generation {
            services,
            gen: cfg.gen.clone(),
        });
        // The hello waits for ssh to connect and the agent to start.
        let channels = sender.ssh().filter(|s| s.streams).map(|s| {
            crate::channel::Channels::new(
                s.max_channels,
                Duration::from_secs(s.connect_timeout_secs.saturating_add(5)),
            )
        });
        let inner = Arc::new(Inner {
            db,
            cfg,
            key,
            sender,
            channels,
            generation,
            tasks: Mutex::new(tasks),
            queue: Mutex::new(BTreeMap::new()),
            running: Mutex::new(BTreeSet::new()),
            sends: Semaphore::new(parallel),
            wake: Notify::new(),
            stopped: std::sync::atomic::AtomicBool::new(false),
            seen: std::sync::atomic::AtomicU64::new(0),
            sent_bytes: std::sync::atomic::AtomicU64::new(0),
            finished: broadcast::channel(256).0,
            states: Mutex::new(BTreeMap::new()),
            no_deltas: crate::older::OlderAgents::default(),
        });
        let engine = Self { inner };
        // Subscribed before the Snapshot is read: a change after it reaches the loop.
        let rx = engine.inner.db.subscribe();
        engine.saw(engine.inner.db.snapshot().seq());
        engine.plan_all(false, Duration::ZERO);
        tokio::spawn(engine.clone().run(rx));
        Ok(engine)
    }

    pub fn public_key(&self) -> keel_bundle::PublicKey {
        self.inner.key.public()
    }

    pub fn service_names(&self) -> BTreeSet<String> {
        self.inner.generation.load().services.keys().cloned().collect()
    }

    /// New services and generator options (a reload of keel.toml): every task is planned once,
    /// after the debounce, so what the new options change goes out; an unchanged digest is not
    /// resent. A task already running finishes with what it started with.
    pub fn reconfigure(&self, services: BTreeMap<String, Service>, gen: keel_gen::Options) {
        self.inner.generation.store(Arc::new(Generation { services, gen }));
        self.plan_all(false, self.inner.cfg.debounce);
    }

    /// Every task of an existing facility, by facility then service; `facility` narrows it.
    /// A deleted facility's tasks are kept, not shown: their serials must go on should a facility
    /// of that name come back, or its destinations' agents would refuse its bundles as replays.
    pub fn status(&self, facility: Option<&str>) -> Vec<Task> {
        let snap = self.inner.db.snapshot();
        self.inner
            .tasks
            .lock()
            .values()
            .filter(|t| facility.is_none_or(|f| t.facility == f))
            .filter(|t| snap.facility(&t.facility).is_some())
            .cloned()
            .collect()
    }

    /// Bundle bytes handed to destinations' agents since this engine started.
    pub fn bytes_sent(&self) -> u64 {
        self.inner.sent_bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether nothing is planned or running.
    pub fn is_idle(&self) -> bool {
        self.inner.queue.lock().is_empty() && self.inner.running.lock().is_empty()
    }

    /// Whether the engine has planned for every change committed so far and has nothing planned
    /// or running: what a test or a caller waits for after a write (idle alone is also true
    /// before the engine has even received the write's change).
    pub fn is_settled(&self) -> bool {
        self.has_seen_all() && self.is_idle()
    }

    /// Whether the engine has planned for every change committed so far (it may still be
    /// waiting out their debounce).
    pub fn has_seen_all(&self) -> bool {
        self.inner.seen.load(std::sync::atomic::Ordering::SeqCst) >= self.inner.db.snapshot().seq()
    }

    fn saw(&self, seq: u64) {
        self.inner.seen.fetch_max(seq, std::sync::atomic::Ordering::SeqCst);
    }

    /// Stops planning and starting tasks (sends in flight finish). For tests and benchmarks.
    pub fn shutdown(&self) {
        self.inner.stopped.store(true, std::sync::atomic::Ordering::SeqCst);
        self.inner.wake.notify_one();
        // The sessions end with the engine (a send under way finishes first).
        if let Some(channels) = &self.inner.channels {
            channels.retain(|_| false);
        }
    }

    /// Plans `facility`'s tasks (one service, or all it runs) now, sending even unchanged files.
    /// Returns the tasks planned.
    pub fn force(&self, facility: &str, service: Option<&str>) -> Result<Vec<String>, EngineError> {
        self.schedule(facility, service, true)
    }

    /// Plans `facility`'s tasks now; with `force`, unchanged files are sent too.
    pub fn schedule(&self, facility: &str, service: Option<&str>, force: bool) -> Result<Vec<String>, EngineError> {
        let snap = self.inner.db.snapshot();
        let f = snap
            .facility(facility)
            .ok_or_else(|| EngineError::NotFound(format!("facility {facility}")))?;
        let services: Vec<String> = match service {
            Some(s) if f.services.iter().any(|x| x == s) => vec![s.to_owned()],
            Some(s) => {
                return Err(EngineError::Invalid(format!(
                    "service {s} is not enabled on facility {facility}"
                )))
            }
            None => f.services.clone(),
        };
        for s in &services {
            self.plan((facility.to_owned(), s.clone()), Duration::ZERO, force);
        }
        Ok(services)
    }

    /// Runs `facility`'s `service` now (without waiting out the debounce) and waits, at most
    /// `within`, for a run that started after this call to end: what a caller does when a person
    /// is waiting on the result (a first login waits for its home). Returns that run's state.
    pub async fn deliver(&self, facility: &str, service: &str, within: Duration) -> Result<TaskState, EngineError> {
        let mut ends = self.inner.finished.subscribe();
        let asked = Instant::now();
        self.schedule(facility, Some(service), false)?;
        let id = (facility.to_owned(), service.to_owned());
        let wait = async {
            loop {
                match ends.recv().await {
                    Ok(f) if f.id == id && f.started >= asked => return Ok(f.state),
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => {
                        return Err(EngineError::Invalid("the propagation engine stopped".into()))
                    }
                }
            }
        };
        tokio::time::timeout(within, wait).await.unwrap_or_else(|_| {
            Err(EngineError::Timeout(format!(
                "{facility}/{service} did not finish within {} s",
                within.as_secs()
            )))
        })
    }

    /// The signed bundle GEN would send to `destination` now (for inspection, or to try an agent
    /// by hand). It takes a serial of its own, so it can never collide with a real send.
    pub async fn gen_bundle(&self, service: &str, facility: &str, destination: &str) -> Result<Vec<u8>, EngineError> {
        let snap = self.inner.db.snapshot();
        let f = snap
            .facility(facility)
            .ok_or_else(|| EngineError::NotFound(format!("facility {facility}")))?;
        let generation = self.inner.generation.load_full();
        let svc = generation
            .services
            .get(service)
            .ok_or_else(|| EngineError::NotFound(format!("service {service}")))?;
        let files = services::generate(svc, &snap, &self.inner.db.pools(), f, &generation.gen).await?;
        let serial = self.next_serial(facility, service).await?;
        let run_id = uuid::Uuid::new_v4().simple().to_string();
        // A plain tar: this one is for people to look into.
        let files = prepare(Arc::new(files), Encoding::Tar).await?;
        self.inner
            .bundle(svc, facility, destination, serial, &run_id, |key, h| {
                files.build(key, h)
            })
    }

    async fn next_serial(&self, facility: &str, service: &str) -> Result<u64, EngineError> {
        let task = {
            let mut tasks = self.inner.tasks.lock();
            let t = tasks
                .entry((facility.to_owned(), service.to_owned()))
                .or_insert_with(|| Task::new(facility, service));
            t.serial += 1;
            t.clone()
        };
        self.inner.save(&task).await?;
        Ok(task.serial)
    }

    fn plan(&self, id: TaskId, delay: Duration, force: bool) {
        self.plan_marked(id, delay, force, true);
    }

    /// Plans a task; `mark` shows it as PLANNED (a retry does not: its failure stays visible
    /// until it runs again).
    fn plan_marked(&self, id: TaskId, delay: Duration, force: bool, mark: bool) {
        let due = Instant::now() + delay;
        {
            let mut q = self.inner.queue.lock();
            let p = q.entry(id.clone()).or_insert(Planned { due, force });
            p.due = p.due.min(due);
            p.force |= force;
        }
        {
            let mut tasks = self.inner.tasks.lock();
            let t = tasks.entry(id.clone()).or_insert_with(|| Task::new(&id.0, &id.1));
            if mark && !t.state.in_flight() {
                t.state = TaskState::Planned;
            }
        }
        self.inner.wake.notify_one();
    }

    /// Plans every enabled (facility, service) pair.
    fn plan_all(&self, force: bool, delay: Duration) {
        let snap = self.inner.db.snapshot();
        let generation = self.inner.generation.load();
        for f in snap.facilities() {
            for s in &f.services {
                if generation.services.contains_key(s) {
                    self.plan((f.name.clone(), s.clone()), delay, force);
                }
            }
        }
    }

    /// Plans what a burst of changes can affect: each task once, however many changes touch it
    /// (an import of 10,000 users is one pass over the facilities, not 10,000).
    fn on_changes(&self, burst: &Burst) {
        let snap = self.inner.db.snapshot();
        let mut pairs: BTreeSet<TaskId> = burst.tasks.clone();
        for name in &burst.facilities {
            if let Some(f) = snap.facility(name) {
                pairs.extend(f.services.iter().map(|s| (f.name.clone(), s.clone())));
            }
        }
        let generation = self.inner.generation.load();
        if !burst.kinds.is_empty() {
            let affected = |s: &String| {
                generation
                    .services
                    .get(s)
                    .is_some_and(|svc| burst.kinds.iter().any(|k| svc.affected_by(*k)))
            };
            for f in snap.facilities() {
                pairs.extend(
                    f.services
                        .iter()
                        .filter(|s| affected(s))
                        .map(|s| (f.name.clone(), s.clone())),
                );
            }
        }
        for id in pairs {
            let debounce = generation
                .services
                .get(&id.1)
                .map_or(self.inner.cfg.debounce, |s| s.debounce(self.inner.cfg.debounce));
            self.plan(id, debounce, false);
        }
    }

    /// Changes were lost (this receiver lagged behind the broadcast): plans every task, as of
    /// the Snapshot now.
    fn lost_changes(&self) {
        let seq = self.inner.db.snapshot().seq();
        self.plan_all(false, self.inner.cfg.debounce);
        self.saw(seq);
    }

    /// A change and every other one already waiting in the broadcast, gathered; `None` when
    /// changes were lost (the receiver lagged), and everything must be planned.
    fn gather(first: &Change, rx: &mut broadcast::Receiver<Arc<Change>>) -> Option<(Burst, u64)> {
        let mut burst = Burst::default();
        burst.add(first);
        let mut last = first.seq;
        loop {
            match rx.try_recv() {
                Ok(c) => {
                    burst.add(&c);
                    last = last.max(c.seq);
                }
                Err(broadcast::error::TryRecvError::Lagged(_)) => return None,
                Err(_) => return Some((burst, last)),
            }
        }
    }

    async fn run(self, mut rx: broadcast::Receiver<Arc<Change>>) {
        let mut recheck = tokio::time::interval(self.inner.cfg.recheck);
        recheck.tick().await;
        let refresh_every = self
            .inner
            .cfg
            .refresh
            .unwrap_or(Duration::from_secs(u64::from(u32::MAX)));
        let mut refresh = tokio::time::interval(refresh_every);
        refresh.tick().await;
        loop {
            let next = self.next_due();
            tokio::select! {
                r = rx.recv() => match r {
                    Ok(c) => match Self::gather(&c, &mut rx) {
                        Some((burst, last)) => {
                            self.on_changes(&burst);
                            self.saw(last);
                        }
                        None => self.lost_changes(),
                    },
                    Err(broadcast::error::RecvError::Lagged(_)) => self.lost_changes(),
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                () = self.inner.wake.notified() => {}
                () = tokio::time::sleep_until(next) => {}
                _ = recheck.tick() => self.plan_failed(),
                _ = refresh.tick() => self.plan_all(true, Duration::ZERO),
            }
            if self.inner.stopped.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            self.start_due();
        }
    }

    /// When the loop must next look at the queue: the earliest due task that is not running (a
    /// running one wakes the loop when it ends, so a change during a long send costs no spin).
    fn next_due(&self) -> Instant {
        let queue = self.inner.queue.lock();
        let running = self.inner.running.lock();
        queue
            .iter()
            .filter(|(id, _)| !running.contains(*id))
            .map(|(_, p)| p.due)
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
    }

    /// Plans the tasks with a destination not holding the current state.
    fn plan_failed(&self) {
        let failed: Vec<TaskId> = self
            .inner
            .tasks
            .lock()
            .iter()
            .filter(|(_, t)| {
                t.results
                    .values()
                    .any(|r| matches!(r.status, DestStatus::Error | DestStatus::Pending) || r.refused_by_host())
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in failed {
            self.plan(id, Duration::ZERO, false);
        }
    }

    fn start_due(&self) {
        let now = Instant::now();
        let due: Vec<(TaskId, bool)> = {
            // Both locks at once: a task is always in the queue or running, so is_idle never
            // sees a gap between the two.
            let mut q = self.inner.queue.lock();
            let mut running = self.inner.running.lock();
            let ids: Vec<TaskId> = q
                .iter()
                .filter(|(id, p)| p.due <= now && !running.contains(*id))
                .map(|(id, _)| id.clone())
                .collect();
            let due: Vec<(TaskId, bool)> = ids
                .into_iter()
                .filter_map(|id| q.remove(&id).map(|p| (id, p.force)))
                .collect();
            running.extend(due.iter().map(|(id, _)| id.clone()));
            due
        };
        for (id, force) in due {
            let engine = self.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let retry = engine.inner.clone().run_task(&id, force).await;
                let state = engine
                    .inner
                    .tasks
                    .lock()
                    .get(&id)
                    .map_or(TaskState::Waiting, |t| t.state);
                let _ = engine.inner.finished.send(Finished {
                    id: id.clone(),
                    started,
                    state,
                });
                if let Some(delay) = retry {
                    engine.plan_marked(id.clone(), delay, false, false);
                }
                engine.inner.running.lock().remove(&id);
                engine.inner.wake.notify_one();
            });
        }
    }
}

impl Inner {
    /// Signs a bundle of `svc` for `destination`; `build` lays it out (whole, or in parts).
    fn bundle<T>(
        &self,
        svc: &Service,
        facility: &str,
        destination: &str,
        serial: u64,
        run_id: &str,
        build: impl FnOnce(&SecretKey, &keel_bundle::Header<'_>) -> Result<T, keel_bundle::BuildError>,
    ) -> Result<T, EngineError> {
        let created = now();
        let h = keel_bundle::Header {
            service: svc.name(),
            version: svc.version(),
            facility,
            destination,
            run_id,
            created: &created,
            serial,
        };
        build(&self.key, &h).map_err(|e| EngineError::Gen(e.into()))
    }

    async fn save(&self, t: &Task) -> Result<(), EngineError> {
        let json = serde_json::to_string(t).map_err(|e| EngineError::Invalid(e.to_string()))?;
        self.db.store().put_prop_state(&[(t.key(), json)]).await?;
        Ok(())
    }

    /// Changes the task in place. Not a copy: a task holds a result per destination, and a copy
    /// per result recorded made a run to 1,000 destinations cost a million result copies.
    fn update<R>(&self, id: &TaskId, f: impl FnOnce(&mut Task) -> R) -> R {
        let mut tasks = self.tasks.lock();
        f(tasks.entry(id.clone()).or_insert_with(|| Task::new(&id.0, &id.1)))
    }

    /// Changes the task and returns a copy of it (to save, or to read outside the lock).
    fn updated(&self, id: &TaskId, f: impl FnOnce(&mut Task)) -> Task {
        self.update(id, |t| {
            f(t);
            t.clone()
        })
    }

    async fn save_logged(&self, t: &Task) {
        if let Err(e) = self.save(t).await {
            tracing::error!(task = %t.key(), %e, "cannot save propagation state");
        }
    }

    /// Runs one task; returns when to retry failed destinations, if any failed.
    async fn run_task(self: Arc<Self>, id: &TaskId, force: bool) -> Option<Duration> {
        let snap = self.db.snapshot();
        let generation = self.generation.load_full();
        let (Some(facility), Some(svc)) = (snap.facility(&id.0), generation.services.get(&id.1)) else {
            self.update(id, |t| t.state = TaskState::Waiting);
            return None;
        };
        if !facility.services.contains(&id.1) {
            let t = self.updated(id, |t| t.state = TaskState::Waiting);
            self.save_logged(&t).await;
            return None;
        }
        self.update(id, |t| {
            t.state = TaskState::Generating;
            t.started = Some(now());
        });
        let files = match services::generate(svc, &snap, &self.db.pools(), facility, &generation.gen).await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(task = %task_key(&id.0, &id.1), error = %e, "GEN failed");
                let t = self.updated(id, |t| {
                    t.state = TaskState::Generror;
                    t.error = Some(e.to_string());
                    t.finished = Some(now());
                });
                self.save_logged(&t).await;
                return Some(self.cfg.retry_min);
            }
        };
        // Hashed and laid out once here, not once per destination.
        let new = Arc::new(files);
        let files = match prepare(Arc::clone(&new), self.cfg.encoding()).await {
            Ok(f) => f,
            Err(e) => {
                let t = self.updated(id, |t| {
                    t.state = TaskState::Generror;
                    t.error = Some(e.to_string());
                });
                self.save_logged(&t).await;
                return Some(self.cfg.retry_min);
            }
        };
        let digest = files.digest(svc.version());
        let notes = services::notes(svc, &snap, &self.db.pools());
        if let Some(first) = notes.first() {
            // One line per run, not per machine: the status lists each.
            tracing::warn!(task = %task_key(&id.0, &id.1), count = notes.len(), %first, "GEN: machines outside the pools");
        }
        let task = self.updated(id, |t| {
            t.state = TaskState::Generated;
            t.serial += 1;
            t.digest.clone_from(&digest);
            t.error = None;
            t.notes = notes;
        });
        // The serial is durable before any bundle carries it.
        if let Err(e) = self.save(&task).await {
            tracing::error!(%e, "cannot save the task's serial; not sending");
            return Some(self.cfg.retry_min);
        }
        self.keep_state(id, &digest, &new);
        self.send_all(id, svc, facility, &snap, (&files, &new), &task, force)
            .await
    }

    /// Remembers a task's state, to make deltas against once destinations hold it.
    fn keep_state(&self, id: &TaskId, digest: &str, files: &Arc<Vec<File>>) {
        let mut states = self.states.lock();
        let kept = states.entry(id.clone()).or_default();
        kept.retain(|(d, _)| d != digest);
        kept.push_back((digest.to_owned(), Arc::clone(files)));
        while kept.len() > KEPT_STATES {
            kept.pop_front();
        }
    }

    /// The state a destination holds (what its last success applied), if it is kept and the
    /// destination takes deltas.
    fn base_of(&self, id: &TaskId, last: &DestResult, destination: &str) -> Option<KeptState> {
        if !last.status.succeeded() || last.digest.is_empty() {
            return None;
        }
        if self.no_deltas.holds(destination) {
            return None;
        }
        let states = self.states.lock();
        let (digest, files) = states.get(id)?.iter().find(|(d, _)| *d == last.digest)?;
        Some((digest.clone(), Arc::clone(files)))
    }

    /// The delta from the state `base` to `new` for `svc`, made once per run and base.
    async fn delta(
        made: &mut std::collections::HashMap<String, Option<Arc<Delta>>>,
        svc: &Service,
        (files, new): (&Prepared, &Arc<Vec<File>>),
        (digest, base): KeptState,
    ) -> Option<Arc<Delta>> {
        if let Some(d) = made.get(&digest) {
            return d.clone();
        }
        let (files, new, service) = (files.clone(), Arc::clone(new), svc.name().to_owned());
        let delta = tokio::task::spawn_blocking(move || {
            files.delta(&new, &base, |p| keel_model::service::patchable(&service, p))
        })
        .await;
        let delta = match delta {
            Ok(Ok(d)) => Some(Arc::new(d)),
            Ok(Err(e)) => {
                tracing::error!(%e, "cannot build a delta; sending the full state");
                None
            }
            Err(_) => None,
        };
        made.insert(digest, delta.clone());
        delta
    }

    #[allow(clippy::too_many_arguments)]
    async fn send_all(
        self: &Arc<Self>,
        id: &TaskId,
        svc: &Service,
        facility: &Facility,
        snap: &Arc<Snapshot>,
        (files, new): (&Prepared, &Arc<Vec<File>>),
        task: &Task,
        force: bool,
    ) -> Option<Duration> {
        let dests: Vec<Destination> = snap.destinations_of(&id.0, &id.1).cloned().collect();
        let blocked_here = facility.blocked.contains(&id.1);
        if let Some(channels) = &self.channels {
            // A destination removed or blocked everywhere keeps no session open.
            let live: std::collections::HashSet<&str> = snap
                .destinations()
                .filter(|d| !d.blocked)
                .map(|d| d.destination.as_str())
                .collect();
            channels.retain(|key| live.contains(key.split('|').next().unwrap_or(key)));
        }
        let run_id = uuid::Uuid::new_v4().simple().to_string();
        self.update(id, |t| {
            t.state = TaskState::Sending;
            t.results.retain(|k, _| dests.iter().any(|d| &d.destination == k));
        });
        let mut sends = tokio::task::JoinSet::new();
        let mut deltas = std::collections::HashMap::new();
        for d in dests {
            let last = task
                .results
                .get(&d.destination)
                .cloned()
                .unwrap_or_else(DestResult::pending);
            if blocked_here || d.blocked {
                let r = denied(
                    last,
                    if blocked_here {
                        "service blocked on this facility"
                    } else {
                        "destination blocked"
                    },
                );
                self.update(id, |t| {
                    t.results.insert(d.destination.clone(), r);
                });
                continue;
            }
            if !force && last.holds(&task.digest) {
                continue; // unchanged: nothing to send
            }
            let full = self.bundle(svc, &id.0, &d.destination, task.serial, &run_id, |key, h| {
                files.build_parts(key, h)
            });
            let delta = match self.base_of(id, &last, &d.destination) {
                Some(base) => Self::delta(&mut deltas, svc, (files, new), base).await,
                None => None,
            };
            let delta = delta.map(|delta| {
                self.bundle(svc, &id.0, &d.destination, task.serial, &run_id, |key, h| {
                    delta.build_parts(key, h, last.serial)
                })
            });
            let (full, delta) = match (full, delta.transpose()) {
                (Ok(full), Ok(delta)) => (full, delta),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::error!(%e, "cannot build a bundle");
                    continue;
                }
            };
            let inner = self.clone();
            let snap = Arc::clone(snap);
            sends.spawn(async move {
                let _permit = inner.sends.acquire().await;
                let to = match inner.checked_address(&snap, &d).await {
                    Ok(to) => to,
                    Err(why) => return (d.destination, last, refused(why.to_string())),
                };
                let out = inner.send_state(&d, to.as_ref(), full, delta).await;
                (d.destination, last, out)
            });
        }
        while let Some(done) = sends.join_next().await {
            let Ok((dest, last, out)) = done else { continue };
            let r = result(last, &out, task, |failures| self.backoff(failures));
            tracing::debug!(task = %task.key(), %dest, status = ?r.status, "sent");
            self.update(id, |t| {
                t.results.insert(dest, r);
            });
        }
        let task = self.updated(id, |t| {
            t.state = final_state(t);
            t.finished = Some(now());
        });
        self.save_logged(&task).await;
        let failures = task
            .results
            .values()
            .filter(|r| !r.status.succeeded() && !r.blocked_here())
            .map(|r| r.failures)
            .min()?;
        Some(self.backoff(failures))
    }

    fn backoff(&self, failures: u32) -> Duration {
        backoff(self.cfg.retry_min, self.cfg.retry_max, failures)
    }

    /// Sends the delta when there is one, and the full state when there is none or the agent
    /// refused the delta — its base is not what the host holds (202), or it is older than deltas
    /// (201) — in the same run: both carry the same serial and the same files.
    async fn send_state(
        &self,
        d: &Destination,
        to: Option<&send::Resolved>,
        full: Parts,
        delta: Option<Parts>,
    ) -> Outcome {
        let Some(delta) = delta else {
            return self.send_one(d, to, full).await;
        };
        let refused = self.send_one(d, to, delta).await;
        match refused.exit_code {
            Some(202) => tracing::debug!(destination = %d.destination, "delta refused: base differs; full state"),
            Some(201) => {
                tracing::info!(destination = %d.destination, "agent older than deltas: full states for an hour");
                self.no_deltas.note(&d.destination);
            }
            _ => return refused,
        }
        let mut out = self.send_one(d, to, full).await;
        // Why the full state went too, in the result's output (not its stderr: nothing failed).
        out.stdout = format!("{}{}", refused.stderr, out.stdout);
        out.duration += refused.duration;
        out
    }

    /// One bundle to one destination, over its session or a process of its own.
    async fn send_one(&self, d: &Destination, to: Option<&send::Resolved>, (head, tail): Parts) -> Outcome {
        let timeout = self.cfg.send_timeout;
        let bytes = (head.len() + tail.len()) as u64;
        let out = match self.stream(d, to, &head, &tail, timeout).await {
            Some(out) => out,
            None => {
                let Some(cmd) = self.sender.command(d, to) else {
                    return refused("no way to send there".into());
                };
                send::run(cmd, head, tail, timeout).await
            }
        };
        if out.exit_code.is_some() {
            // The agent ran, so it read the bundle (or refused it having read it).
            self.sent_bytes.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        }
        out
    }

    /// For an ssh destination a facility manager added: where it leads now, resolved as ssh will
    /// (its config's HostName, then DNS), checked — never keel's own host, loopback or a machine
    /// outside the facility — and pinned, so ssh connects to the address that was checked.
    /// Admins' destinations are theirs to aim (`None`: ssh resolves the name itself).
    /// The send over `d`'s session, when it is an ssh destination and streams are on; `None`:
    /// send one process (`local`, streams off, or an agent older than streams).
    async fn stream(
        &self,
        d: &Destination,
        to: Option<&send::Resolved>,
        head: &[u8],
        tail: &[u8],
        timeout: Duration,
    ) -> Option<Outcome> {
        let channels = self
            .channels
            .as_ref()
            .filter(|_| d.channel == keel_model::Channel::Ssh)?;
        // One session per destination and the address it was checked at.
        let at = to.and_then(|r| r.addresses.first()).map(ToString::to_string);
        let key = format!("{}|{}", d.destination, at.unwrap_or_default());
        match channels
            .send(&key, || self.sender.command(d, to), head, tail, timeout)
            .await
        {
            crate::channel::Sent::Done(out) => Some(out),
            crate::channel::Sent::Plain => None,
        }
    }

    async fn checked_address(&self, snap: &Snapshot, d: &Destination) -> Result<Option<send::Resolved>, ResolveError> {
        if d.channel != keel_model::Channel::Ssh || d.claimed_by.is_none() {
            return Ok(None);
        }
        let Some(ssh) = self.sender.ssh() else {
            return Ok(None);
        };
        let resolved = send::resolve_ssh(ssh, &d.destination).await?;
        let own = self.db.own_addresses();
        for ip in &resolved.addresses {
            let why = snap
                .refuses_send(&d.facility, *ip, &own)
                .or_else(|| send::is_local(*ip).then(|| format!("{ip} is one of keel's own addresses")));
            if let Some(why) = why {
                return Err(ResolveError::Refused {
                    destination: d.destination.clone(),
                    why,
                });
            }
        }
        Ok(Some(resolved))
    }
}

/// What a send keel refused to make looks like: the agent never ran.
fn refused(why: String) -> Outcome {
    tracing::warn!(%why, "propagation: send refused");
    Outcome {
        exit_code: None,
        stdout: String::new(),
        stderr: format!("keel refused to send: {why}"),
        duration: Duration::ZERO,
    }
}

/// What a burst of changes touches.
#[derive(Debug, Default)]
struct Burst {
    /// Kinds of records changed (other than facilities and destinations).
    kinds: BTreeSet<Kind>,
    /// Facilities changed by name: every service of theirs.
    facilities: BTreeSet<String>,
    /// Tasks whose destinations changed.
    tasks: BTreeSet<TaskId>,
}

impl Burst {
    fn add(&mut self, c: &Change) {
        match c.kind {
            Kind::Facility => {
                self.facilities.insert(c.key.clone());
            }
            Kind::Destination => {
                let mut parts = c.key.splitn(3, '/');
                if let (Some(f), Some(s)) = (parts.next(), parts.next()) {
                    self.tasks.insert((f.to_owned(), s.to_owned()));
                }
            }
            kind => {
                self.kinds.insert(kind);
            }
        }
    }
}

/// The wait before the next try after `failures` in a row: `min`, doubling with each failure,
/// never above `max` (and never overflowing, however many failures).
fn backoff(min: Duration, max: Duration, failures: u32) -> Duration {
    min.saturating_mul(1u32 << failures.saturating_sub(1).min(16)).min(max)
}

/// Hashes, lays out and compresses the files: milliseconds of CPU for a big service, so on a
/// blocking thread.
async fn prepare(files: Arc<Vec<File>>, encoding: Encoding) -> Result<Prepared, EngineError> {
    let prepared = tokio::task::spawn_blocking(move || Prepared::new(&files, encoding))
        .await
        .map_err(GenError::from)?;
    Ok(prepared.map_err(GenError::from)?)
}

fn denied(mut r: DestResult, why: &str) -> DestResult {
    r.status = DestStatus::Denied;
    r.exit_code = None;
    r.stdout.clear();
    r.stderr = why.to_owned();
    r.at = now();
    r.retry_at = None;
    r
}

/// What a destination's status is for an agent's exit code and output (docs/propagation.md's
/// exit-code table): DONE is exit 0 without a remark; WARNING exit 0 with remarks on stderr;
/// DENIED the agent's whitelist refusal (exit 2); every other code — a post hook or a home that
/// failed after the files were written (100, 9) included — is ERROR: retried, never a success.
pub fn status_of(exit_code: Option<i32>, stderr: &str) -> DestStatus {
    match exit_code {
        Some(0) if stderr.trim().is_empty() => DestStatus::Done,
        Some(0) => DestStatus::Warning,
        Some(2) => DestStatus::Denied,
        _ => DestStatus::Error,
    }
}

/// The result of one send, from the agent's exit code and output. `backoff` gives the wait before
/// the next try after that many failures in a row.
fn result(mut r: DestResult, out: &Outcome, task: &Task, backoff: impl Fn(u32) -> Duration) -> DestResult {
    let status = status_of(out.exit_code, &out.stderr);
    let at = now();
    r.status = status;
    r.exit_code = out.exit_code;
    r.stdout.clone_from(&out.stdout);
    r.stderr.clone_from(&out.stderr);
    r.duration_ms = u64::try_from(out.duration.as_millis()).unwrap_or(u64::MAX);
    r.serial = task.serial;
    if status.succeeded() {
        r.digest.clone_from(&task.digest);
        r.last_success = Some(at.clone());
        r.failures = 0;
        r.retry_at = None;
    } else {
        // A refusal by the host is a failure too: counted, alerted on, looked at again.
        r.digest.clear();
        r.last_error = Some(at.clone());
        r.failures += 1;
        r.retry_at = Some(unix_now() + backoff(r.failures).as_secs());
    }
    r.at = at;
    r
}

/// A task's state from its destinations' results: DONE only when every destination is DONE or
/// blocked by an admin (DENIED without an exit code); a host's refusal (DENIED by its whitelist)
/// is an ERROR of the task, as is any failed destination; SENDERROR when one never ran the agent.
fn final_state(t: &Task) -> TaskState {
    let results = || t.results.values();
    if results().any(|r| r.status == DestStatus::Error && matches!(r.exit_code, None | Some(255))) {
        TaskState::Senderror
    } else if results().any(|r| r.status == DestStatus::Error || r.refused_by_host()) {
        TaskState::Error
    } else if results().any(|r| r.status == DestStatus::Warning) {
        TaskState::Warning
    } else {
        TaskState::Done
    }
}

#[cfg(test)]
mod backoff_tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Within [min, max] (max wins when it is the smaller), never shorter after one more
        /// failure, and doubled by it until max.
        #[test]
        fn backoff_grows_to_its_bound(min_ms in 1u64..100_000, max_ms in 1u64..10_000_000, failures in 0u32..100) {
            let (min, max) = (Duration::from_millis(min_ms), Duration::from_millis(max_ms));
            let (now, next) = (backoff(min, max, failures), backoff(min, max, failures + 1));
            prop_assert!(now <= max && now >= min.min(max));
            prop_assert!(next >= now);
            if (1..16).contains(&failures) && now * 2 <= max {
                prop_assert_eq!(next, now * 2);
            }
        }
    }

    #[test]
    fn backoff_table() {
        let (min, max) = (Duration::from_secs(5), Duration::from_secs(3600));
        let waits: Vec<u64> = (0..12).map(|f| backoff(min, max, f).as_secs()).collect();
        assert_eq!(waits, [5, 5, 10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600]);
    }
}

#[cfg(test)]
mod status_tests {
    use super::*;

    /// docs/propagation.md's exit-code table is what the engine does: for every row, the
    /// destination's status and the task's state from the agent's exit code (and its remarks).
    #[test]
    fn the_exit_code_table_in_the_docs_is_what_the_engine_does() {
        let doc = include_str!("../../../docs/propagation.md");
        let table = doc.split("### Exit codes").nth(1).expect("the exit-code table");
        let table = table.split("\n#").next().unwrap_or_default();
        let mut rows = 0;
        for line in table
            .lines()
            .filter(|l| l.starts_with("| ") && !l.starts_with("| code"))
        {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let [_, code, meaning, dest, task, _] = cells[..] else {
                panic!("a row of four cells: {line}");
            };
            let mut t = Task::new("lan", "passwd");
            let r = match code {
                "—" if meaning.contains("blocked") => denied(DestResult::pending(), "blocked"),
                "—" => result(DestResult::pending(), &outcome(None, ""), &t, |_| Duration::ZERO),
                c => {
                    let code: i32 = c.parse().unwrap_or_else(|_| panic!("{line}"));
                    let stderr = if meaning.contains("remarks") { "a remark" } else { "" };
                    result(DestResult::pending(), &outcome(Some(code), stderr), &t, |_| {
                        Duration::ZERO
                    })
                }
            };
            let status = serde_json::to_value(r.status).unwrap_or_default();
            assert_eq!(status, dest, "{line}");
            if !r.status.succeeded() && !r.blocked_here() {
                assert!(
                    r.last_success.is_none() && r.failures == 1,
                    "a failure is counted: {line}"
                );
            }
            t.results.insert("local".into(), r);
            assert!(
                task.starts_with(final_state(&t).as_str()),
                "{line}: {:?}",
                final_state(&t)
            );
            rows += 1;
        }
        assert!(rows >= 17, "the table has every code: {rows} rows");
    }

    fn outcome(exit_code: Option<i32>, stderr: &str) -> Outcome {
        Outcome {
            exit_code,
            stdout: String::new(),
            stderr: stderr.to_owned(),
            duration: Duration::ZERO,
        }
    }
}
