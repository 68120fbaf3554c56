//! What happens to users' authorizations, as a stream an app can watch: to e-mail a user who
//! must log in again, page an operator when refreshes keep failing, or keep a dashboard.
//!
//! [`WithingsAuth::events`](crate::WithingsAuth::events) gives a receiver of a
//! `tokio::sync::broadcast` channel: every receiver sees every event sent after it subscribed;
//! one that falls more than [`CAPACITY`] events behind is told how many it missed
//! (`RecvError::Lagged(n)`) and goes on from the oldest kept. No event ever carries a token.
//!
//! The events: [`Event::TokenRotated`] (the new pair's generation and expiry),
//! [`Event::NeedsReauthorization`] (refresh token refused, access revoked, an answer for
//! another user: the [`Reauthorization`] says which), [`Event::RefreshFailed`] (with the
//! backoff before the next try) and [`Event::UserDeactivated`].
//!
//! Beside the stream, [`WithingsAuth`](crate::WithingsAuth) has the operations around one
//! user's authorization: [`users`](crate::WithingsAuth::users) lists each user's state (ok,
//! expiring, needs re-authorization, revoked, deactivated) and refresh-token age;
//! [`keeper`](crate::WithingsAuth::keeper) (off unless started) refreshes, one at a time, users
//! whose refresh token is older than 300 days, so a user who never calls keeps access past the
//! token's one-year life; [`revoke`](crate::WithingsAuth::revoke) revokes the app's access at
//! Withings (signed) and marks the user (`withings revoke`);
//! [`forget`](crate::WithingsAuth::forget) deletes a user's tokens (`withings forget`).

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Credentials, WithingsAuth, transport};

    #[tokio::test]
    async fn a_slow_receiver_is_told_how_many_it_missed() {
        let auth = WithingsAuth::builder(Credentials::new("id", "secret"))
            .build(transport::plain_http_client());
        let mut events = auth.events();
        for _ in 0..CAPACITY + 5 {
            auth.refresher.emit(Event::UserDeactivated {
                user: UserId(1),
                retry_in: Duration::ZERO,
            });
        }
        assert!(matches!(
            events.try_recv(),
            Err(tokio::sync::broadcast::error::TryRecvError::Lagged(5))
        ));
    }
}
