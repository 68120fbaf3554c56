//! What one refresh does: re-read the store, take its lease, adopt a pair another process
//! saved, call Withings, compare-and-save, then publish; terminal states and backoff.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::Refresher;
use super::flight::{Attempt, Outcome, Snapshot, SnapshotState, Trouble, superseded};
use super::policy::Reason;
use crate::error::Error;
use crate::events::{Event, Reauthorization};
use crate::metrics::Metrics;
use crate::secret::Secret;
use crate::store::{LockAttempt, StoredToken};
use crate::token::{Token, UserId};

/// How long a user Withings reports as temporarily deactivated waits between refreshes.
pub(crate) const DEACTIVATED_RETRY: Duration = Duration::from_secs(24 * 3600);

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

fn random_unit() -> f64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}
