//! [`SyncEngine`]: notification fetches first, then the safety-net sweep, then backfill; each
//! (user, stream) under its lease; the cursor moved only after the sink accepted everything
//! up to it.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use futures_util::{FutureExt, StreamExt};
use tokio::sync::broadcast;

use super::change::{Change, ChangeKind, Described, Record, RecordKey};
use super::events::{Counters, SyncEvent, SyncMetrics};
use super::intake::Intake;
use super::lane::{Gate, Laned, index};
use super::read::{Select, read};
use super::sink::{Batch, Sink};
use super::state::{BackfillProgress, Commit, StreamState, SyncLease, SyncState, VersionEntry};
use super::stream::{Incremental, SyncStream};
use crate::budget::Lane;
use crate::clock::{Clock, SystemClock};
use crate::config::Endpoints;
use crate::data::{DataClient, DataError};
use crate::error::Error;
use crate::store::TokenStore;
use crate::token::UserId;
use crate::transport::HttpClient;

/// How far back a new user's history is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backfill {
    /// Records dated within this many days (default 90).
    Days(u32),
    /// Everything since 2008 (Withings' first connected scale).
    All,
}

/// 2008-01-01T00:00:00Z: the start of "all history".
const ALL_HISTORY: i64 = 1_199_145_600;

/// The engine's settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SyncConfig {
    /// The streams synced (default: measures, activity, workouts, sleep summaries).
    pub streams: Vec<SyncStream>,
    /// New users' history (default 90 days).
    pub backfill: Backfill,
    /// Backfill chunk length (default 30 days): a crash redoes at most one chunk. The newest
    /// chunk is read by the first live read instead.
    pub chunk: Duration,
    /// Each (user, stream) is read from its cursor at least this often (default 24 h),
    /// catching any missed notification within it: a sweep comes this long after the last
    /// complete read, a notification's fetch included (not with [`reconcile`](Self::reconcile),
    /// whose pass runs at sweeps).
    pub sweep_every: Duration,
    /// `lastupdate` reads start this much before the cursor (default 10 min): rows modified
    /// while a read ran are read again; the version check keeps them from the sink.
    pub reread: Duration,
    /// Window streams re-read this much before their cursor (default 1 h).
    pub overlap: Duration,
    /// Changes per sink batch (default 500).
    pub batch_size: usize,
    /// The (user, stream) lease (default 30 s, renewed at every batch): a dead holder's
    /// lease is taken over within it.
    pub lease_ttl: Duration,
    /// The reconcile pass: re-list records dated within this window at each sweep, diff by
    /// key, emit deletes. Off (`None`) by default; it costs a window read per sweep.
    pub reconcile: Option<Duration>,
    /// Concurrent loops in [`SyncEngine::run`] (default 4): how many (user, stream) jobs one
    /// process works on at once; the request budget paces them all. Sweeps and backfills take
    /// at most `workers - 1` of them (all of one), so a notification never waits for a loop
    /// that waits for the budget on a backfill's behalf.
    pub workers: usize,
    /// Only these users (default `None`: every linked user in the store). Notifications of
    /// other users stay in the inbox for an engine that syncs them.
    pub users: Option<Vec<UserId>>,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            streams: SyncStream::DEFAULT.to_vec(),
            backfill: Backfill::Days(90),
            chunk: Duration::from_secs(30 * 86_400),
            sweep_every: Duration::from_secs(86_400),
            reread: Duration::from_secs(600),
            overlap: Duration::from_secs(3_600),
            batch_size: 500,
            lease_ttl: Duration::from_secs(30),
            reconcile: None,
            workers: 4,
            users: None,
        }
    }
}

impl SyncConfig {
    crate::setters::setters! {
        /// Only these streams.
        fn streams(streams: &[SyncStream]) => streams = streams.to_vec();
        /// How much history new users get.
        fn backfill(backfill: Backfill) => backfill;
        /// The backfill chunk.
        fn chunk(chunk: Duration) => chunk = chunk.max(Duration::from_secs(1));
        /// The sweep period.
        fn sweep_every(every: Duration) => sweep_every;
        /// Changes per batch (at least 1).
        fn batch_size(size: usize) => batch_size = size.max(1);
        /// The lease.
        fn lease_ttl(ttl: Duration) => lease_ttl;
        /// Concurrent loops in [`SyncEngine::run`] (at least 1).
        fn workers(workers: usize) => workers = workers.max(1);
        /// Syncs only these users (the others in the store are left alone).
        fn users(users: &[UserId]) => users = Some(users.to_vec());
        /// Turns the reconcile pass on over this window.
        fn reconcile(window: Option<Duration>) => reconcile;
    }

    /// Whether `user` is one this engine syncs.
    fn wants(&self, user: UserId) -> bool {
        self.users.as_ref().is_none_or(|only| only.contains(&user))
    }
}

/// What one unit of work did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// Work was done in this lane.
    Worked(Lane),
    /// Work in this lane failed (an error event says why) or found its lease taken; it is
    /// retried later.
    Failed(Lane),
    /// Nothing to do now.
    Idle,
}

/// One (user, stream) as [`SyncEngine::status`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamStatus {
    /// Which stream.
    pub stream: SyncStream,
    /// Its stored state.
    pub state: StreamState,
    /// How far the cursor is behind the engine's clock (`None` before the first read).
    pub lag: Option<Duration>,
}

/// One user as [`SyncEngine::status`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UserSync {
    /// Who.
    pub user: UserId,
    /// Why their sync is stopped, if it is.
    pub stopped: Option<String>,
    /// Their streams with stored state.
    pub streams: Vec<StreamStatus>,
}

/// What [`SyncEngine::status`] returns: each stored user's streams, cursors and lag, and
/// the inbox depth.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SyncStatus {
    /// Every user in the token store, by id.
    pub users: Vec<UserSync>,
    /// Pending inbox entries.
    pub inbox_depth: u64,
}

/// How a job ended.
enum Outcome {
    Done,
    /// The lease is elsewhere (another worker), or was lost.
    Busy,
    Failed,
}

struct Inner<S> {
    clients: [DataClient<Laned<S>>; 3],
    store: Arc<dyn TokenStore>,
    sink: Arc<dyn Sink>,
    clock: Arc<dyn Clock>,
    config: SyncConfig,
    gate: Arc<Gate>,
    counters: Counters,
    events: broadcast::Sender<SyncEvent>,
    /// Round-robin positions per lane.
    turn: Mutex<[usize; 3]>,
    /// Sweeps and backfills at once: one loop fewer than [`SyncConfig::workers`].
    background: tokio::sync::Semaphore,
    /// What the engine remembers between steps, so an idle step does not read every
    /// (user, stream) from the store.
    schedule: Mutex<Schedule>,
}

/// In-memory scheduling hints (the store stays the truth: a job re-reads it under its lease).
#[derive(Default)]
struct Schedule {
    /// The users, and when (engine clock, s) they were listed.
    users: Option<(i64, Vec<UserId>)>,
    /// When each (user, stream) is next due for a sweep.
    sweep_due: HashMap<(UserId, SyncStream), i64>,
    /// (user, stream)s whose backfill is done.
    backfilled: std::collections::HashSet<(UserId, SyncStream)>,
}

/// How long the user list is reused by [`SyncEngine::step`].
const USERS_TTL: i64 = 30;

/// The sync engine. Cheap to clone; every clone drives the same state.
///
/// Build it over the app's tower stack (with [`WithingsAuth::layer`](crate::WithingsAuth::layer)
/// in it, so token, refresh and request budget apply), the store holding the tokens (it
/// must keep sync state: every store of this crate does), and the app's [`Sink`].
pub struct SyncEngine<S> {
    inner: Arc<Inner<S>>,
}

impl<S> Clone for SyncEngine<S> {
    fn clone(&self) -> Self {
        SyncEngine {
            inner: self.inner.clone(),
        }
    }
}

impl<S> std::fmt::Debug for SyncEngine<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncEngine")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl<S: HttpClient> SyncEngine<S> {
    /// An engine over `service` (to the API host of `endpoints`), `store` and `sink`, with
    /// the system clock. [`Error::Store`] if `store` keeps no sync state.
    pub fn new(
        service: S,
        endpoints: &Endpoints,
        store: Arc<dyn TokenStore>,
        sink: Arc<dyn Sink>,
        config: SyncConfig,
    ) -> Result<Self, Error> {
        Self::with_clock(
            service,
            endpoints,
            store,
            sink,
            config,
            Arc::new(SystemClock),
        )
    }

    /// The same with a clock of the app's (for scheduling, seeds and horizons only: never a
    /// cursor).
    pub fn with_clock(
        service: S,
        endpoints: &Endpoints,
        store: Arc<dyn TokenStore>,
        sink: Arc<dyn Sink>,
        config: SyncConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, Error> {
        if store.sync_state().is_none() {
            return Err(Error::store(
                "sync",
                "this token store keeps no sync state (TokenStore::sync_state is None)",
            ));
        }
        let gate = Arc::new(Gate::default());
        let client = |lane| {
            DataClient::new(
                Laned {
                    inner: service.clone(),
                    lane,
                    gate: gate.clone(),
                },
                endpoints,
            )
        };
        let clients = [
            client(Lane::Notification),
            client(Lane::Sweep),
            client(Lane::Backfill),
        ];
        let background = tokio::sync::Semaphore::new(config.workers.saturating_sub(1).max(1));
        Ok(SyncEngine {
            inner: Arc::new(Inner {
                clients,
                store,
                sink,
                clock,
                config,
                gate,
                counters: Counters::default(),
                events: broadcast::channel(1024).0,
                turn: Mutex::new([0; 3]),
                background,
                schedule: Mutex::new(Schedule::default()),
            }),
        })
    }

    /// The intake for the notification receiver (inbox first); an unlink it takes stops
    /// this engine's calls for the user at once.
    pub fn intake(&self) -> Intake {
        Intake::new(self.inner.store.clone())
            .expect("checked when the engine was built")
            .with_engine(
                self.inner.gate.clone(),
                self.inner.events.clone(),
                self.inner.clock.clone(),
            )
    }

    /// Events from now on.
    pub fn events(&self) -> broadcast::Receiver<SyncEvent> {
        self.inner.events.subscribe()
    }

    /// Counters since the engine was built.
    pub fn metrics(&self) -> SyncMetrics {
        let c = &self.inner.counters;
        let g = &self.inner.gate;
        SyncMetrics {
            changes_delivered: c.changes_delivered.load(Ordering::Relaxed),
            requests: [0, 1, 2].map(|i| g.sent[i].load(Ordering::Relaxed)),
            refused_for_stopped_users: g.refused.load(Ordering::Relaxed),
            sink_failures: c.sink_failures.load(Ordering::Relaxed),
            backfill_chunks: c.backfill_chunks.load(Ordering::Relaxed),
        }
    }

    fn state(&self) -> &dyn SyncState {
        self.inner
            .store
            .sync_state()
            .expect("checked when the engine was built")
    }

    fn now(&self) -> i64 {
        self.inner
            .clock
            .now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }

    fn emit(&self, event: SyncEvent) {
        let _ = self.inner.events.send(event);
    }

    /// Stops `user`'s sync: no further call for them, an event. Used on unlink and when
    /// Withings refuses the refresh token for good.
    pub async fn stop(&self, user: UserId, reason: &str) -> Result<(), Error> {
        self.inner.gate.stop(user);
        self.state().stop(user, reason).await?;
        self.emit(SyncEvent::Stopped {
            user,
            reason: reason.to_owned(),
        });
        Ok(())
    }

    /// Lets a stopped user sync again (after they authorized anew).
    pub async fn resume(&self, user: UserId) -> Result<bool, Error> {
        self.inner.gate.resume(user);
        self.schedule().users = None;
        self.state().resume(user).await
    }

    /// Removes `user`'s cursors, versions, leases and inbox (their tokens stay: see
    /// [`WithingsAuth::forget`](crate::WithingsAuth::forget)).
    pub async fn forget(&self, user: UserId) -> Result<(), Error> {
        self.state().forget(user).await?;
        let mut schedule = self.schedule();
        schedule.sweep_due.retain(|(u, _), _| *u != user);
        schedule.backfilled.retain(|(u, _)| *u != user);
        schedule.users = None;
        Ok(())
    }

    /// Each stored user's streams, cursors and lag (by the engine's clock), and the inbox
    /// depth.
    pub async fn status(&self) -> Result<SyncStatus, Error> {
        let now = self.now();
        let mut users = Vec::new();
        let mut records = self.inner.store.list().await?;
        records.sort_by_key(|r| r.token.user_id);
        for record in records {
            let user = record.token.user_id;
            let streams = self
                .state()
                .streams(user)
                .await?
                .into_iter()
                .map(|(stream, state)| StreamStatus {
                    stream,
                    state,
                    lag: state.cursor.map(|c| {
                        Duration::from_secs(u64::try_from(now.saturating_sub(c)).unwrap_or(0))
                    }),
                })
                .collect();
            users.push(UserSync {
                user,
                stopped: self.state().stopped(user).await?,
                streams,
            });
        }
        let inbox_depth = self.state().inbox_depth().await?;
        super::events::inbox_depth(inbox_depth);
        Ok(SyncStatus { users, inbox_depth })
    }

    fn schedule(&self) -> std::sync::MutexGuard<'_, Schedule> {
        self.inner
            .schedule
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// [`users`](Self::users), listed again at most every 30 s; users stopped in this process
    /// since are left out at once.
    async fn cached_users(&self) -> Result<Vec<UserId>, Error> {
        let now = self.now();
        let cached = self.schedule().users.clone();
        let users = match cached {
            Some((at, users)) if now.saturating_sub(at) < USERS_TTL && at <= now => users,
            _ => {
                let users = self.users().await?;
                self.schedule().users = Some((now, users.clone()));
                users
            }
        };
        Ok(users
            .into_iter()
            .filter(|u| !self.inner.gate.is_stopped(*u))
            .collect())
    }

    /// The users to sync: every stored user whose refresh token still works and whose sync
    /// is not stopped.
    async fn users(&self) -> Result<Vec<UserId>, Error> {
        let mut users = Vec::new();
        for record in self.inner.store.list().await? {
            let user = record.token.user_id;
            if record.needs_reauthorization
                || self.inner.gate.is_stopped(user)
                || !self.inner.config.wants(user)
            {
                continue;
            }
            if self.state().stopped(user).await?.is_some() {
                self.inner.gate.stop(user);
                continue;
            }
            users.push(user);
        }
        users.sort();
        Ok(users)
    }

    /// One unit of work, in lane order: a pending notification, else a due sweep, else a
    /// backfill chunk. Users take turns within a lane. [`Step::Idle`] also when the other
    /// loops of [`SyncEngine::run`] already hold every sweep and backfill turn: one loop always
    /// stays free for notifications, so a caller driving `step` itself may see `Idle` while
    /// background work is due.
    pub async fn step(&self) -> Result<Step, Error> {
        let step = |lane, outcome| match outcome {
            Outcome::Done => Step::Worked(lane),
            Outcome::Busy | Outcome::Failed => Step::Failed(lane),
        };
        if let Some(outcome) = self.notification_step().await? {
            return Ok(step(Lane::Notification, outcome));
        }
        // Every other loop busy with a sweep or a backfill: this one stays free for the
        // notifications.
        let Ok(_background) = self.inner.background.try_acquire() else {
            return Ok(Step::Idle);
        };
        let users = self.cached_users().await?;
        if let Some(outcome) = self.sweep_step(&users).await? {
            return Ok(step(Lane::Sweep, outcome));
        }
        if let Some(outcome) = self.backfill_step(&users).await? {
            return Ok(step(Lane::Backfill, outcome));
        }
        Ok(Step::Idle)
    }

    /// Catches up and returns: every pending notification, a sweep of every (user, stream)
    /// (due or not), every backfill chunk.
    /// Stops at the first failure (the failure is an event; the work stays for the next
    /// run); `Ok(true)` if everything was done.
    pub async fn run_once(&self) -> Result<bool, Error> {
        let mut all_done = true;
        let mut inbox_rounds = self.state().inbox_depth().await?;
        while inbox_rounds > 0 {
            inbox_rounds -= 1;
            match self.notification_step().await? {
                None => break,
                Some(Outcome::Done) => {}
                Some(_) => all_done = false,
            }
        }
        let users = self.users().await?;
        for user in &users {
            for stream in self.inner.config.streams.clone() {
                if self.inner.gate.is_stopped(*user) {
                    all_done = false;
                    break;
                }
                if !matches!(
                    self.live(*user, stream, Lane::Sweep, true).await?,
                    Outcome::Done
                ) {
                    all_done = false;
                }
            }
        }
        loop {
            match self.backfill_step(&users).await? {
                None => break,
                Some(Outcome::Done) => {}
                Some(_) => return Ok(false),
            }
        }
        Ok(all_done)
    }

    /// Runs [`SyncConfig::workers`] loops of [`step`](Self::step) until `shutdown`
    /// completes, each idling `idle` when it finds nothing to do (or its work failed). The
    /// leases keep the loops (and other processes) off each other's (user, stream).
    pub async fn run(
        &self,
        idle: Duration,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), Error> {
        let shutdown = shutdown.boxed().shared();
        let loops =
            (0..self.inner.config.workers.max(1)).map(|_| self.worker(idle, shutdown.clone()));
        futures_util::future::join_all(loops).await;
        Ok(())
    }

    async fn worker(&self, idle: Duration, shutdown: impl std::future::Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let step = tokio::select! {
                _ = &mut shutdown => return,
                step = self.step() => step,
            };
            match step {
                Ok(Step::Worked(_)) => {}
                Ok(Step::Idle | Step::Failed(_)) | Err(_) => tokio::select! {
                    _ = &mut shutdown => return,
                    _ = tokio::time::sleep(idle) => {}
                },
            }
        }
    }

    /// The next position in `lane`'s round robin over `n` candidates.
    fn turn(&self, lane: Lane, n: usize) -> usize {
        let mut turn = self.inner.turn.lock().unwrap_or_else(|e| e.into_inner());
        let at = turn[index(lane)] % n.max(1);
        turn[index(lane)] = at + 1;
        at
    }

    /// The (user, stream) pairs a lane's step looks at, from the lane's turn on: each user
    /// not stopped here (checked as the step reaches them), with every configured stream.
    fn rotation<'a>(
        &'a self,
        lane: Lane,
        users: &'a [UserId],
    ) -> impl Iterator<Item = (UserId, SyncStream)> + 'a {
        let start = self.turn(lane, users.len());
        (0..users.len())
            .map(move |i| users[(start + i) % users.len()])
            .filter(move |&user| !self.inner.gate.is_stopped(user))
            .flat_map(move |user| {
                let streams = self.inner.config.streams.clone();
                streams.into_iter().map(move |stream| (user, stream))
            })
    }

    async fn notification_step(&self) -> Result<Option<Outcome>, Error> {
        let mut pending = self.state().inbox(64).await?;
        pending.retain(|e| self.inner.config.wants(e.user));
        if pending.is_empty() {
            return Ok(None);
        }
        // Round robin over the users with pending entries, oldest entry first per user.
        let mut users: Vec<UserId> = Vec::new();
        for e in &pending {
            if !users.contains(&e.user) {
                users.push(e.user);
            }
        }
        users.sort();
        let user = users[self.turn(Lane::Notification, users.len())];
        let Some(entry) = pending.into_iter().find(|e| e.user == user) else {
            return Ok(None);
        };
        let linked = self
            .inner
            .store
            .load(user)
            .await?
            .is_some_and(|r| !r.needs_reauthorization);
        if !linked
            || self.is_stopped(user).await?
            || !self.inner.config.streams.contains(&entry.stream)
        {
            self.state().inbox_ack(&entry).await?;
            return Ok(Some(Outcome::Done));
        }
        let outcome = self
            .live(user, entry.stream, Lane::Notification, true)
            .await?;
        // Otherwise left in the inbox: retried at a later step.
        if matches!(outcome, Outcome::Done) {
            self.state().inbox_ack(&entry).await?;
        }
        Ok(Some(outcome))
    }

    async fn sweep_step(&self, users: &[UserId]) -> Result<Option<Outcome>, Error> {
        if users.is_empty() {
            return Ok(None);
        }
        let now = self.now();
        let every = i64::try_from(self.inner.config.sweep_every.as_secs()).unwrap_or(i64::MAX);
        for (user, stream) in self.rotation(Lane::Sweep, users) {
            let known = self.schedule().sweep_due.get(&(user, stream)).copied();
            let due = match known {
                Some(due) => due,
                None => {
                    let st = self.state().load(user, stream).await?;
                    let due = st.swept_at.map_or(now, |s| s.saturating_add(every));
                    self.schedule().sweep_due.insert((user, stream), due);
                    due
                }
            };
            if due <= now {
                return Ok(Some(self.live(user, stream, Lane::Sweep, false).await?));
            }
        }
        Ok(None)
    }

    async fn backfill_step(&self, users: &[UserId]) -> Result<Option<Outcome>, Error> {
        if users.is_empty() {
            return Ok(None);
        }
        for (user, stream) in self.rotation(Lane::Backfill, users) {
            if self.schedule().backfilled.contains(&(user, stream)) {
                continue;
            }
            let st = self.state().load(user, stream).await?;
            match st.backfill {
                Some(b) if b.done() => {
                    self.schedule().backfilled.insert((user, stream));
                }
                Some(_) => return Ok(Some(self.backfill_chunk(user, stream).await?)),
                // Not started: the first live read seeds it.
                None => {}
            }
        }
        Ok(None)
    }

    /// Whether `user`'s sync is stopped, here or (through the store) by another process.
    async fn is_stopped(&self, user: UserId) -> Result<bool, Error> {
        if self.inner.gate.is_stopped(user) {
            return Ok(true);
        }
        if self.state().stopped(user).await?.is_some() {
            self.inner.gate.stop(user);
            return Ok(true);
        }
        Ok(false)
    }

    /// Where a new user's live reads start and where their backfill ends.
    fn seed(&self, now: i64) -> BackfillProgress {
        let chunk = i64::try_from(self.inner.config.chunk.as_secs()).unwrap_or(i64::MAX);
        let horizon = match self.inner.config.backfill {
            Backfill::Days(d) => now.saturating_sub(i64::from(d) * 86_400),
            Backfill::All => ALL_HISTORY.min(now),
        };
        BackfillProgress {
            next_end: now.saturating_sub(chunk).max(horizon),
            horizon,
        }
    }

    /// The live read of (user, stream): `lastupdate` from the cursor (a window from it for
    /// window streams), delivered, then the cursor moved.
    async fn live(
        &self,
        user: UserId,
        stream: SyncStream,
        lane: Lane,
        force: bool,
    ) -> Result<Outcome, Error> {
        let ttl = self.inner.config.lease_ttl;
        let Some(lease) = self.state().lease(user, stream, ttl).await? else {
            return Ok(Outcome::Busy);
        };
        let outcome = self.live_leased(&lease, lane, force).await;
        self.state().release(&lease).await?;
        outcome
    }

    async fn live_leased(
        &self,
        lease: &SyncLease,
        lane: Lane,
        force: bool,
    ) -> Result<Outcome, Error> {
        let (user, stream) = (lease.user, lease.stream);
        let ttl = self.inner.config.lease_ttl;
        let now = self.now();
        if self.is_stopped(user).await? {
            return Ok(Outcome::Busy);
        }
        let mut st = self.state().load(user, stream).await?;
        let every = i64::try_from(self.inner.config.sweep_every.as_secs()).unwrap_or(i64::MAX);
        if lane == Lane::Sweep && !force {
            // Another process may have swept it since this one looked.
            if let Some(swept) = st.swept_at.filter(|s| now.saturating_sub(*s) < every) {
                self.schedule()
                    .sweep_due
                    .insert((user, stream), swept.saturating_add(every));
                return Ok(Outcome::Done);
            }
        }
        if st.cursor.is_none() {
            // A new (user, stream): the live reads start at the newest backfill chunk's start
            // (a lower bound, days back); from the first record on the cursor is only ever a
            // time Withings gave. The older chunks are the backfill's.
            let seed = self.seed(now);
            let commit = Commit {
                cursor: Some(seed.next_end),
                backfill: Some(seed),
                ..Commit::default()
            };
            if !self.state().commit(lease, ttl, commit).await? {
                return Ok(Outcome::Busy);
            }
            st = self.state().load(user, stream).await?;
        }
        let cursor = st.cursor.unwrap_or(now);
        let back = match stream.incremental() {
            Incremental::LastUpdate => self.inner.config.reread,
            Incremental::Window => self.inner.config.overlap,
        };
        let from = cursor.saturating_sub(i64::try_from(back.as_secs()).unwrap_or(0));
        let client = &self.inner.clients[index(lane)];
        let rows = read(client, user, stream, Select::Since(from), now);
        let read = self.deliver_rows(lease, lane, rows).await?;
        let Some((newest, complete)) = read else {
            return Ok(Outcome::Busy);
        };
        if !complete {
            return Ok(Outcome::Failed);
        }
        // Everything read was accepted: the cursor may move to the newest time Withings gave.
        let mut commit = Commit {
            cursor: newest.filter(|n| *n > cursor),
            ..Commit::default()
        };
        // A complete read from the cursor is what a sweep does: a notification's fetch puts
        // the stream's next sweep a `sweep_every` later (unless the sweep also reconciles),
        // so a stream notified daily is never swept and a missed notification is still read
        // within `sweep_every` of the last read.
        let sweeps = lane == Lane::Sweep
            || (lane == Lane::Notification && self.inner.config.reconcile.is_none());
        if sweeps {
            commit.swept_at = Some(now);
        }
        if !self.state().commit(lease, ttl, commit).await? {
            return Ok(Outcome::Busy);
        }
        if sweeps {
            let due = now.saturating_add(every);
            self.schedule().sweep_due.insert((user, stream), due);
        }
        if let Some(cursor) = commit.cursor {
            self.emit(SyncEvent::CursorMoved {
                user,
                stream,
                cursor,
            });
        }
        if lane == Lane::Sweep {
            if let Some(window) = self.inner.config.reconcile {
                let span = i64::try_from(window.as_secs()).unwrap_or(i64::MAX);
                self.reconcile(lease, now.saturating_sub(span), now).await?;
            }
        }
        Ok(Outcome::Done)
    }

    /// One backfill chunk of (user, stream), checkpointed.
    async fn backfill_chunk(&self, user: UserId, stream: SyncStream) -> Result<Outcome, Error> {
        let ttl = self.inner.config.lease_ttl;
        let Some(lease) = self.state().lease(user, stream, ttl).await? else {
            return Ok(Outcome::Busy);
        };
        let outcome = async {
            if self.is_stopped(user).await? {
                return Ok(Outcome::Busy);
            }
            let st: StreamState = self.state().load(user, stream).await?;
            let Some(progress) = st.backfill.filter(|b| !b.done()) else {
                return Ok(Outcome::Done);
            };
            let chunk = i64::try_from(self.inner.config.chunk.as_secs()).unwrap_or(i64::MAX);
            let start = progress
                .next_end
                .saturating_sub(chunk)
                .max(progress.horizon);
            let client = &self.inner.clients[index(Lane::Backfill)];
            let rows = read(
                client,
                user,
                stream,
                Select::Window(start, progress.next_end),
                self.now(),
            );
            let Some((_, complete)) = self.deliver_rows(&lease, Lane::Backfill, rows).await? else {
                return Ok(Outcome::Busy);
            };
            if !complete {
                return Ok(Outcome::Failed);
            }
            let next = BackfillProgress {
                next_end: start,
                horizon: progress.horizon,
            };
            let commit = Commit {
                backfill: Some(next),
                ..Commit::default()
            };
            if !self.state().commit(&lease, ttl, commit).await? {
                return Ok(Outcome::Busy);
            }
            Counters::add(
                &self.inner.counters.backfill_chunks,
                1,
                "withings_sync_backfill_chunks_total",
            );
            self.emit(SyncEvent::BackfillProgress {
                user,
                stream,
                done_to: start,
                horizon: progress.horizon,
            });
            Ok(Outcome::Done)
        }
        .await;
        self.state().release(&lease).await?;
        outcome
    }

    /// Re-lists records dated in `from..=to` and emits a delete for each delivered record
    /// no longer there.
    async fn reconcile(&self, lease: &SyncLease, from: i64, to: i64) -> Result<(), Error> {
        let (user, stream) = (lease.user, lease.stream);
        let client = &self.inner.clients[index(Lane::Sweep)];
        let mut rows = read(
            client,
            user,
            stream,
            Select::Window(from, to.saturating_add(1)),
            to,
        );
        let mut listed = std::collections::HashSet::new();
        while let Some(item) = rows.next().await {
            match item {
                Ok(record) => {
                    listed.insert(record.describe().id);
                }
                // An incomplete list proves nothing: no deletes from it.
                Err(error) => {
                    self.failed(user, stream, &error);
                    return Ok(());
                }
            }
        }
        let gone: Vec<Change> = self
            .state()
            .known(user, stream, from, to)
            .await?
            .into_iter()
            .filter(|k| !listed.contains(&k.id))
            .map(|k| Change {
                key: RecordKey {
                    user,
                    stream,
                    id: k.id,
                },
                version: k.version,
                kind: ChangeKind::Delete,
            })
            .collect();
        let ats: HashMap<String, Option<i64>> = HashMap::new();
        for batch in gone.chunks(self.inner.config.batch_size) {
            if self
                .deliver(lease, Lane::Sweep, batch.to_vec(), &ats)
                .await?
                .is_none()
            {
                return Ok(());
            }
        }
        Ok(())
    }

    fn failed(&self, user: UserId, stream: SyncStream, error: &dyn std::fmt::Display) {
        self.emit(SyncEvent::Failed {
            user,
            stream,
            reason: error.to_string(),
        });
    }

    /// Reads every row, delivering batches as they fill. `Ok(None)`: the lease was lost or
    /// the user stopped; else the newest `modified` (or record time, for window streams)
    /// seen and whether the read was complete (no error, no undecodable row).
    async fn deliver_rows(
        &self,
        lease: &SyncLease,
        lane: Lane,
        mut rows: crate::data::RowStream<Record>,
    ) -> Result<Option<(Option<i64>, bool)>, Error> {
        let (user, stream) = (lease.user, lease.stream);
        let window = stream.incremental() == Incremental::Window;
        let mut newest: Option<i64> = None;
        let mut complete = true;
        let mut fatal = false;
        let mut bad = 0;
        let mut pending: HashMap<String, (Change, Option<i64>)> = HashMap::new();
        let size = self.inner.config.batch_size;
        loop {
            let item = rows.next().await;
            let end = item.is_none();
            match item {
                Some(Ok(record)) => {
                    let Described {
                        id,
                        version,
                        at,
                        modified,
                    } = record.describe();
                    let time = if window { at } else { modified };
                    newest = newest.max(time);
                    let change = Change {
                        key: RecordKey {
                            user,
                            stream,
                            id: id.clone(),
                        },
                        version,
                        kind: ChangeKind::Upsert(Box::new(record)),
                    };
                    match pending.get(&id) {
                        Some((old, _)) if old.rank() >= change.rank() => {}
                        _ => {
                            pending.insert(id, (change, at));
                        }
                    }
                }
                Some(Err(DataError::Row(_))) => {
                    bad += 1;
                    complete = false;
                }
                Some(Err(error)) => {
                    complete = false;
                    fatal = true;
                    if let DataError::Withings(
                        e @ (Error::NeedsReauthorization(_) | Error::AccessRevoked(_)),
                    ) = &error
                    {
                        if !self.inner.gate.is_stopped(user) {
                            self.stop(user, &e.to_string()).await?;
                        }
                        return Ok(None);
                    }
                    self.failed(user, stream, &error);
                }
                None => {}
            }
            let full = pending.len() >= size;
            if (full || end || fatal) && !pending.is_empty() {
                let mut ats = HashMap::new();
                let changes: Vec<Change> = pending
                    .drain()
                    .map(|(id, (c, at))| {
                        ats.insert(id, at);
                        c
                    })
                    .collect();
                if self.deliver(lease, lane, changes, &ats).await?.is_none() {
                    return Ok(None);
                }
            }
            if end || fatal {
                break;
            }
        }
        if bad > 0 {
            self.emit(SyncEvent::BadRows {
                user,
                stream,
                count: bad,
            });
        }
        Ok(Some((newest, complete)))
    }

    /// Delivers one batch: drops what the sink already has at an equal or higher version,
    /// checks and renews the lease, hands the rest to the sink, records the versions.
    /// `Ok(None)`: lease lost, user stopped, or the sink refused.
    async fn deliver(
        &self,
        lease: &SyncLease,
        lane: Lane,
        mut changes: Vec<Change>,
        ats: &HashMap<String, Option<i64>>,
    ) -> Result<Option<()>, Error> {
        let (user, stream) = (lease.user, lease.stream);
        let ttl = self.inner.config.lease_ttl;
        if self.inner.gate.is_stopped(user) {
            return Ok(None);
        }
        // The lease first, then the versions: a holder that lost it reads nothing stale.
        if !self.state().commit(lease, ttl, Commit::default()).await? {
            return Ok(None);
        }
        let ids: Vec<String> = changes.iter().map(|c| c.key.id.clone()).collect();
        let stored = self.state().versions(user, stream, &ids).await?;
        let mut keep = stored.iter().map(|s| s.as_ref().map(VersionEntry::rank));
        changes.retain(|c| keep.next().flatten().is_none_or(|old| c.rank() > old));
        if changes.is_empty() {
            return Ok(Some(()));
        }
        changes.sort_by(|a, b| a.key.id.cmp(&b.key.id));
        let entries: Vec<VersionEntry> = changes
            .iter()
            .map(|c| VersionEntry {
                id: c.key.id.clone(),
                version: c.version,
                deleted: matches!(c.kind, ChangeKind::Delete),
                at: ats.get(&c.key.id).copied().flatten(),
            })
            .collect();
        let (upserts, deletes) =
            entries.iter().fold(
                (0, 0),
                |(u, d), e| {
                    if e.deleted { (u, d + 1) } else { (u + 1, d) }
                },
            );
        let batch = Batch {
            user,
            stream,
            fence: lease.fence,
            changes,
        };
        let accepted = AssertUnwindSafe(self.inner.sink.accept(&batch))
            .catch_unwind()
            .await;
        match accepted {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                Counters::add(
                    &self.inner.counters.sink_failures,
                    1,
                    "withings_sync_sink_failures_total",
                );
                self.failed(user, stream, &format!("the sink refused a batch: {error}"));
                return Ok(None);
            }
            Err(_) => {
                Counters::add(
                    &self.inner.counters.sink_failures,
                    1,
                    "withings_sync_sink_failures_total",
                );
                self.failed(user, stream, &"the sink panicked on a batch");
                return Ok(None);
            }
        }
        let commit = Commit {
            versions: &entries,
            ..Commit::default()
        };
        if !self.state().commit(lease, ttl, commit).await? {
            return Ok(None);
        }
        Counters::add(
            &self.inner.counters.changes_delivered,
            u64::try_from(entries.len()).unwrap_or(u64::MAX),
            "withings_sync_changes_total",
        );
        self.emit(SyncEvent::Delivered {
            user,
            stream,
            lane,
            upserts,
            deletes,
        });
        Ok(Some(()))
    }
}
