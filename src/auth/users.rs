//! The user lifecycle around a [`WithingsAuth`]: what each user's authorization is good
//! for ([`WithingsAuth::users`]), revoking, forgetting, forcing a refresh, and the keeper that
//! refreshes refresh tokens before they age out.

use std::time::{Duration, SystemTime};

use super::handle::WithingsAuth;
use crate::error::Error;
use crate::refresh::{Known, Reason};
use crate::token::UserId;

/// One user as the store and this handle know them ([`WithingsAuth::users`]). No token.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UserInfo {
    /// Who.
    pub user: UserId,
    /// The scopes granted, comma-separated as Withings returns them.
    pub scope: String,
    /// When the access token expires.
    pub expires_at: SystemTime,
    /// How long ago the pair was granted, so how old the refresh token is (it lasts a year;
    /// every refresh makes a new one).
    pub refresh_token_age: Duration,
    /// What can be done with it.
    pub state: AuthState,
}

/// What a user's authorization is good for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthState {
    /// Usable.
    Ok,
    /// The access token expires within the refresh skew: the next request refreshes it.
    Expiring,
    /// The refresh token was refused: the user must authorize again.
    NeedsReauthorization,
    /// The user revoked the app's access (as this process learnt).
    Revoked,
    /// Withings reports the user temporarily deactivated; tokens kept, retried daily.
    Deactivated,
}

impl AuthState {
    /// The CLI's word for it: `ok`, `expiring`, `needs re-auth`, `revoked`, `deactivated`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthState::Ok => "ok",
            AuthState::Expiring => "expiring",
            AuthState::NeedsReauthorization => "needs re-auth",
            AuthState::Revoked => "revoked",
            AuthState::Deactivated => "deactivated",
        }
    }
}

/// How old a refresh token gets before [`WithingsAuth::keeper`] refreshes it (it lasts a year).
pub const KEEPER_THRESHOLD: Duration = Duration::from_secs(300 * 86_400);

/// The running keeper of [`WithingsAuth::keeper`]; dropping it stops it.
#[derive(Debug)]
pub struct Keeper {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WithingsAuth {
    /// The user revoked this app's access (Withings' `unlink` or `delete` notification):
    /// their stored record is marked as needing re-authorization (kept, never deleted), and
    /// this handle fails their requests at once with [`Error::AccessRevoked`], sending nothing,
    /// until they authorize again ([`exchange_code`](Self::exchange_code) or
    /// [`import`](Self::import)). Other processes sharing the store see the mark on their next
    /// refresh ([`Error::NeedsReauthorization`]). Returns whether a record was marked now.
    pub async fn mark_revoked(&self, user: UserId) -> Result<bool, Error> {
        let marked = crate::store::mark_current(self.store().as_ref(), user).await?;
        self.refresher.terminate(user, Error::AccessRevoked(user));
        if marked {
            self.refresher
                .emit(crate::events::Event::NeedsReauthorization {
                    user,
                    why: crate::events::Reauthorization::Revoked,
                });
        }
        Ok(marked)
    }

    /// Revokes this app's access for `user` at Withings (signed `action=revoke`, which also
    /// removes their notification subscriptions there), then marks their record revoked as
    /// [`mark_revoked`](Self::mark_revoked) does: their requests fail at once with
    /// [`Error::AccessRevoked`] until they authorize again. If Withings refuses, nothing is
    /// marked and the error says why.
    pub async fn revoke(&self, user: UserId) -> Result<(), Error> {
        self.oauth().revoke(user).await?;
        self.mark_revoked(user).await.map(drop)
    }

    /// Forgets `user`: deletes their record from the store ([`TokenStore::delete`](crate::store::TokenStore::delete), the one
    /// delete this crate makes) and their in-memory state, so later requests for them fail with
    /// [`Error::UnknownUser`] until they authorize again. Returns whether a record was deleted.
    /// It does not tell Withings (the user's grant stays valid there until it expires or the
    /// user unlinks the app).
    pub async fn forget(&self, user: UserId) -> Result<bool, Error> {
        let deleted = self.store().delete(user).await?;
        self.refresher.forget(user);
        Ok(deleted)
    }

    /// Refreshes `user`'s token now (still one refresh per user, shared with any in flight).
    pub async fn refresh(&self, user: UserId) -> Result<(), Error> {
        let refresher = &self.refresher;
        let slot = refresher.slot(user, refresher.now());
        let stale = slot.current.load().as_ref().map_or(0, |s| s.generation);
        refresher
            .renew(&slot, Some(stale), Reason::Forced)
            .await
            .map(drop)
    }

    /// How many users have in-memory state now (each idle one is evicted after
    /// [`evict_idle_after`](super::WithingsAuthBuilder::evict_idle_after)).
    pub fn users_in_memory(&self) -> usize {
        self.refresher.users_in_memory()
    }

    /// What happens to users' authorizations from now on (token rotated, must authorize
    /// again, refresh failed, user deactivated); see [`crate::events`]. Never a token.
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<crate::events::Event> {
        self.refresher.events.subscribe()
    }

    /// Every user in the store, with their state and refresh-token age (records that cannot be
    /// read are skipped with a warning, as [`TokenStore::list`](crate::store::TokenStore::list) does).
    pub async fn users(&self) -> Result<Vec<UserInfo>, Error> {
        let refresher = &self.refresher;
        let now = refresher.now();
        let mut users: Vec<UserInfo> = self
            .store()
            .list()
            .await?
            .into_iter()
            .map(|record| {
                let user = record.token.user_id;
                let known = refresher.known_state(user);
                let state = match (record.needs_reauthorization, known) {
                    (true, Some(Known::Revoked)) => AuthState::Revoked,
                    (true, _) => AuthState::NeedsReauthorization,
                    (false, Some(Known::Revoked)) => AuthState::Revoked,
                    (false, Some(Known::Deactivated)) => AuthState::Deactivated,
                    (false, None)
                        if !refresher
                            .policy
                            .is_fresh(&record.token, record.refreshed_at, now) =>
                    {
                        AuthState::Expiring
                    }
                    (false, None) => AuthState::Ok,
                };
                UserInfo {
                    user,
                    scope: record.token.scope,
                    expires_at: record.token.expires_at,
                    refresh_token_age: now.duration_since(record.refreshed_at).unwrap_or_default(),
                    state,
                }
            })
            .collect();
        users.sort_by_key(|u| u.user);
        Ok(users)
    }

    /// One pass of the keeper: refreshes, one at a time and through the usual single flight,
    /// every user whose refresh token is older than `older_than` (a refresh token lasts a
    /// year, and a user whose tokens are never used would lose access silently). Returns the
    /// users refreshed; a user whose refresh fails is skipped (the failure is an [`Event`]).
    ///
    /// [`Event`]: crate::events::Event
    pub async fn keep_fresh(&self, older_than: Duration) -> Result<Vec<UserId>, Error> {
        let mut refreshed = Vec::new();
        for user in self.users().await? {
            let usable = matches!(user.state, AuthState::Ok | AuthState::Expiring);
            if usable && user.refresh_token_age > older_than {
                match self.refresh(user.user).await {
                    Ok(()) => refreshed.push(user.user),
                    Err(error) => {
                        tracing::warn!(user = %user.user, %error, "keeper could not refresh")
                    }
                }
            }
        }
        Ok(refreshed)
    }

    /// Starts the keeper: every `period`, [`keep_fresh`](Self::keep_fresh) with
    /// [`KEEPER_THRESHOLD`](crate::auth::KEEPER_THRESHOLD) (300 days). Off unless started; it stops when the returned handle
    /// is dropped (a refresh it started still finishes).
    pub fn keeper(&self, period: Duration) -> Keeper {
        let auth = self.clone();
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period.max(Duration::from_millis(1)));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if let Err(error) = auth.keep_fresh(KEEPER_THRESHOLD).await {
                    tracing::warn!(%error, "keeper could not list the users");
                }
            }
        });
        Keeper { task }
    }
}
