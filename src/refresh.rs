//! One refresh per user: the per-user slot, its published snapshot, and the refresh task.
//!
//! The hot path reads a user's [`Snapshot`] through `arc-swap` (no lock). Only when the
//! snapshot is unusable does a request come here: the first one spawns the refresh task, every
//! other one waits on the same `watch` channel and gets the same outcome. The task re-reads the
//! store, takes the store's lease, calls Withings, **saves the rotated pair, and only then
//! publishes it**. It runs detached, so a caller that gives up never aborts it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwapOption;
use http::HeaderValue;
use tokio::sync::watch;
use tracing::Instrument;

use crate::error::Error;
use crate::metrics::Metrics;
use crate::oauth::OAuthClient;
use crate::secret::Secret;
use crate::store::{LockAttempt, StoredToken, TokenStore};
use crate::token::{Token, UserId, is_bearer_safe};

/// When to refresh and how hard to retry.
#[derive(Debug, Clone)]
pub(crate) struct RefreshPolicy {
    /// Refresh this long before `expires_at`.
    pub skew: Duration,
    /// Plus up to this much more, fixed per user, so tokens issued together spread out.
    pub jitter: Duration,
    /// First wait after a failed refresh; doubles per failure up to `backoff_cap`.
    pub backoff_base: Duration,
    /// Longest wait after failures.
    pub backoff_cap: Duration,
    /// How long a cross-process refresh lease lasts if its holder dies.
    pub lease: Duration,
    /// How often a process waiting on another's lease re-reads the store.
    pub lease_poll: Duration,
    /// A user untouched this long loses its in-memory slot (reloaded from the store on next use).
    pub idle_eviction: Duration,
}

impl RefreshPolicy {
    /// When to refresh a pair granted at `granted_at`: `skew` plus the user's jitter before it
    /// expires, but never in the first half of its life, so a token shorter-lived than the
    /// skew is not refreshed on every request.
    pub(crate) fn refresh_at(&self, token: &Token, granted_at: SystemTime) -> SystemTime {
        let early = token
            .expires_at
            .checked_sub(self.skew + user_jitter(token.user_id, self.jitter))
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let lifetime = token
            .expires_at
            .duration_since(granted_at)
            .unwrap_or(Duration::ZERO);
        let half_life = granted_at
            .checked_add(lifetime / 2)
            .map_or(token.expires_at, |t| t.min(token.expires_at));
        early.max(half_life)
    }

    /// True when a pair granted at `granted_at` needs no refresh yet at `now`.
    fn is_fresh(&self, token: &Token, granted_at: SystemTime, now: SystemTime) -> bool {
        now < self.refresh_at(token, granted_at)
    }
}

/// Why a refresh was asked for (recorded in traces).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// Nothing loaded yet for this user.
    Load,
    /// The access token is expired or inside the skew window.
    Proactive,
    /// Withings refused the access token.
    Reactive,
    /// Asked for explicitly.
    Forced,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::Load => "load",
            Reason::Proactive => "proactive",
            Reason::Reactive => "reactive",
            Reason::Forced => "forced",
        }
    }
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
    /// The header to send, if the token is good at `now`.
    pub(crate) fn usable(&self, now: SystemTime) -> Option<&HeaderValue> {
        match &self.state {
            SnapshotState::Ready {
                header, refresh_at, ..
            } if now < *refresh_at => Some(header),
            _ => None,
        }
    }

    /// The header to send whatever the time; a terminal snapshot is its error.
    pub(crate) fn header(&self) -> Result<&HeaderValue, Error> {
        match &self.state {
            SnapshotState::Ready { header, .. } => Ok(header),
            SnapshotState::Terminal(error) => Err(error.clone()),
        }
    }

    fn token(&self) -> Option<&Token> {
        match &self.state {
            SnapshotState::Ready { token, .. } => Some(token),
            SnapshotState::Terminal(_) => None,
        }
    }
}

type Outcome = Result<Arc<Snapshot>, Error>;

/// One user's state.
#[derive(Debug)]
pub(crate) struct Slot {
    user: UserId,
    pub current: ArcSwapOption<Snapshot>,
    /// Seconds since the Unix epoch (on the handle's clock) of the last request for this user.
    last_used: AtomicU64,
    flight: Mutex<Flight>,
}

#[derive(Debug, Default)]
struct Flight {
    /// The refresh in progress, if any.
    running: Option<watch::Receiver<Option<Outcome>>>,
    /// The last generation published; publication happens under this lock, so it only grows.
    generation: u64,
    /// Bumped by every new authorization: a refresh begun under an older one never publishes.
    authorization: u64,
    /// Failures and unsaved pairs: rare, so boxed to keep idle users small.
    trouble: Option<Box<Trouble>>,
}

#[derive(Debug)]
struct Trouble {
    failures: u32,
    /// No new attempt before this; callers get `last_error` meanwhile.
    retry_at: Instant,
    last_error: Error,
    /// A pair Withings granted whose save failed: the spent refresh token, the new pair and
    /// when it was granted.
    unsaved: Option<(Secret, Token, SystemTime)>,
}

impl Slot {
    pub(crate) fn new(user: UserId) -> Self {
        Slot {
            user,
            current: ArcSwapOption::empty(),
            last_used: AtomicU64::new(0),
            flight: Mutex::new(Flight::default()),
        }
    }

    fn flight(&self) -> std::sync::MutexGuard<'_, Flight> {
        // The flight state is updated in single assignments; a panic cannot leave it torn.
        self.flight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a use at `now`; a relaxed store only when the second changed.
    pub(crate) fn touch(&self, now: SystemTime) {
        let secs = unix_secs(now);
        if self.last_used.load(Ordering::Relaxed) != secs {
            self.last_used.store(secs, Ordering::Relaxed);
        }
    }

    /// Nothing in memory that the store does not hold, and no request or refresh using it.
    fn is_evictable(self: &Arc<Self>, idle_since: u64) -> bool {
        if self.last_used.load(Ordering::Relaxed) >= idle_since || Arc::strong_count(self) > 1 {
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
struct Attempt<'a> {
    slot: &'a Slot,
    reason: Reason,
    authorization: u64,
}

impl Attempt<'_> {
    fn user(&self) -> UserId {
        self.slot.user
    }
}

/// Everything a refresh needs, and every user's slot.
pub(crate) struct Refresher {
    pub oauth: OAuthClient,
    pub store: Arc<dyn TokenStore>,
    pub policy: RefreshPolicy,
    pub metrics: Metrics,
    slots: papaya::HashMap<UserId, Arc<Slot>>,
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
            slots: papaya::HashMap::new(),
            next_sweep: AtomicU64::new(0),
        }
    }

    fn now(&self) -> SystemTime {
        self.oauth.clock().now()
    }

    /// The user's slot, created on first use and touched at `now`. Lock-free for users already
    /// seen; creating one first evicts slots idle longer than the policy says (at most once per
    /// half of that period), so memory follows the active users, not every id ever seen.
    pub(crate) fn slot(&self, user: UserId, now: SystemTime) -> Arc<Slot> {
        let slots = self.slots.pin();
        let slot = match slots.get(&user) {
            Some(slot) => Arc::clone(slot),
            None => {
                self.sweep_if_due(now);
                Arc::clone(slots.get_or_insert_with(user, || Arc::new(Slot::new(user))))
            }
        };
        slot.touch(now);
        slot
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
                .compare_exchange(
                    due,
                    secs + period / 2 + 1,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            return;
        }
        let idle_since = secs.saturating_sub(period);
        self.slots
            .pin()
            .retain(|_, slot| !slot.is_evictable(idle_since));
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
    pub(crate) fn kick(self: &Arc<Self>, slot: &Arc<Slot>, stale: Option<u64>, reason: Reason) {
        let _ = self.start(slot, stale, reason);
    }

    fn start(self: &Arc<Self>, slot: &Arc<Slot>, stale: Option<u64>, reason: Reason) -> Started {
        let mut flight = slot.flight();
        if let Some(current) = slot.current.load_full()
            && stale.is_none_or(|g| current.generation > g)
        {
            return Started::Settled(settled(current));
        }
        if let Some(rx) = &flight.running {
            Metrics::bump(&self.metrics.waited);
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
    fn fallback(&self, slot: &Slot, reason: Reason, error: Error) -> Result<Arc<Snapshot>, Error> {
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
    fn publish(&self, attempt: Attempt<'_>, token: Token, granted_at: SystemTime) -> Outcome {
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
    fn publish_state(
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
    pub(crate) fn reset(&self, slot: &Slot, token: Token, granted_at: SystemTime) {
        let state = self.ready(token, granted_at);
        {
            let mut flight = slot.flight();
            flight.authorization += 1;
            flight.trouble = None;
        }
        let _ = self.publish_state(slot, None, state);
    }

    /// The refresh itself; runs inside the detached task.
    async fn refresh(&self, attempt: Attempt<'_>) -> Outcome {
        let user = attempt.user();
        let unsaved = attempt
            .slot
            .flight()
            .trouble
            .as_mut()
            .and_then(|t| t.unsaved.take());
        if let Some((spent, token, granted_at)) = unsaved {
            return self
                .save_and_publish(attempt, spent, token, granted_at)
                .await;
        }
        let stored = self.load(user).await?;
        let held = attempt.slot.current.load_full();
        let held_token = held.as_deref().and_then(Snapshot::token);
        if let Some(adopted) = self.adopt(attempt, &stored, held_token) {
            return adopted;
        }
        let lease = loop {
            match self.store.try_lock(user, self.policy.lease).await? {
                LockAttempt::Acquired(lease) => break lease,
                LockAttempt::Held => {
                    tokio::time::sleep(self.policy.lease_poll).await;
                    let stored = self.load(user).await?;
                    if let Some(adopted) = self.adopt(attempt, &stored, held_token) {
                        return adopted;
                    }
                }
            }
        };
        let result = self.refresh_leased(attempt, held_token).await;
        if let Err(error) = self.store.unlock(user, lease).await {
            tracing::warn!(user = %user, %error, "could not release the refresh lease; it will lapse");
        }
        result
    }

    async fn refresh_leased(&self, attempt: Attempt<'_>, held: Option<&Token>) -> Outcome {
        let user = attempt.user();
        // Read again under the lease: the previous holder may have just saved.
        let stored = self.load(user).await?;
        if let Some(adopted) = self.adopt(attempt, &stored, held) {
            return adopted;
        }
        if attempt.slot.flight().authorization != attempt.authorization {
            // A new login replaced the pair this refresh began with: it is not ours to spend.
            return superseded(attempt.slot);
        }
        let spent = stored.token.refresh_token.clone();
        Metrics::bump(&self.metrics.refreshes_started);
        let result = self.oauth.refresh(&spent).await;
        let granted_at = self.now();
        match result {
            Ok(token) if token.user_id != user => {
                self.keep_foreign_answer(attempt, spent, token, granted_at)
                    .await
            }
            Ok(token) => {
                self.save_and_publish(attempt, spent, token, granted_at)
                    .await
            }
            Err(error @ (Error::RefreshTokenInvalid | Error::InvalidClient { .. })) => {
                if matches!(error, Error::RefreshTokenInvalid) {
                    self.store.mark_needs_reauthorization(user, &spent).await?;
                }
                let terminal = match error {
                    Error::RefreshTokenInvalid => Error::NeedsReauthorization(user),
                    other => other,
                };
                self.publish_state(
                    attempt.slot,
                    Some(attempt.authorization),
                    SnapshotState::Terminal(terminal),
                )
            }
            Err(error @ Error::RateLimited { .. }) => {
                // "Same arguments in less than 10 seconds": someone may have just spent this
                // refresh token. Their pair is in the store if they saved it; use it.
                let stored = self.load(user).await?;
                if stored.token.refresh_token != spent
                    && self
                        .policy
                        .is_fresh(&stored.token, stored.refreshed_at, self.now())
                {
                    Metrics::bump(&self.metrics.refreshes_adopted);
                    return self.publish(attempt, stored.token, stored.refreshed_at);
                }
                Err(error)
            }
            Err(error) => Err(error),
        }
    }

    /// Withings answered the refresh of this user's token with another user's id. The pair is
    /// the rotation of the token just spent (which may now be dead), so it is saved rather than
    /// lost, and the spent token is never presented again; but it is never sent for this user:
    /// the record is marked and the user must authorize again.
    async fn keep_foreign_answer(
        &self,
        attempt: Attempt<'_>,
        spent: Secret,
        mut token: Token,
        granted_at: SystemTime,
    ) -> Outcome {
        let user = attempt.user();
        let answered = token.user_id;
        tracing::error!(user = %user, answered = %answered, "Withings answered a refresh for another user; marking the user for re-authorization");
        token.user_id = user;
        let saved = self
            .store
            .compare_and_save(&spent, &token, granted_at)
            .await;
        if let Ok(true) = saved {
            self.store
                .mark_needs_reauthorization(user, &token.refresh_token)
                .await?;
        }
        let error = Error::UserMismatch {
            asked: user,
            answered,
        };
        self.publish_state(
            attempt.slot,
            Some(attempt.authorization),
            SnapshotState::Terminal(error),
        )
    }

    /// Saves a rotated pair, then publishes it. A failed save keeps the old pair in use and the
    /// new one in memory for the next attempt: it is never sent before it is durable.
    async fn save_and_publish(
        &self,
        attempt: Attempt<'_>,
        spent: Secret,
        token: Token,
        granted_at: SystemTime,
    ) -> Outcome {
        match self
            .store
            .compare_and_save(&spent, &token, granted_at)
            .await
        {
            Ok(true) => self.publish(attempt, token, granted_at),
            Ok(false) => {
                // Another writer rotated first; theirs is what everyone else will use.
                tracing::warn!(user = %attempt.user(), "token changed in the store during refresh; adopting the stored one");
                let stored = self.load(attempt.user()).await?;
                Metrics::bump(&self.metrics.refreshes_adopted);
                self.publish(attempt, stored.token, stored.refreshed_at)
            }
            Err(error) => {
                let mut flight = attempt.slot.flight();
                if flight.authorization == attempt.authorization {
                    let trouble = flight.trouble.get_or_insert_with(|| {
                        Box::new(Trouble {
                            failures: 0,
                            retry_at: Instant::now(),
                            last_error: error.clone(),
                            unsaved: None,
                        })
                    });
                    trouble.unsaved = Some((spent, token, granted_at));
                }
                Err(error)
            }
        }
    }

    async fn load(&self, user: UserId) -> Result<StoredToken, Error> {
        match self.store.load(user).await? {
            None => Err(Error::UnknownUser(user)),
            Some(record) if record.needs_reauthorization => Err(Error::NeedsReauthorization(user)),
            Some(record) => Ok(record),
        }
    }

    /// Uses the stored pair instead of refreshing when it is newer than the one held (another
    /// process rotated it) and needs no refresh yet, or on first load when it needs none.
    fn adopt(
        &self,
        attempt: Attempt<'_>,
        stored: &StoredToken,
        held: Option<&Token>,
    ) -> Option<Outcome> {
        if attempt.reason == Reason::Forced && held.is_none() {
            return None; // nothing held yet: a forced refresh spends the stored token
        }
        let changed = held.is_none_or(|h| h.refresh_token != stored.token.refresh_token);
        let fresh = self
            .policy
            .is_fresh(&stored.token, stored.refreshed_at, self.now());
        if changed && fresh {
            if held.is_some() || attempt.reason != Reason::Load {
                Metrics::bump(&self.metrics.refreshes_adopted);
            }
            return Some(self.publish(attempt, stored.token.clone(), stored.refreshed_at));
        }
        None
    }

    fn backoff(&self, failures: u32, error: &Error) -> Duration {
        if let Error::RateLimited { wait: Some(wait) } = error {
            return *wait;
        }
        let exp = self
            .policy
            .backoff_base
            .saturating_mul(1u32 << failures.saturating_sub(1).min(16));
        let capped = exp.min(self.policy.backoff_cap);
        // Full jitter on the upper half: between half and all of the capped delay.
        capped / 2 + capped.mul_f64(random_unit() / 2.0)
    }
}

/// What [`Refresher::start`] found: an answer now, or a refresh to wait for.
enum Started {
    Settled(Outcome),
    Waiting(watch::Receiver<Option<Outcome>>),
}

/// The outcome of a refresh that a new authorization overtook: what that one published.
fn superseded(slot: &Slot) -> Outcome {
    tracing::debug!(user = %slot.user, "a new authorization replaced the one this refresh began with");
    match slot.current.load_full() {
        Some(current) => settled(current),
        None => Err(Error::RefreshInterrupted(slot.user)),
    }
}

/// The snapshot as a result: a terminal one is its error.
fn settled(snapshot: Arc<Snapshot>) -> Outcome {
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
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
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
                    Metrics::bump(&self.refresher.metrics.refreshes_failed);
                    span.in_scope(|| tracing::warn!(%error, elapsed_ms, "token refresh failed"));
                    if current {
                        let failures = flight.trouble.as_ref().map_or(0, |t| t.failures) + 1;
                        let retry_at = Instant::now() + self.refresher.backoff(failures, error);
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

/// `Bearer <token>` as a sensitive header value (hidden from `Debug`, never HPACK-indexed).
/// A token a header cannot carry is an error, never a placeholder header.
pub(crate) fn bearer_header(access_token: &Secret) -> Result<HeaderValue, Error> {
    let unfit = || Error::MalformedResponse {
        reason: "the access token has characters an Authorization header cannot carry".into(),
    };
    if !is_bearer_safe(access_token.expose()) {
        return Err(unfit());
    }
    let mut value =
        HeaderValue::try_from(format!("Bearer {}", access_token.expose())).map_err(|_| unfit())?;
    value.set_sensitive(true);
    Ok(value)
}

/// A fixed fraction of `jitter` for `user`, so a fleet of tokens issued together does not
/// refresh together.
fn user_jitter(user: UserId, jitter: Duration) -> Duration {
    let spread = user.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11;
    jitter.mul_f64(spread as f64 / (1u64 << 53) as f64)
}

fn random_unit() -> f64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_is_fixed_per_user_and_bounded() {
        let j = Duration::from_secs(60);
        assert_eq!(user_jitter(UserId(1), j), user_jitter(UserId(1), j));
        assert_ne!(user_jitter(UserId(1), j), user_jitter(UserId(2), j));
        for id in 0..1000 {
            assert!(user_jitter(UserId(id), j) < j);
        }
        assert_eq!(user_jitter(UserId(5), Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn bearer_header_is_sensitive_and_hidden_from_debug() {
        let h = bearer_header(&Secret::new("tok123")).unwrap();
        assert!(h.is_sensitive());
        assert_eq!(h.to_str().unwrap(), "Bearer tok123");
        assert!(!format!("{h:?}").contains("tok123"));
    }

    #[test]
    fn a_token_no_header_can_carry_is_an_error_not_a_placeholder() {
        for bad in ["tok\r\nx-evil: 1", "tok\0", "caf\u{e9}", "two words", ""] {
            assert!(matches!(
                bearer_header(&Secret::new(bad)),
                Err(Error::MalformedResponse { .. })
            ));
        }
    }

    fn policy(skew: u64, jitter: u64) -> RefreshPolicy {
        RefreshPolicy {
            skew: Duration::from_secs(skew),
            jitter: Duration::from_secs(jitter),
            backoff_base: Duration::ZERO,
            backoff_cap: Duration::ZERO,
            lease: Duration::from_secs(90),
            lease_poll: Duration::from_millis(100),
            idle_eviction: Duration::from_secs(900),
        }
    }

    fn lasting(granted_at: SystemTime, lifetime: Duration) -> Token {
        Token {
            user_id: UserId(46865875),
            access_token: Secret::new("a"),
            refresh_token: Secret::new("r"),
            expires_at: granted_at + lifetime,
            scope: String::new(),
        }
    }

    #[test]
    fn never_refresh_in_the_first_half_of_a_token_life() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let p = policy(300, 60);
        let secs = |s: u64| Duration::from_secs(s);
        // Shorter-lived than skew + jitter: the refresh point is the half-life.
        for life in [2, 3, 120, 300, 359] {
            let token = lasting(t0, secs(life));
            assert_eq!(p.refresh_at(&token, t0), t0 + secs(life) / 2, "{life} s");
            assert!(p.is_fresh(&token, t0, t0 + secs(life) / 2 - Duration::from_millis(1)));
            assert!(!p.is_fresh(&token, t0, t0 + secs(life) / 2));
        }
        // A normal 3 h token: skew (plus this user's jitter) before expiry.
        let token = lasting(t0, secs(10_800));
        let at = p.refresh_at(&token, t0);
        assert!(
            at <= t0 + secs(10_800 - 300) && at > t0 + secs(10_800 - 360),
            "{at:?}"
        );
        // A token living a year, and one already expired when granted (clock skew).
        let year = lasting(t0, secs(366 * 86_400));
        assert!(p.refresh_at(&year, t0) > t0 + secs(365 * 86_400));
        let past = lasting(t0, Duration::ZERO);
        assert_eq!(p.refresh_at(&past, t0 + secs(10)), t0);
        // Granted "after" it expires: never later than the expiry.
        assert!(p.refresh_at(&past, t0 + secs(10)) <= past.expires_at);
    }
}
