//! What one refresh does: re-read the store, take its lease, adopt a pair another process
//! saved, call Withings, compare-and-save, then publish; terminal states and backoff.

use std::time::{Duration, SystemTime};

use http::HeaderValue;

use tokio::time::Instant;

use super::flight::{Attempt, Outcome, Snapshot, SnapshotState, Trouble, superseded};
use super::{Reason, Refresher};
use crate::error::Error;
use crate::events::{Event, Reauthorization};
use crate::metrics::Metrics;
use crate::secret::Secret;
use crate::store::{LockAttempt, StoredToken};
use crate::token::{Token, UserId, is_bearer_safe};

/// How long a user Withings reports as temporarily deactivated waits between refreshes.
pub(crate) const DEACTIVATED_RETRY: Duration = Duration::from_secs(24 * 3600);

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
    pub(crate) fn is_fresh(&self, token: &Token, granted_at: SystemTime, now: SystemTime) -> bool {
        now < self.refresh_at(token, granted_at)
    }
}

impl Refresher {
    /// The refresh itself; runs inside the detached task.
    pub(super) async fn refresh(&self, attempt: Attempt<'_>) -> Outcome {
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
            let started = Instant::now();
            let locked = self.store.try_lock(user, self.policy.lease).await;
            crate::metrics::store_call("lock", started.elapsed());
            match locked? {
                LockAttempt::Acquired(lease) => break lease,
                LockAttempt::Held => {
                    crate::metrics::emit("withings_lease_waits_total");
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
        Metrics::bump(
            &self.metrics.refreshes_started,
            "withings_token_calls_total",
        );
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
                    self.emit(Event::NeedsReauthorization {
                        user,
                        why: Reauthorization::RefreshTokenRefused,
                    });
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
                    Metrics::bump(
                        &self.metrics.refreshes_adopted,
                        "withings_refreshes_adopted_total",
                    );
                    return self.rotated(
                        attempt,
                        self.publish(attempt, stored.token, stored.refreshed_at),
                    );
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
        self.emit(Event::NeedsReauthorization {
            user,
            why: Reauthorization::UserMismatch,
        });
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
        let started = Instant::now();
        let saved = self
            .store
            .compare_and_save(&spent, &token, granted_at)
            .await;
        crate::metrics::store_call("save", started.elapsed());
        match saved {
            Ok(true) => self.rotated(attempt, self.publish(attempt, token, granted_at)),
            Ok(false) => {
                // Another writer rotated first; theirs is what everyone else will use.
                tracing::warn!(user = %attempt.user(), "token changed in the store during refresh; adopting the stored one");
                let stored = self.load(attempt.user()).await?;
                Metrics::bump(
                    &self.metrics.refreshes_adopted,
                    "withings_refreshes_adopted_total",
                );
                self.rotated(
                    attempt,
                    self.publish(attempt, stored.token, stored.refreshed_at),
                )
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
        let started = Instant::now();
        let loaded = self.store.load(user).await;
        crate::metrics::store_call("load", started.elapsed());
        match loaded? {
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
            let published = self.publish(attempt, stored.token.clone(), stored.refreshed_at);
            if held.is_some() || attempt.reason != Reason::Load {
                Metrics::bump(
                    &self.metrics.refreshes_adopted,
                    "withings_refreshes_adopted_total",
                );
                return Some(self.rotated(attempt, published));
            }
            return Some(published);
        }
        None
    }

    /// Tells the app a new pair is in use, if `published` is one.
    fn rotated(&self, attempt: Attempt<'_>, published: Outcome) -> Outcome {
        if let Ok(snapshot) = &published
            && let Some(token) = snapshot.token()
        {
            self.emit(Event::TokenRotated {
                user: attempt.user(),
                generation: snapshot.generation,
                expires_at: token.expires_at,
            });
        }
        published
    }

    pub(super) fn backoff(&self, failures: u32, error: &Error) -> Duration {
        if let Error::RateLimited { wait: Some(wait) } = error {
            return *wait;
        }
        if let Error::UserDeactivated = error {
            // Deletion pending for up to 7 days (Withings' FAQ): keep the tokens, try once a day.
            return DEACTIVATED_RETRY;
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
