//! The one [`TokenStore`] impl of this crate's stores (memory, SQLite, PostgreSQL, Redis), over
//! what each runs itself ([`Backend`]): a record is written the same way whether or not a
//! spent refresh token guards it, a listing reads every record and skips the unreadable ones,
//! and each keeps a request budget and the sync state.

use std::future::Future;
use std::time::{Duration, SystemTime};

use super::{BudgetLedger, Lease, LockAttempt, StoreFuture, StoredToken, TokenStore};
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

/// Where a store counts the request budget: a store that is a [`BudgetLedger`] (its server or
/// file keeps it) counts in itself.
pub(crate) trait HasLedger {
    fn ledger(&self) -> &dyn BudgetLedger;
}

impl<L: BudgetLedger> HasLedger for L {
    fn ledger(&self) -> &dyn BudgetLedger {
        self
    }
}

/// A store's own operations, one method each; [`TokenStore`] documents the contract.
pub(crate) trait Backend: HasLedger + SyncState + Send + Sync + 'static {
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

impl<S: Backend> TokenStore for S {
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
        Box::pin(Backend::release(self, user, lease))
    }

    fn delete(&self, user: UserId) -> StoreFuture<'_, bool> {
        Box::pin(self.remove(user))
    }

    /// Every readable record, ordered by user id; unreadable ones are skipped with a warning
    /// (the durable stores' own `list_all` shows them).
    fn list(&self) -> StoreFuture<'_, Vec<StoredToken>> {
        let all = self.records();
        Box::pin(async move { Ok(readable(all.await?)) })
    }

    fn budget(&self) -> Option<&dyn BudgetLedger> {
        Some(self.ledger())
    }

    fn sync_state(&self) -> Option<&dyn SyncState> {
        Some(self)
    }
}

/// Keeps the readable records and logs the others (user and reason only), as
/// [`TokenStore::list`] documents.
fn readable(records: Vec<Result<StoredToken, Error>>) -> Vec<StoredToken> {
    records
        .into_iter()
        .filter_map(|record| match record {
            Ok(record) => Some(record),
            Err(error) => {
                tracing::warn!(%error, "skipping an unreadable token record");
                None
            }
        })
        .collect()
}
