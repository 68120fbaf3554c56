//! The mechanism: per-user slots and their published snapshots, ordered publication, one
//! refresh in flight per user with its waiters, and the guard that clears it if it panics.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use http::HeaderValue;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;

use super::policy::{Reason, RefreshPolicy, bearer_header};
use crate::config::Endpoints;
use crate::error::{Error, ErrorKind};
use crate::events::Event;
use crate::metrics::Metrics;
use crate::oauth::OAuthClient;
use crate::secret::Secret;
use crate::store::TokenStore;
use crate::token::{Token, UserId};

/// Everything a refresh needs, and every user's slot.
pub(crate) struct Refresher {
    pub oauth: OAuthClient,
    pub store: Arc<dyn TokenStore>,
    pub policy: RefreshPolicy,
    pub metrics: Metrics,
    slots: papaya::HashMap<UserId, Arc<Slot>, foldhash::fast::RandomState>,
    /// What happens to users' authorizations, for [`crate::WithingsAuth::events`].
    pub events: tokio::sync::broadcast::Sender<crate::events::Event>,
    /// Unix second after which the next new slot first sweeps out idle ones.
    next_sweep: AtomicU64,
}

impl std::fmt::Debug for Refresher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refresher")
            .field("oauth", &self.oauth)
            .field("policy", &self.policy)
            .field("users", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl Refresher {
    pub(crate) fn new(
        oauth: OAuthClient,
        store: Arc<dyn TokenStore>,
        policy: RefreshPolicy,
    ) -> Self {
        Refresher {
            oauth,
            store,
            policy,
            metrics: Metrics::default(),
            slots: papaya::HashMap::with_hasher(foldhash::fast::RandomState::default()),
            events: tokio::sync::broadcast::channel(crate::events::CAPACITY).0,
            next_sweep: AtomicU64::new(0),
        }
    }

    pub(crate) fn now(&self) -> SystemTime {
        self.oauth.clock().now()
    }

    /// Tells the app's event receivers, if any.
    pub(crate) fn emit(&self, event: crate::events::Event) {
        let _ = self.events.send(event);
    }

    pub(crate) fn endpoints(&self) -> &Endpoints {
        self.oauth.endpoints()
    }
}

/// What this process knows of a user beyond the store ([`Refresher::known_state`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Known {
    /// A terminal snapshot says the user revoked the app's access.
    Revoked,
    /// The last refresh said the user is temporarily deactivated.
    Deactivated,
}

/// What the hot path finds for a user.
pub(crate) enum Lookup {
    /// A token good now: the header to send and the generation it belongs to.
    Usable {
        header: HeaderValue,
        generation: u64,
    },
    /// Nothing will work until the user authorizes again.
    Terminal(Error),
    /// A refresh (or the first load) is needed; the generation of the snapshot held, if any.
    Stale(Option<u64>),
}

/// What the hot path reads for one user.
#[derive(Debug)]
pub(crate) struct Snapshot {
    /// Increases with every publication for this user.
    pub generation: u64,
    pub state: SnapshotState,
}

#[derive(Debug)]
pub(crate) enum SnapshotState {
    /// A token to use until `refresh_at`.
    Ready {
        token: Token,
        /// `Bearer <access token>`, marked sensitive; cloned per request (a refcount).
        header: HeaderValue,
        refresh_at: SystemTime,
    },
    /// Nothing will work until the user authorizes again (or the app's credentials change).
    Terminal(Error),
}

impl Snapshot {
    /// The header to send whatever the time; a terminal snapshot is its error.
    pub(crate) fn header(&self) -> Result<&HeaderValue, Error> {
        match &self.state {
            SnapshotState::Ready { header, .. } => Ok(header),
            SnapshotState::Terminal(error) => Err(error.clone()),
        }
    }

    pub(super) fn token(&self) -> Option<&Token> {
        match &self.state {
            SnapshotState::Ready { token, .. } => Some(token),
            SnapshotState::Terminal(_) => None,
        }
    }
}

pub(super) type Outcome = Result<Arc<Snapshot>, Error>;

/// One user's state.
#[derive(Debug)]
pub(crate) struct Slot {
    user: UserId,
    pub current: ArcSwapOption<Snapshot>,
    /// A request used this slot since the last sweep (see [`Refresher::lookup`]).
    used: AtomicBool,
    flight: Mutex<Flight>,
}

#[derive(Debug, Default)]
pub(super) struct Flight {
    /// The refresh in progress, if any.
    running: Option<watch::Receiver<Option<Outcome>>>,
    /// The last generation published; publication happens under this lock, so it only grows.
    generation: u64,
    /// Bumped by every new authorization: a refresh begun under an older one never publishes.
    pub(super) authorization: u64,
    /// Failures and unsaved pairs: rare, so boxed to keep idle users small.
    pub(super) trouble: Option<Box<Trouble>>,
}

#[derive(Debug)]
pub(super) struct Trouble {
    pub(super) failures: u32,
    /// No new attempt before this; callers get `last_error` meanwhile.
    pub(super) retry_at: Instant,
    pub(super) last_error: Error,
    /// A pair Withings granted whose save failed: the spent refresh token, the new pair and
    /// when it was granted.
    pub(super) unsaved: Option<(Secret, Token, SystemTime)>,
}

impl Slot {
    pub(crate) fn new(user: UserId) -> Self {
        Slot {
            user,
            current: ArcSwapOption::empty(),
            used: AtomicBool::new(true),
            flight: Mutex::new(Flight::default()),
        }
    }

    pub(super) fn flight(&self) -> std::sync::MutexGuard<'_, Flight> {
        // The flight state is updated in single assignments; a panic cannot leave it torn.
        self.flight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new authorization (or its end) replaces whatever the slot held: failures and unsaved
    /// pairs go, and a refresh begun before can no longer publish.
    fn supersede(&self) {
        let mut flight = self.flight();
        flight.authorization += 1;
        flight.trouble = None;
    }

    /// Records a use: one relaxed load, and a store only on the first use since the last sweep.
    pub(crate) fn touch(&self) {
        if !self.used.load(Ordering::Relaxed) {
            self.used.store(true, Ordering::Relaxed);
        }
    }

    /// Unused since the last sweep, nothing in memory that the store does not hold, and no
    /// request or refresh holding it. A used slot is kept and marked unused for the next sweep.
    fn is_evictable(self: &Arc<Self>) -> bool {
        if self.used.swap(false, Ordering::Relaxed) || Arc::strong_count(self) > 1 {
            return false;
        }
        let flight = self.flight();
        flight.running.is_none() && flight.trouble.as_ref().is_none_or(|t| t.unsaved.is_none())
    }
}

fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One refresh attempt: which slot, why, and under which authorization it began.
#[derive(Clone, Copy)]
pub(super) struct Attempt<'a> {
    pub(super) slot: &'a Slot,
    pub(super) reason: Reason,
    pub(super) authorization: u64,
}

impl Attempt<'_> {
    pub(super) fn user(&self) -> UserId {
        self.slot.user
    }
}

impl Refresher {
    /// The user's slot, created on first use and touched at `now`. Lock-free for users already
    /// seen; creating one first sweeps out, at most once per eviction period, the slots no
    /// request used since the last sweep, so memory follows the active users, not every id ever
    /// seen.
    pub(crate) fn slot(&self, user: UserId, now: SystemTime) -> Arc<Slot> {
        let slots = self.slots.pin();
        let slot = match slots.get(&user) {
            Some(slot) => Arc::clone(slot),
            None => {
                self.sweep_if_due(now);
                Arc::clone(slots.get_or_insert_with(user, || Arc::new(Slot::new(user))))
            }
        };
        slot.touch();
        slot
    }

    /// The hot path: what `user`'s published snapshot says at `now`. No lock, no allocation
    /// for users already seen, and no refcount on the slot (the map's epoch guard protects it).
    pub(crate) fn lookup(&self, user: UserId, now: SystemTime) -> Lookup {
        let slots = self.slots.pin();
        let slot = match slots.get(&user) {
            Some(slot) => slot,
            None => {
                self.sweep_if_due(now);
                slots.get_or_insert_with(user, || Arc::new(Slot::new(user)))
            }
        };
        slot.touch();
        let current = slot.current.load();
        match current.as_deref() {
            None => Lookup::Stale(None),
            Some(snapshot) => match &snapshot.state {
                SnapshotState::Ready {
                    header, refresh_at, ..
                } if now < *refresh_at => Lookup::Usable {
                    header: header.clone(),
                    generation: snapshot.generation,
                },
                SnapshotState::Ready { .. } => Lookup::Stale(Some(snapshot.generation)),
                SnapshotState::Terminal(error) => Lookup::Terminal(error.clone()),
            },
        }
    }

    /// [`renew`](Self::renew) for `user`, finding their slot.
    pub(crate) async fn renew_user(
        self: &Arc<Self>,
        user: UserId,
        stale: Option<u64>,
        reason: Reason,
    ) -> Outcome {
        let slot = self.slot(user, self.now());
        self.renew(&slot, stale, reason).await
    }

    /// What this process knows of `user` beyond the store: revoked (a terminal snapshot saying
    /// so) or deactivated (the last refresh said so).
    pub(crate) fn known_state(&self, user: UserId) -> Option<Known> {
        let slots = self.slots.pin();
        let slot = slots.get(&user)?;
        if let Some(current) = slot.current.load().as_deref()
            && let SnapshotState::Terminal(Error::AccessRevoked(_)) = &current.state
        {
            return Some(Known::Revoked);
        }
        let flight = slot.flight();
        match flight.trouble.as_deref() {
            Some(Trouble {
                last_error: Error::UserDeactivated,
                ..
            }) => Some(Known::Deactivated),
            _ => None,
        }
    }

    /// How many users have a slot (for tests and `Debug`).
    pub(crate) fn users_in_memory(&self) -> usize {
        self.slots.len()
    }

    fn sweep_if_due(&self, now: SystemTime) {
        let secs = unix_secs(now);
        let due = self.next_sweep.load(Ordering::Relaxed);
        let period = self.policy.idle_eviction.as_secs().max(1);
        if secs < due
            || self
                .next_sweep
                .compare_exchange(due, secs + period, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        self.slots.pin().retain(|_, slot| !slot.is_evictable());
    }

    /// Drops `user`'s in-memory state: their slot leaves the map, and a refresh in flight for
    /// it can no longer publish to a slot anyone finds.
    pub(crate) fn forget(&self, user: UserId) {
        let slots = self.slots.pin();
        if let Some(slot) = slots.remove(&user) {
            slot.supersede();
        }
    }

    /// Drops `slot` from the map if it is still the user's slot and holds nothing.
    fn forget_empty(&self, slot: &Arc<Slot>) {
        if slot.current.load().is_none() {
            let _ = self
                .slots
                .pin()
                .remove_if(&slot.user, |_, held| Arc::ptr_eq(held, slot));
        }
    }

    /// A snapshot newer than generation `stale` (or the first one when `stale` is `None`),
    /// refreshing if needed. Concurrent callers for one user share one refresh.
    pub(crate) async fn renew(
        self: &Arc<Self>,
        slot: &Arc<Slot>,
        stale: Option<u64>,
        reason: Reason,
    ) -> Result<Arc<Snapshot>, Error> {
        let mut rx = match self.start(slot, stale, reason) {
            Started::Settled(outcome) => return outcome,
            Started::Waiting(rx) => rx,
        };
        let outcome = match rx.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone().expect("waited for Some"),
            Err(_) => Err(Error::RefreshInterrupted(slot.user)),
        };
        match outcome {
            Ok(snapshot) => settled(snapshot),
            Err(error) => self.fallback(slot, reason, error),
        }
    }

    /// Starts (or joins) the refresh without waiting for it: for a caller that will not use
    /// the new token itself.
    pub(crate) fn kick(self: &Arc<Self>, user: UserId, stale: Option<u64>, reason: Reason) {
        let slot = self.slot(user, self.now());
        let _ = self.start(&slot, stale, reason);
    }

    fn start(self: &Arc<Self>, slot: &Arc<Slot>, stale: Option<u64>, reason: Reason) -> Started {
        let mut flight = slot.flight();
        if let Some(current) = slot.current.load_full()
            && stale.is_none_or(|g| current.generation > g)
        {
            return Started::Settled(settled(current));
        }
        if let Some(rx) = &flight.running {
            Metrics::bump(&self.metrics.waited, "withings_refresh_waits_total");
            return Started::Waiting(rx.clone());
        }
        if let Some(trouble) = &flight.trouble
            && Instant::now() < trouble.retry_at
        {
            let error = trouble.last_error.clone();
            drop(flight);
            return Started::Settled(self.fallback(slot, reason, error));
        }
        let (tx, rx) = watch::channel(None);
        flight.running = Some(rx.clone());
        let task = RefreshTask {
            refresher: Arc::clone(self),
            slot: Arc::clone(slot),
            authorization: flight.authorization,
            tx,
        };
        tokio::spawn(task.run(reason));
        Started::Waiting(rx)
    }

    /// After a failed proactive refresh, a token that has not actually expired is still good.
    pub(super) fn fallback(
        &self,
        slot: &Slot,
        reason: Reason,
        error: Error,
    ) -> Result<Arc<Snapshot>, Error> {
        if reason == Reason::Proactive
            && let Some(current) = slot.current.load_full()
            && let Some(token) = current.token()
            && !token.expires_within(self.now(), Duration::ZERO)
        {
            return Ok(current);
        }
        Err(error)
    }

    /// Publishes a pair that is already in the store, granted at `granted_at`, unless a newer
    /// authorization than the attempt's replaced it meanwhile (then that one stands).
    pub(super) fn publish(
        &self,
        attempt: Attempt<'_>,
        token: Token,
        granted_at: SystemTime,
    ) -> Outcome {
        let state = self.ready(token, granted_at);
        self.publish_state(attempt.slot, Some(attempt.authorization), state)
    }

    fn ready(&self, token: Token, granted_at: SystemTime) -> SnapshotState {
        match bearer_header(&token.access_token) {
            Ok(header) => SnapshotState::Ready {
                refresh_at: self.policy.refresh_at(&token, granted_at),
                header,
                token,
            },
            Err(error) => SnapshotState::Terminal(error),
        }
    }

    /// Publication is ordered: under the flight lock, each one gets a generation higher than
    /// any before it. With `authorization`, it happens only if no new authorization came since.
    pub(super) fn publish_state(
        &self,
        slot: &Slot,
        authorization: Option<u64>,
        state: SnapshotState,
    ) -> Outcome {
        let mut flight = slot.flight();
        if authorization.is_some_and(|a| a != flight.authorization) {
            drop(flight);
            return superseded(slot);
        }
        flight.generation += 1;
        let snapshot = Arc::new(Snapshot {
            generation: flight.generation,
            state,
        });
        slot.current.store(Some(Arc::clone(&snapshot)));
        settled(snapshot)
    }

    /// A new authorization (already stored, granted at `granted_at`) replaces whatever the slot
    /// held, failures included; refreshes begun before it can no longer publish.
    /// Nothing will work for `user` until a new authorization: every request fails at once
    /// with `error`, and a refresh begun before it can no longer publish.
    pub(crate) fn terminate(&self, user: UserId, error: Error) {
        let slot = self.slot(user, self.now());
        slot.supersede();
        let _ = self.publish_state(&slot, None, SnapshotState::Terminal(error));
    }

    pub(crate) fn reset(&self, slot: &Slot, token: Token, granted_at: SystemTime) {
        let state = self.ready(token, granted_at);
        slot.supersede();
        let _ = self.publish_state(slot, None, state);
    }
}

/// What [`Refresher::start`] found: an answer now, or a refresh to wait for.
enum Started {
    Settled(Outcome),
    Waiting(watch::Receiver<Option<Outcome>>),
}

/// The outcome of a refresh that a new authorization overtook: what that one published.
pub(super) fn superseded(slot: &Slot) -> Outcome {
    tracing::debug!(user = %slot.user, "a new authorization replaced the one this refresh began with");
    match slot.current.load_full() {
        Some(current) => settled(current),
        None => Err(Error::RefreshInterrupted(slot.user)),
    }
}

/// The snapshot as a result: a terminal one is its error.
pub(super) fn settled(snapshot: Arc<Snapshot>) -> Outcome {
    match &snapshot.state {
        SnapshotState::Terminal(error) => Err(error.clone()),
        SnapshotState::Ready { .. } => Ok(snapshot),
    }
}

/// The detached refresh: it finishes (and saves) even if every caller went away.
struct RefreshTask {
    refresher: Arc<Refresher>,
    slot: Arc<Slot>,
    /// The authorization in force when the refresh began.
    authorization: u64,
    tx: watch::Sender<Option<Outcome>>,
}

impl RefreshTask {
    async fn run(self, reason: Reason) {
        let user = self.slot.user;
        let span = tracing::info_span!("withings.refresh", user = %user, reason = reason.as_str());
        let started = Instant::now();
        // If the refresh panics, this guard clears the flight so the next caller can retry.
        let guard = ClearFlight(&self.slot);
        let attempt = Attempt {
            slot: &self.slot,
            reason,
            authorization: self.authorization,
        };
        let outcome = self
            .refresher
            .refresh(attempt)
            .instrument(span.clone())
            .await;
        let elapsed = started.elapsed();
        crate::metrics::refresh_done(reason.as_str(), outcome.is_ok(), elapsed);
        let elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        {
            let mut flight = self.slot.flight();
            flight.running = None;
            // Failures of a refresh that a new authorization overtook say nothing about it.
            let current = flight.authorization == self.authorization;
            match &outcome {
                Ok(snapshot) => {
                    span.in_scope(|| {
                        tracing::info!(
                            generation = snapshot.generation,
                            elapsed_ms,
                            "token refreshed"
                        )
                    });
                    if flight.trouble.as_ref().is_some_and(|t| t.unsaved.is_none()) {
                        flight.trouble = None;
                    }
                }
                Err(error) => {
                    Metrics::bump(
                        &self.refresher.metrics.refreshes_failed,
                        "withings_refresh_failures_total",
                    );
                    span.in_scope(|| tracing::warn!(%error, elapsed_ms, "token refresh failed"));
                    if current {
                        let failures = flight.trouble.as_ref().map_or(0, |t| t.failures) + 1;
                        let retry_in = self.refresher.backoff(failures, error);
                        let retry_at = Instant::now() + retry_in;
                        // Users who must authorize again were told so where that was decided.
                        if error.kind() != ErrorKind::Auth {
                            self.refresher.emit(match error {
                                Error::UserDeactivated => Event::UserDeactivated { user, retry_in },
                                _ => Event::RefreshFailed {
                                    user,
                                    error: error.clone(),
                                    retry_in,
                                },
                            });
                        }
                        let unsaved = flight.trouble.take().and_then(|t| t.unsaved);
                        flight.trouble = Some(Box::new(Trouble {
                            failures,
                            retry_at,
                            last_error: error.clone(),
                            unsaved,
                        }));
                    }
                }
            }
        }
        std::mem::forget(guard);
        if let Err(Error::UnknownUser(_)) = &outcome {
            // No token for this id: leave nothing behind (ids can come from outside input).
            self.refresher.forget_empty(&self.slot);
        }
        // Waiters read the outcome; newcomers already see the published snapshot or the backoff.
        self.tx.send_replace(Some(outcome));
    }
}

struct ClearFlight<'a>(&'a Slot);

impl Drop for ClearFlight<'_> {
    fn drop(&mut self) {
        self.0.flight().running = None;
    }
}
