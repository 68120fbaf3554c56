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
use crate::token::{Token, UserId};

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
    generations: AtomicU64,
    flight: Mutex<Flight>,
}

#[derive(Debug, Default)]
struct Flight {
    /// The refresh in progress, if any.
    running: Option<watch::Receiver<Option<Outcome>>>,
    /// Failures and unsaved pairs: rare, so boxed to keep idle users small.
    trouble: Option<Box<Trouble>>,
}

#[derive(Debug)]
struct Trouble {
    failures: u32,
    /// No new attempt before this; callers get `last_error` meanwhile.
    retry_at: Instant,
    last_error: Error,
    /// A pair Withings granted whose save failed: `(spent refresh token, new pair)`.
    unsaved: Option<(Secret, Token)>,
}

impl Slot {
    pub(crate) fn new(user: UserId) -> Self {
        Slot {
            user,
            current: ArcSwapOption::empty(),
            generations: AtomicU64::new(0),
            flight: Mutex::new(Flight::default()),
        }
    }

    fn flight(&self) -> std::sync::MutexGuard<'_, Flight> {
        // The flight state is updated in single assignments; a panic cannot leave it torn.
        self.flight.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Everything a refresh needs.
pub(crate) struct Refresher {
    pub oauth: OAuthClient,
    pub store: Arc<dyn TokenStore>,
    pub policy: RefreshPolicy,
    pub metrics: Metrics,
}

impl std::fmt::Debug for Refresher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refresher")
            .field("oauth", &self.oauth)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Refresher {
    fn now(&self) -> SystemTime {
        self.oauth.clock().now()
    }

    /// A snapshot newer than generation `stale` (or the first one when `stale` is `None`),
    /// refreshing if needed. Concurrent callers for one user share one refresh.
    pub(crate) async fn renew(
        self: &Arc<Self>,
        slot: &Arc<Slot>,
        stale: Option<u64>,
        reason: Reason,
    ) -> Result<Arc<Snapshot>, Error> {
        let mut rx = {
            let mut flight = slot.flight();
            if let Some(current) = slot.current.load_full()
                && stale.is_none_or(|g| current.generation > g)
            {
                return settled(current);
            }
            match &flight.running {
                Some(rx) => {
                    Metrics::bump(&self.metrics.waited);
                    rx.clone()
                }
                None => {
                    if let Some(trouble) = &flight.trouble
                        && Instant::now() < trouble.retry_at
                    {
                        return self.fallback(slot, reason, trouble.last_error.clone());
                    }
                    let (tx, rx) = watch::channel(None);
                    flight.running = Some(rx.clone());
                    let task = RefreshTask {
                        refresher: Arc::clone(self),
                        slot: Arc::clone(slot),
                        tx,
                    };
                    tokio::spawn(task.run(reason));
                    rx
                }
            }
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

    /// Publishes a pair that is already in the store.
    pub(crate) fn publish(&self, slot: &Slot, token: Token) -> Arc<Snapshot> {
        let header = bearer_header(&token.access_token);
        let refresh_at = token
            .expires_at
            .checked_sub(self.policy.skew + user_jitter(token.user_id, self.policy.jitter))
            .unwrap_or(SystemTime::UNIX_EPOCH);
        self.publish_state(
            slot,
            SnapshotState::Ready {
                token,
                header,
                refresh_at,
            },
        )
    }

    fn publish_state(&self, slot: &Slot, state: SnapshotState) -> Arc<Snapshot> {
        let generation = slot.generations.fetch_add(1, Ordering::SeqCst) + 1;
        let snapshot = Arc::new(Snapshot { generation, state });
        slot.current.store(Some(Arc::clone(&snapshot)));
        snapshot
    }

    /// A new authorization replaces whatever the slot held, failures included.
    pub(crate) fn reset(&self, slot: &Slot, token: Token) {
        slot.flight().trouble = None;
        self.publish(slot, token);
    }

    /// The refresh itself; runs inside the detached task.
    async fn refresh(&self, slot: &Slot, reason: Reason) -> Result<Arc<Snapshot>, Error> {
        let user = slot.user;
        let unsaved = slot
            .flight()
            .trouble
            .as_mut()
            .and_then(|t| t.unsaved.take());
        if let Some((spent, token)) = unsaved {
            return self.save_and_publish(slot, spent, token).await;
        }
        let stored = self.load(user).await?;
        let held = slot.current.load_full();
        let held_token = held.as_deref().and_then(Snapshot::token);
        if let Some(adopted) = self.adopt(slot, &stored, held_token, reason) {
            return adopted;
        }
        let lease = loop {
            match self.store.try_lock(user, self.policy.lease).await? {
                LockAttempt::Acquired(lease) => break lease,
                LockAttempt::Held => {
                    tokio::time::sleep(self.policy.lease_poll).await;
                    let stored = self.load(user).await?;
                    if let Some(adopted) = self.adopt(slot, &stored, held_token, reason) {
                        return adopted;
                    }
                }
            }
        };
        let result = self.refresh_leased(slot, held_token, reason).await;
        if let Err(error) = self.store.unlock(user, lease).await {
            tracing::warn!(user = %user, %error, "could not release the refresh lease; it will lapse");
        }
        result
    }

    async fn refresh_leased(
        &self,
        slot: &Slot,
        held: Option<&Token>,
        reason: Reason,
    ) -> Result<Arc<Snapshot>, Error> {
        // Read again under the lease: the previous holder may have just saved.
        let stored = self.load(slot.user).await?;
        if let Some(adopted) = self.adopt(slot, &stored, held, reason) {
            return adopted;
        }
        let spent = stored.token.refresh_token.clone();
        Metrics::bump(&self.metrics.refreshes_started);
        match self.oauth.refresh(&spent).await {
            Ok(token) if token.user_id != slot.user => Err(Error::MalformedResponse {
                reason: format!("refresh for user {} answered for another user", slot.user),
            }),
            Ok(token) => self.save_and_publish(slot, spent, token).await,
            Err(error @ (Error::RefreshTokenInvalid | Error::InvalidClient { .. })) => {
                if matches!(error, Error::RefreshTokenInvalid) {
                    self.store
                        .mark_needs_reauthorization(slot.user, &spent)
                        .await?;
                }
                let terminal = match error {
                    Error::RefreshTokenInvalid => Error::NeedsReauthorization(slot.user),
                    other => other,
                };
                self.publish_state(slot, SnapshotState::Terminal(terminal.clone()));
                Err(terminal)
            }
            Err(error @ Error::RateLimited { .. }) => {
                // "Same arguments in less than 10 seconds": someone may have just spent this
                // refresh token. Their pair is in the store if they saved it; use it.
                let stored = self.load(slot.user).await?;
                if stored.token.refresh_token != spent
                    && !stored.token.expires_within(self.now(), self.policy.skew)
                {
                    Metrics::bump(&self.metrics.refreshes_adopted);
                    return Ok(self.publish(slot, stored.token));
                }
                Err(error)
            }
            Err(error) => Err(error),
        }
    }

    /// Saves a rotated pair, then publishes it. A failed save keeps the old pair in use and the
    /// new one in memory for the next attempt: it is never sent before it is durable.
    async fn save_and_publish(
        &self,
        slot: &Slot,
        spent: Secret,
        token: Token,
    ) -> Result<Arc<Snapshot>, Error> {
        match self
            .store
            .compare_and_save(&spent, &token, self.now())
            .await
        {
            Ok(true) => Ok(self.publish(slot, token)),
            Ok(false) => {
                // Another writer rotated first; theirs is what everyone else will use.
                tracing::warn!(user = %slot.user, "token changed in the store during refresh; adopting the stored one");
                let stored = self.load(slot.user).await?;
                Metrics::bump(&self.metrics.refreshes_adopted);
                Ok(self.publish(slot, stored.token))
            }
            Err(error) => {
                let mut flight = slot.flight();
                let trouble = flight.trouble.get_or_insert_with(|| {
                    Box::new(Trouble {
                        failures: 0,
                        retry_at: Instant::now(),
                        last_error: error.clone(),
                        unsaved: None,
                    })
                });
                trouble.unsaved = Some((spent, token));
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
    /// process rotated it) and still good, or on first load when it is good.
    fn adopt(
        &self,
        slot: &Slot,
        stored: &StoredToken,
        held: Option<&Token>,
        reason: Reason,
    ) -> Option<Result<Arc<Snapshot>, Error>> {
        if reason == Reason::Forced && held.is_none() {
            return None; // nothing held yet: a forced refresh spends the stored token
        }
        let changed = held.is_none_or(|h| h.refresh_token != stored.token.refresh_token);
        let good = !stored.token.expires_within(self.now(), self.policy.skew);
        if changed && good {
            if held.is_some() || reason != Reason::Load {
                Metrics::bump(&self.metrics.refreshes_adopted);
            }
            return Some(Ok(self.publish(slot, stored.token.clone())));
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

/// The snapshot as a result: a terminal one is its error.
fn settled(snapshot: Arc<Snapshot>) -> Result<Arc<Snapshot>, Error> {
    match &snapshot.state {
        SnapshotState::Terminal(error) => Err(error.clone()),
        SnapshotState::Ready { .. } => Ok(snapshot),
    }
}

/// The detached refresh: it finishes (and saves) even if every caller went away.
struct RefreshTask {
    refresher: Arc<Refresher>,
    slot: Arc<Slot>,
    tx: watch::Sender<Option<Outcome>>,
}

impl RefreshTask {
    async fn run(self, reason: Reason) {
        let user = self.slot.user;
        let span = tracing::info_span!("withings.refresh", user = %user, reason = reason.as_str());
        let started = Instant::now();
        // If the refresh panics, this guard clears the flight so the next caller can retry.
        let guard = ClearFlight(&self.slot);
        let outcome = self
            .refresher
            .refresh(&self.slot, reason)
            .instrument(span.clone())
            .await;
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        {
            let mut flight = self.slot.flight();
            flight.running = None;
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
        std::mem::forget(guard);
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
pub(crate) fn bearer_header(access_token: &Secret) -> HeaderValue {
    let mut value = HeaderValue::try_from(format!("Bearer {}", access_token.expose()))
        .unwrap_or_else(|_| HeaderValue::from_static("Bearer invalid-token-characters"));
    value.set_sensitive(true);
    value
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
        let h = bearer_header(&Secret::new("tok123"));
        assert!(h.is_sensitive());
        assert_eq!(h.to_str().unwrap(), "Bearer tok123");
        assert!(!format!("{h:?}").contains("tok123"));
    }
}
