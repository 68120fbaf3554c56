//! What happens to users' authorizations, as a stream an app can watch: to e-mail a user who
//! must log in again, page an operator when refreshes keep failing, or keep a dashboard.
//!
//! [`WithingsAuth::events`](crate::WithingsAuth::events) gives a receiver of a
//! `tokio::sync::broadcast` channel: every receiver sees every event sent after it subscribed;
//! one that falls more than [`CAPACITY`] events behind is told how many it missed
//! (`RecvError::Lagged(n)`) and goes on from the oldest kept. No event ever carries a token.

use std::time::{Duration, SystemTime};

use crate::error::Error;
use crate::token::UserId;

/// How many events a slow receiver may fall behind before it is told it lagged.
pub const CAPACITY: usize = 1024;

/// One thing that happened to a user's authorization.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// A refresh saved and published a new pair (or adopted one another process saved).
    TokenRotated {
        /// Whose token.
        user: UserId,
        /// The new generation (it only grows per user).
        generation: u64,
        /// When the new access token expires.
        expires_at: SystemTime,
    },
    /// Nothing will work for the user until they authorize again.
    NeedsReauthorization {
        /// Whose authorization.
        user: UserId,
        /// Why.
        why: Reauthorization,
    },
    /// A refresh failed for a reason that may pass; the next attempt is not before `retry_in`.
    RefreshFailed {
        /// Whose refresh.
        user: UserId,
        /// What went wrong (never a token).
        error: Error,
        /// The backoff before the next attempt.
        retry_in: Duration,
    },
    /// Withings says the user is temporarily deactivated (deletion pending for up to 7 days):
    /// their tokens are kept; try again later.
    UserDeactivated {
        /// Whose account.
        user: UserId,
        /// The backoff before the next attempt.
        retry_in: Duration,
    },
}

/// Why a user must authorize again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reauthorization {
    /// Withings refused the refresh token (rotated away, expired, the app unlinked, the user
    /// deleted).
    RefreshTokenRefused,
    /// The user revoked the app's access (an `unlink` or `delete` notification).
    Revoked,
    /// Withings answered a refresh of this user's token for another user.
    UserMismatch,
}

#[cfg(all(test, feature = "sim"))]
mod tests {
    use super::*;
    use crate::sim::testing::{USER, setup};
    use crate::sim::{Fault, Target};
    use crate::{Clock, Token};

    fn no_token_in(event: &Event, token: &Token) {
        let shown = format!("{event:?}");
        assert!(!shown.contains(token.access_token.expose()), "{shown}");
        assert!(!shown.contains(token.refresh_token.expose()), "{shown}");
    }

    #[tokio::test]
    async fn a_refresh_tells_of_the_new_pair_without_a_token() {
        let (_sim, clock, auth, token) = setup().await;
        let mut events = auth.events();
        auth.refresh(USER).await.unwrap();
        let event = events.try_recv().expect("an event");
        no_token_in(&event, &token);
        let stored = auth.store().load(USER).await.unwrap().unwrap().token;
        no_token_in(&event, &stored);
        match event {
            Event::TokenRotated {
                user,
                generation,
                expires_at,
            } => {
                assert_eq!(user, USER);
                assert_eq!(generation, 2, "import published 1");
                assert!(expires_at > clock.now());
            }
            other => panic!("{other:?}"),
        }
        assert!(events.try_recv().is_err(), "one event per refresh");
    }

    #[tokio::test]
    async fn a_refused_refresh_token_says_the_user_must_log_in_again() {
        let (sim, _clock, auth, token) = setup().await;
        let mut events = auth.events();
        sim.revoke_user(USER.0);
        assert!(auth.refresh(USER).await.is_err());
        let event = events.try_recv().expect("an event");
        no_token_in(&event, &token);
        assert!(
            matches!(
                event,
                Event::NeedsReauthorization {
                    user: USER,
                    why: Reauthorization::RefreshTokenRefused
                }
            ),
            "{event:?}"
        );
        assert!(events.try_recv().is_err(), "no RefreshFailed on top");
    }

    #[tokio::test]
    async fn a_failed_refresh_says_when_it_tries_again() {
        let (sim, _clock, auth, token) = setup().await;
        let mut events = auth.events();
        sim.inject(Target::TokenEndpoint, Fault::HttpStatus(502), 1);
        assert!(auth.refresh(USER).await.is_err());
        let event = events.try_recv().expect("an event");
        no_token_in(&event, &token);
        match event {
            Event::RefreshFailed {
                user,
                error,
                retry_in,
            } => {
                assert_eq!(user, USER);
                assert!(error.is_transient(), "{error:?}");
                assert!(retry_in >= Duration::from_secs(1) && retry_in <= Duration::from_secs(2));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_deactivated_user_is_told_apart_from_a_failure() {
        let (sim, _clock, auth, _token) = setup().await;
        let mut events = auth.events();
        sim.deactivate_user(USER.0);
        assert!(auth.refresh(USER).await.is_err());
        let event = events.try_recv().expect("an event");
        let Event::UserDeactivated { user, retry_in } = event else {
            panic!("{event:?}");
        };
        assert_eq!(user, USER);
        // Tokens kept, one attempt a day: until then requests fail fast, nothing is sent.
        assert_eq!(retry_in, Duration::from_secs(24 * 3600));
        let calls = sim.counters().refreshes;
        assert!(matches!(
            auth.refresh(USER).await,
            Err(crate::Error::UserDeactivated)
        ));
        assert_eq!(sim.counters().refreshes, calls, "a refresh was sent");
        assert!(
            !auth
                .store()
                .load(USER)
                .await
                .unwrap()
                .unwrap()
                .needs_reauthorization
        );
    }

    /// `forget` deletes the record and the in-memory state: the next request finds nothing.
    #[tokio::test]
    async fn a_forgotten_user_is_gone_from_store_and_memory() {
        let (_sim, _clock, auth, _token) = setup().await;
        assert!(auth.users_in_memory() >= 1);
        assert!(auth.forget(USER).await.unwrap());
        assert!(auth.store().load(USER).await.unwrap().is_none());
        assert_eq!(auth.users_in_memory(), 0);
        assert!(matches!(
            auth.refresh(USER).await,
            Err(crate::Error::UnknownUser(UserId(_)))
        ));
        assert!(!auth.forget(USER).await.unwrap(), "nothing left to delete");
    }

    #[tokio::test]
    async fn a_slow_receiver_is_told_how_many_it_missed() {
        let (_sim, _clock, auth, _token) = setup().await;
        let mut events = auth.events();
        for _ in 0..CAPACITY + 5 {
            auth.refresher.emit(Event::UserDeactivated {
                user: USER,
                retry_in: Duration::ZERO,
            });
        }
        assert!(matches!(
            events.try_recv(),
            Err(tokio::sync::broadcast::error::TryRecvError::Lagged(5))
        ));
    }
}
