//! [`Budget`], the running budget of one handle: the hot-path `try_take`, the lanes' queues
//! and their dispatcher, the 601 pause, counted in the store's ledger or in-process.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::lane::Priority;
use super::rate::RateBudget;
use crate::config::Endpoints;
use crate::error::Error;
use crate::store::TokenStore;
use crate::store::{BudgetUsage, SlotAsk, SlotGrant, Window};

/// The budget's counters (read through [`crate::WithingsAuth::metrics`]).
#[derive(Debug, Default)]
pub(crate) struct BudgetCounters {
    pub slots: AtomicU64,
    pub waits: AtomicU64,
    pub wait_micros: AtomicU64,
    pub exhausted: AtomicU64,
    pub rate_limited: AtomicU64,
}

/// The running budget of one handle.
pub(crate) struct Budget {
    config: RateBudget,
    /// The Withings client id: the ledger's key.
    app: String,
    /// This budget's name in a shared ledger (random), where its oldest waiter is recorded.
    holder: String,
    engine: Engine,
    /// The store whose ledger counts (if it has one).
    store: Arc<dyn TokenStore>,
    /// Where Withings is: requests to its API host are counted, others pass.
    endpoints: Endpoints,
    queue: Mutex<Queue>,
    pub counters: BudgetCounters,
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budget")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Where the budget counts, decided once from the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    /// No budget.
    Off,
    /// The store has no ledger: this handle counts for itself.
    Own,
    /// The store's ledger answers at once (in memory): one slot per request.
    InMemory,
    /// The store's ledger is a database: slots come in blocks.
    Shared,
}

/// Slots at hand and who waits for one.
#[derive(Default)]
struct Queue {
    /// Slots of the last block from a shared ledger, usable until `send_by`.
    pool: u32,
    send_by: Option<Instant>,
    /// The pool was reserved under the full limit: while the background lanes are busy it is
    /// only for the lanes above them (it may hold the headroom).
    pool_foreground: bool,
    /// When a background lane last took a slot.
    background_at: Option<Instant>,
    /// When the ledger was last asked, and how many slots were taken since: the demand the
    /// next block is sized by.
    last_refill: Option<Instant>,
    taken_since: u32,
    /// The in-process count, when the store has no ledger.
    own: Window,
    /// Who waits, one queue per [`Priority`], the first served first.
    lanes: [VecDeque<Waiter>; Priority::COUNT],
    dispatching: bool,
}

/// A request waiting for a slot.
struct Waiter {
    tx: oneshot::Sender<()>,
    /// When it started to wait: a shared ledger serves the oldest waiters first, whichever
    /// process they are in.
    since: Instant,
}

impl Queue {
    fn waiting(&self) -> usize {
        self.lanes.iter().map(VecDeque::len).sum()
    }

    /// Someone waits in `priority`'s lane or one served before it.
    fn ahead_of(&self, priority: Priority) -> bool {
        self.lanes[..=priority.index()]
            .iter()
            .any(|lane| !lane.is_empty())
    }

    fn any_waiting(&self) -> bool {
        self.lanes.iter().any(|lane| !lane.is_empty())
    }

    /// A background lane took a slot within the last `window`.
    fn background_busy(&self, now: Instant, window: Duration) -> bool {
        self.background_at
            .is_some_and(|at| now.saturating_duration_since(at) < window)
    }
}

impl Budget {
    pub(crate) fn new(
        config: RateBudget,
        app: &str,
        store: Arc<dyn TokenStore>,
        endpoints: Endpoints,
    ) -> Self {
        let mut budget = Budget {
            config,
            app: app.to_owned(),
            holder: crate::store::Lease::new().owner,
            engine: Engine::Off,
            store,
            endpoints,
            queue: Mutex::default(),
            counters: BudgetCounters::default(),
        };
        budget.engine = match (config.limit, budget.store.budget()) {
            (None, _) => Engine::Off,
            (Some(_), None) => Engine::Own,
            (Some(_), Some(ledger)) if ledger.reserve_now(&budget.ask(0, false)).is_some() => {
                Engine::InMemory
            }
            (Some(_), Some(_)) => Engine::Shared,
        };
        budget
    }

    /// No budget at all.
    #[cfg(test)]
    pub(crate) fn off() -> Self {
        Self::new(
            RateBudget::unlimited(),
            "",
            Arc::new(crate::store::MemoryStore::new()),
            Endpoints::default(),
        )
    }

    /// True for a request Withings counts: one to the configured API host.
    pub(crate) fn counts(&self, uri: &http::Uri) -> bool {
        self.engine != Engine::Off && self.endpoints.api_path(uri).is_some()
    }

    pub(crate) fn config(&self) -> RateBudget {
        self.config
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Every change under the lock is a few counter updates: a poisoned lock is consistent.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ask(&self, want: u32, background: bool) -> SlotAsk<'_> {
        self.ask_for(want, &[], background)
    }

    /// An ask for `want` slots on behalf of the waiters that started at `waiting`, up to the
    /// full limit or, for the background lanes, the background limit.
    fn ask_for<'a>(&'a self, want: u32, waiting: &'a [Instant], background: bool) -> SlotAsk<'a> {
        let limit = if background {
            self.config.background_limit()
        } else {
            self.config.limit
        };
        SlotAsk {
            app: &self.app,
            want,
            limit: limit.unwrap_or(u32::MAX),
            window: self.config.window,
            hold: self.config.hold(),
            holder: &self.holder,
            waiting,
        }
    }

    /// Takes a slot now if one is at hand and nobody is queued ahead; never waits.
    /// `priority` is only asked for when someone is queued, when the ledger is asked, or when
    /// the background lanes are busy and the pool holds slots of the full limit.
    pub(crate) fn try_take(&self, priority: impl FnOnce() -> Priority) -> bool {
        if self.engine == Engine::Off {
            return true;
        }
        let mut priority = Lazy::new(priority);
        let mut queue = self.lock();
        if queue.any_waiting() && queue.ahead_of(priority.get()) {
            return false;
        }
        let now = Instant::now();
        let pooled = queue.pool > 0
            && queue.send_by.is_some_and(|by| now < by)
            && !(queue.pool_foreground
                && queue.background_busy(now, self.config.window)
                && priority.get().is_background());
        let taken = if pooled {
            queue.pool -= 1;
            queue.taken_since += 1;
            true
        } else {
            // A count in memory answers at once (a shared ledger is for the dispatcher): a
            // block sized by recent demand, so that most requests only look at the pool. A
            // background request that may not use the pool asks for itself alone.
            let background = priority.get().is_background();
            let keep_pool = queue.pool > 0 && queue.send_by.is_some_and(|by| now < by);
            // Sized here only for the ledgers that answer at once: a shared ledger's block is
            // the dispatcher's, and sizing it here would count this request's demand twice.
            let want = |queue: &mut Queue| {
                if keep_pool {
                    1
                } else {
                    1 + self.next_block(queue)
                }
            };
            let grant = match (self.engine, self.store.budget()) {
                (Engine::Own, _) => {
                    let ask = self.ask(want(&mut queue), background);
                    Some(queue.own.reserve(&ask, now))
                }
                (Engine::InMemory, Some(ledger)) => {
                    ledger.reserve_now(&self.ask(want(&mut queue), background))
                }
                _ => None,
            };
            match grant {
                Some(grant) if grant.granted > 0 => {
                    if !keep_pool {
                        queue.pool = grant.granted - 1;
                        queue.pool_foreground = !background;
                        queue.send_by = Some(now + self.config.hold() / 2);
                    }
                    queue.taken_since += 1;
                    true
                }
                _ => {
                    if !keep_pool {
                        queue.pool = 0;
                    }
                    false
                }
            }
        };
        if taken && priority.known_background() {
            queue.background_at = Some(now);
        }
        drop(queue);
        if taken {
            self.counters.slots.fetch_add(1, Ordering::Relaxed);
            crate::metrics::emit("withings_budget_slots_total");
        }
        taken
    }

    /// Takes a slot, waiting in line up to the deadline.
    pub(crate) async fn take(self: &Arc<Self>, priority: Priority) -> Result<(), Error> {
        self.take_within(priority, self.config.deadline).await
    }

    /// [`take`](Self::take) with its own deadline (token calls wait at most their timeout,
    /// so that the refresh lease outlives the wait).
    pub(crate) async fn take_within(
        self: &Arc<Self>,
        priority: Priority,
        deadline: Duration,
    ) -> Result<(), Error> {
        if self.try_take(|| priority) {
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut queue = self.lock();
            queue.lanes[priority.index()].push_back(Waiter {
                tx,
                since: Instant::now(),
            });
            if !queue.dispatching {
                queue.dispatching = true;
                tokio::spawn(Arc::clone(self).dispatch());
            }
        }
        self.counters.waits.fetch_add(1, Ordering::Relaxed);
        crate::metrics::emit("withings_budget_waits_total");
        let started = Instant::now();
        let outcome = tokio::time::timeout(deadline, rx).await;
        let waited = started.elapsed();
        self.counters.wait_micros.fetch_add(
            u64::try_from(waited.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        crate::metrics::budget_wait(waited);
        match outcome {
            Ok(Ok(())) => {
                self.counters.slots.fetch_add(1, Ordering::Relaxed);
                crate::metrics::emit("withings_budget_slots_total");
                Ok(())
            }
            // Timed out (the dispatcher skips a waiter that left), or the dispatcher is gone
            // (its runtime shut down): either way no slot.
            Ok(Err(_)) | Err(_) => {
                self.counters.exhausted.fetch_add(1, Ordering::Relaxed);
                crate::metrics::emit("withings_budget_exhausted_total");
                Err(Error::BudgetExhausted { waited: deadline })
            }
        }
    }

    /// Hands out slots to the waiters, in order, token calls first, until none is left.
    async fn dispatch(self: Arc<Self>) {
        // The shared ledger holds a row of this budget's waiters a grant did not cover.
        let mut recorded = false;
        loop {
            let (waiting, want, since, lanes) = {
                let mut queue = self.lock();
                for lane in &mut queue.lanes {
                    lane.retain(|waiter| !waiter.tx.is_closed());
                }
                if queue.waiting() == 0 && !recorded {
                    queue.dispatching = false;
                    return;
                }
                // The lanes above the background ones first, up to the full limit; the
                // background lanes only when nobody waits above them, up to their own limit.
                let first = Priority::FIRST_BACKGROUND;
                let lanes = if queue.lanes[..first].iter().any(|lane| !lane.is_empty()) {
                    0..first
                } else {
                    first..Priority::COUNT
                };
                let waiting: usize = queue.lanes[lanes.clone()].iter().map(VecDeque::len).sum();
                // The oldest first, as many as the ledger could grant.
                let mut since: Vec<Instant> = queue.lanes[lanes.clone()]
                    .iter()
                    .flatten()
                    .map(|waiter| waiter.since)
                    .collect();
                since.sort_unstable();
                since.truncate(
                    usize::try_from(self.config.limit.unwrap_or(u32::MAX)).unwrap_or(usize::MAX),
                );
                let waiting = u32::try_from(waiting).unwrap_or(u32::MAX);
                // Nobody waits any more: an ask for nothing only clears the row.
                let extra = if waiting == 0 {
                    0
                } else {
                    self.next_block(&mut queue)
                };
                (waiting, waiting.saturating_add(extra), since, lanes)
            };
            let background = lanes.start == Priority::FIRST_BACKGROUND;
            let asked_at = Instant::now();
            let grant = self.reserve(want, &since, asked_at, background).await;
            recorded = matches!(self.engine, Engine::InMemory | Engine::Shared)
                && usize::try_from(grant.granted).is_ok_and(|granted| granted < since.len());
            let starved = self.hand_out(grant.granted, waiting, asked_at, lanes);
            if starved {
                let pause = grant
                    .retry_in
                    .clamp(Duration::from_millis(1), self.config.window);
                tokio::time::sleep(pause).await;
            }
        }
    }

    /// Gives `granted` slots to the waiters of `lanes` in order, the rest to the pool. True
    /// when some of them are still waiting for want of slots.
    fn hand_out(&self, granted: u32, waiting: u32, asked_at: Instant, lanes: Range<usize>) -> bool {
        let mut queue = self.lock();
        let background = lanes.start == Priority::FIRST_BACKGROUND;
        let mut left = granted;
        while left > 0 {
            let Some(waiter) = queue.lanes[lanes.clone()]
                .iter_mut()
                .find_map(VecDeque::pop_front)
            else {
                break;
            };
            if waiter.tx.send(()).is_ok() {
                left -= 1;
                queue.taken_since += 1;
            }
        }
        if background && left < granted {
            queue.background_at = Some(asked_at);
        }
        if left > 0 {
            // What the waiters did not need: the pool, for the next requests' fast path.
            queue.pool = left;
            queue.pool_foreground = !background;
            queue.send_by = Some(asked_at + self.config.hold() / 2);
        }
        queue.lanes[lanes].iter().any(|lane| !lane.is_empty()) && granted < waiting
    }

    /// Slots to ask beyond the waiters, for the pool (a shared ledger: one round trip per
    /// block; one in memory: one lock of the ledger per block). As many as were taken since the last ask if that was under half a
    /// hold ago (a steady sender), else none (a one-off request, a process about to exit:
    /// nothing wasted); at most a sixteenth of the limit.
    fn next_block(&self, queue: &mut Queue) -> u32 {
        let now = Instant::now();
        let recent = queue
            .last_refill
            .is_some_and(|at| now.duration_since(at) < self.config.hold() / 2);
        let taken = std::mem::take(&mut queue.taken_since);
        queue.last_refill = Some(now);
        if self.engine == Engine::Off || !recent {
            return 0;
        }
        let cap = (self.config.limit.unwrap_or(u32::MAX) / 16).max(1);
        taken.clamp(1, cap)
    }

    async fn reserve(
        &self,
        want: u32,
        waiting: &[Instant],
        now: Instant,
        background: bool,
    ) -> SlotGrant {
        let ask = self.ask_for(want, waiting, background);
        let ledger = match (self.engine, self.store.budget()) {
            (Engine::Off, _) => {
                return SlotGrant {
                    granted: want,
                    retry_in: Duration::ZERO,
                };
            }
            (Engine::Own, _) | (_, None) => return self.reserve_own(&ask, now),
            (_, Some(ledger)) => ledger,
        };
        if let Some(grant) = ledger.reserve_now(&ask) {
            return grant;
        }
        match ledger.reserve(&ask).await {
            Ok(grant) => grant,
            Err(error) => {
                // A store outage must not stop the app's traffic: until the ledger answers
                // again this process counts for itself (other processes cannot see it, so a
                // 601 may follow; its pause then holds everyone back).
                tracing::warn!(%error, "the request budget's ledger failed; counting in-process until it is back");
                self.reserve_own(&ask, now)
            }
        }
    }

    fn reserve_own(&self, ask: &SlotAsk<'_>, now: Instant) -> SlotGrant {
        self.lock().own.reserve(ask, now)
    }

    /// Withings answered 601 (to a data call or a token call): everyone waits `wait` (when Withings said how
    /// long), else a tenth of the window, app-wide.
    pub(crate) fn rate_limited(self: &Arc<Self>, wait: Option<Duration>) {
        self.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
        crate::metrics::emit("withings_rate_limited_total");
        // A hostile or absurd `wait_seconds` stops the app for an hour at most.
        let wait = wait
            .unwrap_or(self.config.window / 10)
            .min(Duration::from_secs(3600));
        let mut queue = self.lock();
        queue.pool = 0;
        match self.engine {
            Engine::Off => return,
            Engine::Own => return queue.own.pause(Instant::now(), wait),
            Engine::InMemory | Engine::Shared => {}
        }
        drop(queue);
        let budget = Arc::clone(self);
        tokio::spawn(async move {
            let Some(ledger) = budget.store.budget() else {
                return;
            };
            if let Err(error) = ledger.pause(&budget.app, wait).await {
                tracing::warn!(%error, "could not share a rate-limit pause through the store");
            }
        });
    }

    /// What the window holds now (`None` when the budget is off).
    pub(crate) async fn usage(&self) -> Result<Option<BudgetUsage>, Error> {
        match (self.engine, self.store.budget()) {
            (Engine::Off, _) => Ok(None),
            (Engine::InMemory | Engine::Shared, Some(ledger)) => {
                ledger.usage(&self.app, self.config.window).await.map(Some)
            }
            _ => {
                let usage = self.lock().own.usage(self.config.window, Instant::now());
                Ok(Some(usage))
            }
        }
    }
}

/// A request's [`Priority`], read from it only when needed (not on the hot path's pool hit).
struct Lazy<F> {
    read: Option<F>,
    value: Option<Priority>,
}

impl<F: FnOnce() -> Priority> Lazy<F> {
    fn new(read: F) -> Self {
        Lazy {
            read: Some(read),
            value: None,
        }
    }

    fn get(&mut self) -> Priority {
        match (self.value, self.read.take()) {
            (Some(value), _) => value,
            (None, Some(read)) => *self.value.insert(read()),
            // Not reached: `read` is taken only when `value` is set.
            (None, None) => Priority::Lane(super::Lane::Interactive),
        }
    }

    /// Read, and a background lane.
    fn known_background(&self) -> bool {
        self.value.is_some_and(Priority::is_background)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn budget(limit: u32, window: Duration) -> Arc<Budget> {
        let config = RateBudget::new(limit, window).deadline(Duration::from_secs(600));
        let store = Arc::new(MemoryStore::new());
        Arc::new(Budget::new(config, "app", store, Default::default()))
    }

    #[tokio::test(start_paused = true)]
    async fn token_calls_go_before_queued_data_calls_which_keep_their_order() {
        let budget = budget(1, Duration::from_secs(10));
        assert!(budget.try_take(|| Priority::DATA));
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (name, priority) in [
            ("data 1", Priority::DATA),
            ("data 2", Priority::DATA),
            ("data 3", Priority::DATA),
            ("token", Priority::Token),
        ] {
            let (budget, order) = (Arc::clone(&budget), Arc::clone(&order));
            tasks.push(tokio::spawn(async move {
                budget.take(priority).await.unwrap();
                order.lock().unwrap().push(name);
            }));
            // Each is queued before the next arrives.
            tokio::task::yield_now().await;
        }
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(
            *order.lock().unwrap(),
            ["token", "data 1", "data 2", "data 3"]
        );
        assert_eq!(budget.counters.waits.load(Ordering::Relaxed), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_that_gives_up_leaves_its_slot_to_the_next() {
        let budget = budget(1, Duration::from_secs(10));
        assert!(budget.try_take(|| Priority::DATA));
        let impatient = {
            let budget = Arc::clone(&budget);
            tokio::spawn(async move {
                budget
                    .take_within(Priority::DATA, Duration::from_secs(1))
                    .await
            })
        };
        tokio::task::yield_now().await;
        let started = Instant::now();
        let patient = {
            let budget = Arc::clone(&budget);
            tokio::spawn(async move { budget.take(Priority::DATA).await })
        };
        assert!(matches!(
            impatient.await.unwrap(),
            Err(Error::BudgetExhausted { .. })
        ));
        patient.await.unwrap().unwrap();
        // The first free slot (one window and one hold later, on the paused clock) went to the
        // patient one: the one that gave up took none.
        assert_eq!(started.elapsed(), Duration::from_millis(10_250));
        assert_eq!(budget.counters.slots.load(Ordering::Relaxed), 2);
        assert_eq!(budget.counters.exhausted.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_limit_pause_holds_everyone_back() {
        let budget = budget(100, Duration::from_secs(60));
        budget.rate_limited(Some(Duration::from_secs(5)));
        tokio::task::yield_now().await; // the pause reaches the ledger
        assert!(!budget.try_take(|| Priority::Token));
        let started = Instant::now();
        budget.take(Priority::Token).await.unwrap();
        assert!(started.elapsed() >= Duration::from_secs(5));
        // A hostile wait is capped at an hour.
        budget.rate_limited(Some(Duration::from_secs(u64::MAX / 4)));
        tokio::task::yield_now().await;
        let paused = budget.usage().await.unwrap().unwrap().paused_for.unwrap();
        assert!(paused <= Duration::from_secs(3600));
    }

    #[test]
    fn unlimited_takes_no_lock_and_counts_nothing() {
        let budget = Budget::off();
        assert!((0..1000).all(|_| budget.try_take(|| Priority::DATA)));
        assert_eq!(budget.counters.slots.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn hold_stays_within_its_bounds() {
        assert_eq!(
            RateBudget::per_minute(120).hold(),
            Duration::from_millis(1500)
        );
        assert_eq!(
            RateBudget::new(5, Duration::from_secs(2)).hold(),
            Duration::from_millis(250)
        );
        assert_eq!(
            RateBudget::new(5, Duration::from_millis(400)).hold(),
            Duration::from_millis(100)
        );
    }
}
