//! What the durable stores (SQLite, PostgreSQL, Redis) have in common: they write a record
//! the same way whether or not a spent refresh token guards it, list by reading every record,
//! and keep the request budget and the sync state themselves. Each implements [`Durable`];
//! their [`TokenStore`] impl is the one below.

use std::future::Future;
use std::time::{Duration, SystemTime};

use super::{BudgetLedger, Lease, LockAttempt, StoreFuture, StoredToken, TokenStore, record};
use crate::error::Error;
use crate::secret::Secret;
use crate::sync::SyncState;
use crate::token::{Token, UserId};

/// A pair to write: unconditionally (`spent: None`, a new authorization: [`TokenStore::put`])
/// or only over the refresh token a refresh spent ([`TokenStore::compare_and_save`]). Either
/// way the re-authorization mark is cleared.
pub(crate) struct Save<'a> {
    pub(crate) token: &'a Token,
    pub(crate) granted_at: SystemTime,
    pub(crate) spent: Option<&'a Secret>,
}

/// A durable backend, one method per operation it runs on its server or file.
pub(crate) trait Durable: BudgetLedger + SyncState + Send + Sync + 'static {
    /// The user's record, if any.
    fn read(&self, user: UserId)
    -> impl Future<Output = Result<Option<StoredToken>, Error>> + Send;

    /// Writes the pair (see [`Save`]); `Ok(false)` when `spent` is no longer the stored one.
    fn save(&self, save: Save<'_>) -> impl Future<Output = Result<bool, Error>> + Send;

    /// Marks the record if its refresh token is still `refused`.
    fn mark(
        &self,
        user: UserId,
        refused: &Secret,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Takes the refresh lease for `lease` unless a live holder has it.
    fn lock(
        &self,
        user: UserId,
        lease: Duration,
    ) -> impl Future<Output = Result<LockAttempt, Error>> + Send;

    /// Gives the lease back, if still held by it.
    fn release(&self, user: UserId, lease: Lease)
    -> impl Future<Output = Result<(), Error>> + Send;

    /// Deletes the record; `Ok(true)` if there was one.
    fn remove(&self, user: UserId) -> impl Future<Output = Result<bool, Error>> + Send;

    /// Every record, each unreadable one as [`Error::CorruptRecord`], ordered by user id.
    fn records(
        &self,
    ) -> impl Future<Output = Result<Vec<Result<StoredToken, Error>>, Error>> + Send;
}

impl<S: Durable> TokenStore for S {
    fn load(&self, user: UserId) -> StoreFuture<'_, Option<StoredToken>> {
        Box::pin(self.read(user))
    }

    fn put<'a>(&'a self, token: &'a Token, granted_at: SystemTime) -> StoreFuture<'a, ()> {
        let spent = None;
        let saved = self.save(Save {
            token,
            granted_at,
            spent,
        });
        Box::pin(async move { saved.await.map(drop) })
    }

    fn compare_and_save<'a>(
        &'a self,
        spent: &'a Secret,
        token: &'a Token,
        granted_at: SystemTime,
    ) -> StoreFuture<'a, bool> {
        let spent = Some(spent);
        Box::pin(self.save(Save {
            token,
            granted_at,
            spent,
        }))
    }

    fn mark_needs_reauthorization<'a>(
        &'a self,
        user: UserId,
        refused: &'a Secret,
    ) -> StoreFuture<'a, ()> {
        Box::pin(self.mark(user, refused))
    }

    fn try_lock(&self, user: UserId, lease: Duration) -> StoreFuture<'_, LockAttempt> {
        Box::pin(self.lock(user, lease))
    }

    fn unlock(&self, user: UserId, lease: Lease) -> StoreFuture<'_, ()> {
        Box::pin(Durable::release(self, user, lease))
    }

    fn delete(&self, user: UserId) -> StoreFuture<'_, bool> {
        Box::pin(self.remove(user))
    }

    /// Every readable record, ordered by user id; unreadable ones are skipped with a warning
    /// (the store's own `list_all` shows them).
    fn list(&self) -> StoreFuture<'_, Vec<StoredToken>> {
        let all = self.records();
        Box::pin(async move { Ok(record::readable(all.await?)) })
    }

    fn budget(&self) -> Option<&dyn BudgetLedger> {
        Some(self)
    }

    fn sync_state(&self) -> Option<&dyn SyncState> {
        Some(self)
    }
}
